"""Load official InfoGCN checkpoints (github.com/stnoah1/infogcn) into :class:`InfoGCN`.

Only the key names and tensor layouts of the official model are used (facts): ``l1``…``l9`` blocks
with ``agcn`` (SA-GC: ``conv_d.<head>``, ``down``, ``bn``, ``shared_topology``, ``attn.to_qk``,
``attn.ln``), ``tcn.branches.<0..3>`` (multi-scale TCN; Sequential indices: 0 conv, 1 BN, 3 the
temporal conv of the dilated branches, 4 the BN after max-pooling) and ``residual`` (conv + BN);
``to_joint_embedding``, ``pos_embedding``, ``data_bn``, ``fc``, ``fc_mu``, ``fc_logvar``, ``decoder``.

Our layout fuses per-head and per-branch 1×1 convolutions and the per-branch BatchNorms (the
entry BNs of the first three branches into ``expand_bn``, the closing BNs of all four into
``out_bn``), so the mapping concatenates those tensors along the channels (and sums the per-head
biases, whose outputs are summed in the official forward).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from trainer.models.base import BN_STATE_KEYS

_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^to_joint_embedding\.", "joint_embed."),
    (r"^pos_embedding$", "pos_embed"),
    (r"^l(\d+)\.agcn\.attn\.ln\.", "blocks.{0}.gc.attn_norm."),
    (r"^l(\d+)\.agcn\.attn\.to_qk\.", "blocks.{0}.gc.to_qk."),
    (r"^l(\d+)\.agcn\.(shared_topology|bn\.|down\.)", "blocks.{0}.gc.{1}"),
    (r"^l(\d+)\.tcn\.branches\.([01])\.3\.conv\.", "blocks.{0}.tcn.dilated.{1}."),
    (r"^l(\d+)\.residual\.", "blocks.{0}.residual."),
    (r"^(data_bn|fc|fc_mu|fc_logvar|decoder)\.", "{0}."),
)
_HEAD_CONV = re.compile(r"^l(\d+)\.agcn\.conv_d\.(\d+)\.(weight|bias)$")
_ENTRY_CONV = re.compile(r"^l(\d+)\.tcn\.branches\.([0-3])\.0\.(weight|bias)$")
_BN_KEY = "(" + "|".join(BN_STATE_KEYS) + ")$"
# Official per-branch BatchNorms → (our fused BN, the branch's slot in it).
_BRANCH_BNS: tuple[tuple[re.Pattern[str], str, int | None], ...] = (
    (re.compile(r"^l(\d+)\.tcn\.branches\.([0-2])\.1\." + _BN_KEY), "expand_bn", None),
    (re.compile(r"^l(\d+)\.tcn\.branches\.([01])\.3\.bn\." + _BN_KEY), "out_bn", None),
    (re.compile(r"^l(\d+)\.tcn\.branches\.2\.4\." + _BN_KEY), "out_bn", 2),
    (re.compile(r"^l(\d+)\.tcn\.branches\.3\.1\." + _BN_KEY), "out_bn", 3),
)


def _branch_bn(key: str) -> tuple[int, str, str, int] | None:
    """(block, fused BN name, tensor kind, branch slot) of an official per-branch BN key, else None."""
    for pattern, fused, slot in _BRANCH_BNS:
        if m := pattern.match(key):
            return _block(m[1]), fused, m[m.lastindex or 0], int(m[2]) if slot is None else slot
    return None


class CheckpointImportError(ValueError):
    """An official checkpoint does not fit the model; the message names the keys."""


def _block(official_index: str) -> int:
    # Official blocks are l1..l9; ours are blocks.0..8.
    return int(official_index) - 1


def map_official_infogcn_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official InfoGCN state dict → our :class:`~trainer.models.infogcn.InfoGCN` key names and layout.

    Strips a ``module.`` (DataParallel) prefix; raises :class:`CheckpointImportError` listing keys
    it does not know.
    """
    mapped: dict[str, Tensor] = {}
    head_convs: dict[tuple[int, str], dict[int, Tensor]] = {}
    entry_convs: dict[tuple[int, str], dict[int, Tensor]] = {}
    branch_bns: dict[tuple[int, str, str], dict[int, Tensor]] = {}
    unknown: list[str] = []
    for raw_key, value in state.items():
        key = raw_key.removeprefix("module.")
        if m := _HEAD_CONV.match(key):
            head_convs.setdefault((_block(m[1]), m[3]), {})[int(m[2])] = value
            continue
        if m := _ENTRY_CONV.match(key):
            entry_convs.setdefault((_block(m[1]), m[3]), {})[int(m[2])] = value
            continue
        if bn := _branch_bn(key):
            block, fused, kind, slot = bn
            branch_bns.setdefault((block, fused, kind), {})[slot] = value
            continue
        for pattern, template in _RENAMES:
            if m := re.match(pattern, key):
                groups = [
                    str(_block(g)) if i == 0 and pattern.startswith("^l(") else g
                    for i, g in enumerate(m.groups())
                ]
                mapped[template.format(*groups) + key[m.end() :]] = value
                break
        else:
            unknown.append(raw_key)
    if unknown:
        raise CheckpointImportError(
            f"not an official InfoGCN checkpoint: unknown keys {', '.join(unknown[:8])}"
        )
    for (block, kind), heads in head_convs.items():
        ordered = [heads[h] for h in sorted(heads)]
        # Σ_h (W_h z_h + b_h) == [W_1 … W_H] · [z_1; …; z_H] + Σ_h b_h
        mapped[f"blocks.{block}.gc.mix.{kind}"] = torch.cat(ordered, 1) if kind == "weight" else sum(ordered)
    for (block, kind), branches in entry_convs.items():
        mapped[f"blocks.{block}.tcn.expand.{kind}"] = torch.cat([branches[b] for b in sorted(branches)], 0)
    for (block, fused, kind), branches in branch_bns.items():
        values = [branches[b] for b in sorted(branches)]
        mapped[f"blocks.{block}.tcn.{fused}.{kind}"] = (
            values[0] if kind == "num_batches_tracked" else torch.cat(values, 0)
        )
    return mapped


def load_official_infogcn(model: nn.Module, checkpoint: Mapping[str, Tensor] | str | Path) -> None:
    """Load an official InfoGCN checkpoint (a state dict or a ``.pt`` path) into ``model``.

    ``model`` is an :class:`~trainer.models.infogcn.InfoGCN` or a CrossGLG model wrapping one (its
    encoder is loaded; the JID and interaction keep their initialisation). The class prior
    ``z_prior`` is not in official checkpoints and keeps its value.
    """
    if isinstance(checkpoint, str | Path):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
            checkpoint = checkpoint["state_dict"]
    target = getattr(model, "encoder", model)
    mapped = map_official_infogcn_keys(checkpoint)
    own = target.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise CheckpointImportError(
            "checkpoint shapes do not match the model (classes, joints or persons differ?): "
            + "; ".join(wrong[:4])
        )
    result = target.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if k != "z_prior"]
    if missing or result.unexpected_keys:
        raise CheckpointImportError(
            f"checkpoint does not cover the model: missing {', '.join(missing[:8]) or 'none'}; "
            f"unexpected {', '.join(result.unexpected_keys[:8]) or 'none'}"
        )

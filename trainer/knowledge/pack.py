"""Read a knowledge pack (``*.kpack.safetensors``, written by ``kbgen embed``).

The trainer never imports kbgen: this module depends on safetensors, torch, numpy and dataspec
only. :func:`load_pack` checks the pack against the dataset spec and returns its tensors with
rows in the trainer's label order, so ``pack.key_joints[y]`` is k_gt of label ``y``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dataspec import DatasetSpec, SpecError, normalize_class_id

# Must equal kbgen/embed/pack_writer.py (a test checks both sides agree).
PACK_FORMAT = "crossglg-knowledge-pack"
PACK_FORMAT_VERSION = 1
TENSORS = ("joint_text", "global_text", "key_joints")
# k_gt rows must sum to 1; float32 storage and renormalisation leave ~1e-7 error.
_SUM_TOLERANCE = 1e-3


class PackError(ValueError):
    """A pack cannot be used with this dataset; the message says what differs and what to do."""


@dataclass(frozen=True)
class KnowledgePack:
    """A pack's tensors in label order and its metadata.

    Attributes:
        joint_text: float16 ``[C, J, D]``, joint motion embeddings (row c = label c).
        global_text: float16 ``[C, D]``, global description embeddings.
        key_joints: float32 ``[C, J]``, k_gt per class; rows sum to 1.
        class_ids: the label order the rows follow.
        joint_names: the spec's joint order the J axis follows.
        metadata: every metadata string of the file (encoder, revision, versions...).
    """

    joint_text: torch.Tensor
    global_text: torch.Tensor
    key_joints: torch.Tensor
    class_ids: list[str]
    joint_names: list[str]
    dataset: str
    encoder: str
    dim: int
    kb_revision: str
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)


def _json_list(metadata: dict[str, str], key: str, path: Path) -> list[Any]:
    try:
        value = json.loads(metadata[key])
    except KeyError:
        raise PackError(f"{path}: pack metadata lacks '{key}': write it again with `kbgen embed`") from None
    except json.JSONDecodeError:
        raise PackError(f"{path}: pack metadata '{key}' is not valid JSON: the file is corrupt") from None
    if not isinstance(value, list):
        raise PackError(f"{path}: pack metadata '{key}' must be a JSON list: the file is corrupt")
    return value


def read_pack_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a pack file, with format and shape checks but no spec checks.

    Raises :class:`PackError` for a missing, corrupt or foreign file or a wrong format version.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise PackError(f"knowledge pack {path} does not exist: write it with `kbgen embed -o {path}`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise PackError(
            f"{path} is not a readable safetensors file ({exc.__class__.__name__}): it is corrupt or "
            "truncated; write it again with `kbgen embed`"
        ) from None
    if metadata.get("format") != PACK_FORMAT:
        raise PackError(f"{path} is a safetensors file but not a CrossGLG knowledge pack (no format tag)")
    version = metadata.get("format_version", "?")
    if version != str(PACK_FORMAT_VERSION):
        raise PackError(
            f"{path} has pack format version {version}, this trainer reads version {PACK_FORMAT_VERSION}: "
            "write the pack again with the matching `kbgen embed`"
        )
    absent = [name for name in TENSORS if name not in tensors]
    if absent:
        raise PackError(f"{path} lacks tensor(s) {', '.join(absent)}: the file is corrupt")
    class_ids = _json_list(metadata, "class_ids", path)
    joint_names = _json_list(metadata, "joint_names", path)
    c, j = len(class_ids), len(joint_names)
    joint_text, global_text, key_joints = (tensors[n] for n in TENSORS)
    if joint_text.ndim != 3 or tuple(joint_text.shape[:2]) != (c, j):
        raise PackError(f"{path}: joint_text has shape {tuple(joint_text.shape)}, expected [{c}, {j}, D]")
    dim = joint_text.shape[2]
    if tuple(global_text.shape) != (c, dim):
        raise PackError(f"{path}: global_text has shape {tuple(global_text.shape)}, expected [{c}, {dim}]")
    if tuple(key_joints.shape) != (c, j):
        raise PackError(f"{path}: key_joints has shape {tuple(key_joints.shape)}, expected [{c}, {j}]")
    if not all(torch.isfinite(t.float()).all() for t in (joint_text, global_text, key_joints)):
        raise PackError(f"{path} holds NaN or infinite values: the file is corrupt")
    sums = key_joints.double().sum(dim=1)
    if c and ((sums - 1).abs().max() > _SUM_TOLERANCE or (key_joints < 0).any()):
        raise PackError(
            f"{path}: key_joints rows must be distributions (non-negative, sum 1): the file is corrupt"
        )
    return tensors, metadata


def _check_spec(metadata: dict[str, str], joint_names: list[str], spec: DatasetSpec, path: Path) -> None:
    dataset = metadata.get("dataset", "")
    if dataset != spec.name:
        raise PackError(
            f"{path} was written for dataset '{dataset}', not '{spec.name}': use a pack of {spec.name} "
            f"(`kbgen embed --dataset {spec.name}`)"
        )
    if joint_names != spec.joint_names:
        if len(joint_names) != spec.num_joints:
            detail = f"{len(joint_names)} joints, the spec has {spec.num_joints}"
        else:
            first = next(
                i for i, (a, b) in enumerate(zip(joint_names, spec.joint_names, strict=True)) if a != b
            )
            detail = f"joint {first} is '{joint_names[first]}' here, '{spec.joint_names[first]}' in the spec"
        raise PackError(
            f"{path}: the pack's joint list differs from {spec.path or spec.name} ({detail}): "
            "write the pack again from the current spec"
        )


def load_pack(path: str | Path, spec: DatasetSpec, class_ids: Sequence[str]) -> KnowledgePack:
    """Load a pack and reorder its rows to ``class_ids`` (the trainer's label order).

    Args:
        path: the ``*.kpack.safetensors`` file.
        spec: the dataset spec the trainer uses; the pack's dataset and joint list must match it.
        class_ids: the classes the trainer's labels stand for, in label order (any accepted
            spelling: ``A001`` is ``A1``).

    Raises:
        PackError: the file is missing, corrupt, of another format version, of another dataset,
            has another joint list, or lacks one of ``class_ids`` (all named in one line).
    """
    path = Path(path)
    tensors, metadata = read_pack_file(path)
    pack_classes = [str(c) for c in json.loads(metadata["class_ids"])]
    joint_names = [str(j) for j in json.loads(metadata["joint_names"])]
    _check_spec(metadata, joint_names, spec, path)
    try:
        wanted = [normalize_class_id(c) for c in class_ids]
    except SpecError as exc:
        raise PackError(str(exc)) from None
    row_of = {cid: i for i, cid in enumerate(pack_classes)}
    absent = [cid for cid in wanted if cid not in row_of]
    if absent:
        shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        raise PackError(
            f"{path} has no knowledge for class(es) {shown}: complete them in the knowledge base and "
            f"`kbgen embed --dataset {spec.name}` again"
        )
    index = torch.tensor([row_of[cid] for cid in wanted], dtype=torch.long)
    return KnowledgePack(
        joint_text=tensors["joint_text"].index_select(0, index),
        global_text=tensors["global_text"].index_select(0, index),
        key_joints=tensors["key_joints"].index_select(0, index),
        class_ids=wanted,
        joint_names=joint_names,
        dataset=metadata["dataset"],
        encoder=metadata.get("encoder", ""),
        dim=int(tensors["joint_text"].shape[2]),
        kb_revision=metadata.get("kb_revision", ""),
        path=path,
        metadata=metadata,
    )

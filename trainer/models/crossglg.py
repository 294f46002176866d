"""CrossGLG (Yan et al., ECCV 2024): LLM knowledge guides a skeleton encoder at two levels.

Global → local (``g2l``): after block ``n_pre`` the features are averaged over time and persons and
the *joint importance determiner* (JID: two linear layers, softmax over joints) predicts a key-joint
distribution ``k_out [N, V]``, calibrated against the LLM-derived ``k_gt`` (``L_calibrate``).
``k_out`` re-weights the features of every later block right after its spatial step::

    f'[n, c, t, v] = f[n, c, t, v] · (V · sg(k_out)[n, v])        (sg = stop-gradient, detach)

so a uniform distribution (``k = 1/V``) leaves the features unchanged and the weights average to 1.

Why the stop-gradient: without it the classification loss trains the JID through the re-weighting,
and scaling one joint ×V is an easy way to lower it, so ``k_out`` became one-hot on a single joint
for every class within a few SGD steps (NW-UCLA, 2026-11-21; ``bench/jid_calibration_check.py
--variant collapse``) while ``L_calibrate`` — an MSE between two distributions over 25 joints, ~1e-3
per entry — could not pull it back. Detached, the JID is trained by ``L_calibrate`` only: the LLM's
key joints supervise it and its output guides the later blocks, the paper's intent. The
calibration loss is summed over joints (see :func:`trainer.models.losses.calibration_loss`) so this
only signal is not ~V× too weak. ``detach_jid=False`` restores the old behaviour for ablations.

Local → global (``l2g``, training only): the joint-text embeddings ``[N, V, D]`` and the encoder's
final joint features (time/person averaged) are projected into a common space; ``layers`` blocks of
text self-attention, text-query cross-attention over the skeleton joints and an MLP (pre-norm,
residual adds) mix them; the joint-averaged result is projected to the encoder's feature size and
classified by the encoder's own head — the classifier is **shared** by both branches.

Inference is the skeleton branch only: encoder + JID (+~0.1 M parameters on InfoGCN).
Choices the paper leaves open (JID hidden width, interaction width/heads/layers, the formula
above) are constructor arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.base import SkeletonEncoder, count_parameters, persons_to_batch
from trainer.models.registry import create_model

if TYPE_CHECKING:
    from dataspec import DatasetSpec


class JointImportanceDeterminer(nn.Module):
    """JID: ``[N, C, V]`` pooled features → key-joint distribution ``[N, V]`` (rows sum to 1).

    Two linear layers over the flattened (channel, joint) feature, so the prediction can use which
    joint carries which activation; with the default hidden width 32 this is ~0.1 M parameters on
    InfoGCN (C=128, V=25), the paper's inference overhead.
    """

    def __init__(self, channels: int, num_joints: int, hidden: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(channels * num_joints, hidden)
        self.fc2 = nn.Linear(hidden, num_joints)

    def forward(self, pooled: Tensor) -> Tensor:
        return torch.softmax(self.fc2(F.relu(self.fc1(pooled.flatten(1)))), dim=-1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention`` (no loop over heads)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"interaction width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        q = self.q(query).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [N, H, Lq, d]
        k, v = self.kv(context).unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4)  # [N, H, Lk, d]
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).flatten(2))


class InteractionLayer(nn.Module):
    """Text self-attention → text-query cross-attention over skeleton joints → MLP (pre-norm, residual)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = MultiHeadAttention(width, heads, dropout)
        self.norm_query = nn.LayerNorm(width)
        self.norm_skeleton = nn.LayerNorm(width)
        self.cross_attn = MultiHeadAttention(width, heads, dropout)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, text: Tensor, skeleton: Tensor) -> Tensor:
        t = self.norm_self(text)
        text = text + self.self_attn(t, t)
        text = text + self.cross_attn(self.norm_query(text), self.norm_skeleton(skeleton))
        return text + self.mlp(self.norm_mlp(text))


class CrossModalInteraction(nn.Module):
    """L2G module: joint texts ``[N, V, D]`` × skeleton joints ``[N, V, C]`` → feature ``[N, F]``.

    Both inputs are projected into a common ``width``-d space (plus a learned joint embedding on the
    skeleton side, so attention knows which joint is which); the output is averaged over the text
    tokens and projected to ``out_dim`` (the encoder's feature size) for the shared classifier.
    """

    def __init__(
        self,
        text_dim: int,
        skeleton_dim: int,
        num_joints: int,
        out_dim: int,
        width: int = 256,
        heads: int = 4,
        layers: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.text_proj = nn.Linear(text_dim, width)
        self.skeleton_proj = nn.Linear(skeleton_dim, width)
        self.joint_embed = nn.Parameter(torch.zeros(1, num_joints, width))
        nn.init.trunc_normal_(self.joint_embed, std=0.02)
        self.layers = nn.ModuleList(InteractionLayer(width, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out_proj = nn.Linear(width, out_dim)

    def forward(self, text_joint: Tensor, skeleton_joint: Tensor) -> Tensor:
        text = self.text_proj(text_joint.to(self.text_proj.weight.dtype))
        skeleton = self.skeleton_proj(skeleton_joint) + self.joint_embed
        for layer in self.layers:
            text = layer(text, skeleton)
        return self.out_proj(self.norm(text).mean(dim=1))


class CrossGLG(nn.Module):
    """An encoder wrapped with CrossGLG's G2L (JID + re-weighting) and L2G (interaction) modules.

    Args:
        encoder: registered encoder name (``infogcn``, ``stgcn``).
        num_classes: training classes K (labels 0..K-1).
        spec: dataset spec (graph, persons); or give ``num_joints`` + ``edges``.
        in_channels: coordinates per joint.
        num_persons: persons M (default: the spec's).
        text_dim: joint-text embedding size D (384 for all-MiniLM-L6-v2).
        g2l: enable the JID, ``k_out`` and joint re-weighting.
        l2g: enable the cross-modal interaction branch (training only).
        n_pre: JID reads the output of block ``n_pre`` (1-based); blocks after it are re-weighted.
        jid_hidden: hidden width of the JID.
        detach_jid: re-weight with ``k_out`` detached, so only ``L_calibrate`` trains the JID (the
            default; ``False`` lets the classification loss train it through the re-weighting, which
            collapses ``k_out`` onto one joint — see the module docstring).
        layers, width, heads, mlp_ratio, dropout: the interaction module.
        **encoder_cfg: other keyword arguments go to the encoder (e.g. InfoGCN's ``noise_ratio``, ``k``).
    """

    def __init__(
        self,
        encoder: str,
        num_classes: int,
        spec: DatasetSpec | None = None,
        *,
        num_joints: int | None = None,
        edges: Sequence[Sequence[int]] | None = None,
        in_channels: int = 3,
        num_persons: int | None = None,
        text_dim: int = 384,
        g2l: bool = True,
        l2g: bool = True,
        n_pre: int = 5,
        jid_hidden: int = 32,
        detach_jid: bool = True,
        layers: int = 1,
        width: int = 256,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        **encoder_cfg: Any,
    ):
        super().__init__()
        cfg = dict(encoder_cfg)
        cfg.setdefault("in_channels", in_channels)
        if num_persons is not None:
            cfg["num_persons"] = num_persons
        built = create_model(
            encoder, num_classes=num_classes, spec=spec, num_joints=num_joints, edges=edges, **cfg
        )
        if not isinstance(built, SkeletonEncoder):
            raise TypeError(f"model '{encoder}' is not a SkeletonEncoder and cannot host CrossGLG")
        self.encoder: SkeletonEncoder = built
        self.encoder_name = encoder
        self.g2l, self.l2g = g2l, l2g
        channels = self.encoder.block_channels()
        if not 1 <= n_pre < len(channels):
            raise ValueError(f"n_pre must be in 1..{len(channels) - 1} for {encoder}, got {n_pre}")
        self.n_pre = n_pre
        self.detach_jid = detach_jid
        v = self.encoder.num_joints
        self.jid = JointImportanceDeterminer(channels[n_pre - 1], v, jid_hidden) if g2l else None
        self.interaction = (
            CrossModalInteraction(
                text_dim, channels[-1], v, self.encoder.feature_dim, width, heads, layers, mlp_ratio, dropout
            )
            if l2g
            else None
        )

    def _skeleton_branch(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Encoder blocks with the JID after block ``n_pre``: final features and ``k_out``."""
        enc = self.encoder
        h = enc.stem(x)
        k_out: Tensor | None = None
        weight: Tensor | None = None
        for i, block in enumerate(enc.blocks):
            h = block(h, weight)
            if self.jid is not None and i + 1 == self.n_pre:
                k_out = self.jid(enc.joint_features(h).transpose(1, 2))  # JID sees [N, C, V]
                guide = k_out.detach() if self.detach_jid else k_out
                weight = persons_to_batch(guide * enc.num_joints, enc.num_persons).to(h.dtype)
        return h, k_out

    def forward(self, x: Tensor, text_joint: Tensor | None = None) -> dict[str, Tensor | None]:
        """Both branches.

        Args:
            x: skeletons ``[N, C, T, V, M]``.
            text_joint: joint-text embeddings of each sample's class ``[N, V, D]`` (only used with ``l2g``).

        Returns:
            dict with ``logits`` ``[N, K]`` (skeleton branch), ``logits_text`` (``[N, K]`` or None),
            ``k_out`` (``[N, V]`` or None), ``features`` (pooled ``[N, F]``), ``text_features``
            (``[N, F]`` or None) and the encoder head's extras (InfoGCN: ``z``, ``z_mu``,
            ``z_logvar``, ``z_prior``).
        """
        h, k_out = self._skeleton_branch(x)
        pooled = self.encoder.pool(h)
        out: dict[str, Tensor | None] = dict(self.encoder.head(pooled))
        out.update(features=pooled, k_out=k_out, logits_text=None, text_features=None)
        if self.interaction is not None and text_joint is not None:
            text_features = self.interaction(text_joint, self.encoder.joint_features(h))
            out["text_features"] = text_features
            out["logits_text"] = self.encoder.head(text_features)["logits"]
        return out

    @torch.no_grad()
    def extract_features(self, x: Tensor) -> Tensor:
        """Skeleton-only inference path (no text): the pooled one-shot feature ``[N, F]``."""
        h, _ = self._skeleton_branch(x)
        return self.encoder.pool(h)

    def inference_parameters(self) -> int:
        """Parameters used at inference: the encoder and the JID (the interaction is training-only)."""
        total = count_parameters(self.encoder)
        return total + (count_parameters(self.jid) if self.jid is not None else 0)

    def training_parameters(self) -> int:
        """All trainable parameters."""
        return count_parameters(self)

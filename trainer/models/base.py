"""The encoder interface that CrossGLG hooks into, and small layers both encoders share.

An encoder is ``stem`` → ``blocks`` → ``pool`` → ``head``:

- ``stem(x)`` turns the input ``[N, C, T, V, M]`` into per-person features ``[N*M, C0, T, V]``;
- each block is called as ``block(h, joint_weight)``; ``joint_weight`` (``[N*M, 1, 1, V]`` or
  ``None``) multiplies the block's features right after its spatial (graph) step — the point where
  CrossGLG's key-joint distribution re-weights joints;
- ``pool(h)`` averages over time, joints and persons → ``[N, F]`` (the one-shot feature);
- ``head(pooled)`` gives a dict with ``logits`` and encoder extras. It is the classifier CrossGLG
  shares between the skeleton and the text branch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SkeletonEncoder(nn.Module):
    """Base class of the registered encoders (see the module docstring for the contract).

    Subclasses set ``num_persons``, ``num_joints``, ``feature_dim`` and ``blocks`` (each block has
    an ``out_channels`` attribute) and implement :meth:`stem` and :meth:`head`.
    """

    num_persons: int
    num_joints: int
    feature_dim: int
    blocks: nn.ModuleList

    def stem(self, x: Tensor) -> Tensor:
        """``[N, C, T, V, M]`` → ``[N*M, C0, T, V]``."""
        raise NotImplementedError

    def head(self, pooled: Tensor) -> dict[str, Tensor]:
        """Pooled features ``[N, F]`` → dict with ``logits`` ``[N, K]`` and encoder extras."""
        raise NotImplementedError

    def pool(self, h: Tensor) -> Tensor:
        """Mean over time, joints and persons: ``[N*M, C, T, V]`` → ``[N, C]``."""
        return h.mean(dim=(2, 3)).unflatten(0, (-1, self.num_persons)).mean(dim=1)

    def joint_features(self, h: Tensor) -> Tensor:
        """Mean over time and persons, joints kept: ``[N*M, C, T, V]`` → ``[N, V, C]``."""
        return h.mean(dim=2).unflatten(0, (-1, self.num_persons)).mean(dim=1).transpose(1, 2)

    def block_channels(self) -> list[int]:
        """Output channels of each block, in order."""
        return [int(block.out_channels) for block in self.blocks]

    def forward_features(self, x: Tensor) -> Tensor:
        """Skeleton → final block features ``[N*M, C, T', V]``."""
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Plain encoder forward: dict with ``logits``, ``features`` (pooled) and head extras."""
        pooled = self.pool(self.forward_features(x))
        out = self.head(pooled)
        out["features"] = pooled
        return out


BN_STATE_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
"""The state-dict entries of one BatchNorm module."""


class TemporalConvBN(nn.Sequential):
    """``Conv2d`` over time only (kernel ``(k, 1)``, 'same' padding for stride 1) followed by BatchNorm."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1
    ):
        pad = dilation * (kernel_size - 1) // 2
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=(kernel_size, 1),
            stride=(stride, 1),
            padding=(pad, 0),
            dilation=(dilation, 1),
        )
        self.bn = nn.BatchNorm2d(out_channels)


def conv_init(conv: nn.Conv2d) -> None:
    """Kaiming-normal (fan-out) weights and zero bias, the usual init of skeleton GCNs."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def bn_init(bn: nn.modules.batchnorm._BatchNorm, scale: float) -> None:
    """BatchNorm with weight ``scale`` and zero bias."""
    nn.init.constant_(bn.weight, scale)
    nn.init.zeros_(bn.bias)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def persons_to_batch(weights: Tensor, num_persons: int) -> Tensor:
    """Per-sample joint weights ``[N, V]`` → ``[N*M, 1, 1, V]`` matching the encoder's ``(n m)`` batch."""
    return torch.repeat_interleave(weights, num_persons, dim=0)[:, None, None, :]

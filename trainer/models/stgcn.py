"""ST-GCN (Yan, Xiong & Lin, AAAI 2018, "Spatial Temporal Graph Convolutional Networks for
Skeleton-Based Action Recognition"), written from the paper and the public description.

Facts used: BatchNorm of the input over (joint, channel); ten blocks 64, 64, 64, 64, 128/2, 128,
128, 256/2, 256, 256; each block = spatial graph convolution with the spatial-configuration
partitioning (3 partitions, one 1×1 convolution per partition, learnable edge-importance weights
multiplying the partitioned adjacency) → BN → ReLU → temporal conv (kernel 9) → BN → dropout, plus a
residual (none in the first block, 1×1 conv + BN when the shape changes); global average pooling
and a linear classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.base import SkeletonEncoder, TemporalConvBN, bn_init, conv_init
from trainer.models.graph import SkeletonGraph
from trainer.models.registry import register_encoder

STGCN_CHANNELS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (64, 1),
    (64, 1),
    (64, 1),
    (128, 2),
    (128, 1),
    (128, 1),
    (256, 2),
    (256, 1),
    (256, 1),
)


class PartitionedGraphConv(nn.Module):
    """Spatial graph convolution ``out_i = Σ_k Σ_j (A_k ⊙ M_k)[i, j] · W_k x_j`` (Yan et al., Eq. 10).

    ``A`` are the fixed spatial-configuration partitions ``[K, V, V]``, ``M`` the learnable edge
    importance (ones at init). All partitions come from one 1×1 convolution and one einsum.
    """

    def __init__(self, in_channels: int, out_channels: int, partitions: Tensor, edge_importance: bool = True):
        super().__init__()
        self.num_partitions = partitions.shape[0]
        self.register_buffer("partitions", partitions.clone(), persistent=False)
        self.conv = nn.Conv2d(in_channels, out_channels * self.num_partitions, 1)
        self.edge_importance = nn.Parameter(torch.ones_like(partitions), requires_grad=edge_importance)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x).unflatten(1, (self.num_partitions, -1))  # [B, K, C, T, V]
        adjacency = (self.partitions * self.edge_importance).to(y.dtype)
        return torch.einsum("bkctj,kij->bcti", y, adjacency)


class STGCNBlock(nn.Module):
    """Spatial graph conv → (optional joint re-weighting) → BN-ReLU-temporal conv-BN-dropout, + residual."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        partitions: Tensor,
        stride: int = 1,
        residual: bool = True,
        dropout: float = 0.0,
        temporal_kernel: int = 9,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.gcn = PartitionedGraphConv(in_channels, out_channels, partitions)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            TemporalConvBN(out_channels, out_channels, temporal_kernel, stride),
            nn.Dropout(dropout),
        )
        self.has_residual = residual
        if not residual or (in_channels == out_channels and stride == 1):
            self.residual: nn.Module = nn.Identity()
        else:
            self.residual = TemporalConvBN(in_channels, out_channels, kernel_size=1, stride=stride)

    def forward(self, x: Tensor, joint_weight: Tensor | None = None) -> Tensor:
        y = self.gcn(x)
        if joint_weight is not None:
            y = y * joint_weight
        y = self.tcn(y)
        return F.relu(y + self.residual(x)) if self.has_residual else F.relu(y)


class STGCN(SkeletonEncoder):
    """ST-GCN encoder with a linear classifier.

    Args:
        num_classes: output classes.
        graph: the skeleton graph; partitions are built around ``graph.center``.
        in_channels: coordinates per joint (3).
        num_persons: persons per sample M (averaged after the last block).
        dropout: dropout after each temporal convolution.
        edge_importance: learn the edge-importance weights (the paper's default: yes).
    """

    def __init__(
        self,
        num_classes: int,
        graph: SkeletonGraph,
        in_channels: int = 3,
        num_persons: int = 2,
        dropout: float = 0.0,
        edge_importance: bool = True,
    ):
        super().__init__()
        v = graph.num_joints
        self.num_classes = num_classes
        self.num_joints = v
        self.num_persons = num_persons
        partitions = torch.as_tensor(graph.spatial_partitions())
        self.data_bn = nn.BatchNorm1d(in_channels * v)
        blocks, c_in = [], in_channels
        for i, (c_out, stride) in enumerate(STGCN_CHANNELS):
            block = STGCNBlock(c_in, c_out, partitions, stride, residual=i > 0, dropout=dropout)
            block.gcn.edge_importance.requires_grad_(edge_importance)
            blocks.append(block)
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = c_in
        self.classifier = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                conv_init(m)
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                bn_init(m, 1.0)

    def stem(self, x: Tensor) -> Tensor:
        n, c, t, v, m = x.shape
        # data BN normalises each (joint, channel) over batch, persons and time
        x = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
        x = self.data_bn(x)
        return x.view(n * m, v, c, t).permute(0, 2, 3, 1).contiguous()

    def head(self, pooled: Tensor) -> dict[str, Tensor]:
        return {"logits": self.classifier(pooled)}


register_encoder("stgcn", STGCN)

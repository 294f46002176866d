"""Skeleton graphs built from a dataset spec's child→parent edges.

Convention used everywhere in ``trainer.models``: an aggregation matrix ``A`` of shape ``[V, V]``
acts as ``out[i] = sum_j A[i, j] * x[j]`` (row ``i`` gathers into joint ``i``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the trainer only needs the spec's fields, not the loader, at run time
    from dataspec import DatasetSpec


@dataclass(frozen=True)
class SkeletonGraph:
    """A skeleton tree: number of joints, ``(child, parent)`` edges and the centre joint.

    Args:
        num_joints: number of joints V.
        edges: ``(child, parent)`` pairs, 0-based, forming a tree (the spec's ``edges``).
        center: the joint used as centre of gravity by ST-GCN's spatial-configuration partitioning.
    """

    num_joints: int
    edges: tuple[tuple[int, int], ...]
    center: int = 0

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> SkeletonGraph:
        """The graph of a dataset spec (joints, edges, ``center_joint``)."""
        return cls(spec.num_joints, tuple(spec.edges), spec.center_joint)

    @classmethod
    def coerce(
        cls, spec: DatasetSpec | None, num_joints: int | None, edges: Sequence[Sequence[int]] | None
    ) -> SkeletonGraph:
        """A graph from either a spec or ``num_joints`` + ``edges`` (the model constructors accept both)."""
        if spec is not None:
            return cls.from_spec(spec)
        if num_joints is None or edges is None:
            raise ValueError("give a dataset spec, or both num_joints and edges, to build a skeleton graph")
        return cls(int(num_joints), tuple((int(c), int(p)) for c, p in edges))

    def parent_matrix(self) -> np.ndarray:
        """``P[child, parent] = 1``: ``P @ x`` gives each joint its parent's value (0 for the root)."""
        mat = np.zeros((self.num_joints, self.num_joints), dtype=np.float64)
        for child, parent in self.edges:
            mat[child, parent] = 1.0
        return mat

    def adjacency(self, self_loops: bool = False) -> np.ndarray:
        """Symmetric binary adjacency ``[V, V]`` (optionally with the identity added)."""
        par = self.parent_matrix()
        adj = np.maximum(par, par.T)
        if self_loops:
            adj = adj + np.eye(self.num_joints)
        return adj

    def hop_distance(self) -> np.ndarray:
        """Shortest-path hop counts ``[V, V]`` (``inf`` between unconnected joints)."""
        v = self.num_joints
        adj = self.adjacency(self_loops=True) > 0
        dist = np.full((v, v), np.inf)
        reach = np.eye(v, dtype=bool)
        dist[reach] = 0
        for hops in range(1, v):
            # Boolean matrix power: joints reachable within `hops` steps.
            nxt = (reach.astype(np.int64) @ adj.astype(np.int64)) > 0
            dist[nxt & ~reach] = hops
            if (nxt == reach).all():
                break
            reach = nxt
        return dist

    def relative_coordinate_matrix(self, k: int = 1) -> np.ndarray:
        """InfoGCN's input transform ``I - P^k``: each joint minus its k-th ancestor.

        Joints with fewer than ``k`` ancestors keep their absolute coordinate (their row of ``P^k``
        is zero), exactly as the official implementation's ``I - A_outward^k`` (k=0 gives zeros,
        so InfoGCN's ``k`` must be at least 1).
        """
        if k < 1:
            raise ValueError(f"the ancestor order k must be >= 1, got {k}")
        return np.eye(self.num_joints) - np.linalg.matrix_power(self.parent_matrix(), k)

    def spatial_partitions(self) -> np.ndarray:
        """ST-GCN's spatial-configuration partitions ``[3, V, V]`` (Yan et al., AAAI 2018, Sec. 3.3).

        The 1-hop neighbourhood of each root joint (itself included) is averaged over its size and
        split by the neighbour's distance to the centre joint compared with the root's: the same
        distance (root itself included), closer (centripetal), farther (centrifugal).
        """
        adj = self.adjacency(self_loops=True)
        norm = adj / adj.sum(axis=1, keepdims=True)  # average over each root's neighbourhood
        to_center = self.hop_distance()[:, self.center]
        root_d, nbr_d = to_center[:, None], to_center[None, :]
        same = norm * (nbr_d == root_d)
        closer = norm * (nbr_d < root_d)
        farther = norm * (nbr_d > root_d)
        return np.stack([same, closer, farther]).astype(np.float32)

"""On-device batches for training and evaluation: the store goes to the GPU once, augmentation runs there.

Semantics follow InfoGCN's NTU feeder (facts from its paper and public feeder; our own code):

- crop of the valid frames: train takes a random ratio ``p ~ U[0.5, 1]`` of the sample's length
  (at least ``min_crop`` = 64 frames when the sample has them) at a random offset; eval takes the
  centre 95% (``int((1 - 0.95) * T / 2)`` frames off each end);
- the crop is resampled to ``window`` (64) frames with linear interpolation, the way
  ``F.interpolate(mode="bilinear", align_corners=False)`` does along time;
- train only: one random rotation per sample, angles ``U[-0.3, 0.3]`` rad about x, y and z,
  ``R = Rz · Ry · Rx``;
- optional modalities computed after that: ``bone`` (joint minus its parent, from the spec's edges;
  the root is zero), ``motion`` (frame t+1 minus frame t, last frame zero), ``bone_motion``.

Random draws come from NumPy generators seeded by ``(seed, epoch)``, so batches are reproducible on
any device. Output layout: ``x [B, C, T, V, M]`` float32, ``C = 3 × len(modalities)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainer.data.store import PreparedStore

MODALITIES = ("joint", "bone", "motion", "bone_motion")


@dataclass(frozen=True)
class Augmentation:
    """Per-sample crop and rotation of one batch (positions are within each sample's own frames)."""

    begin: np.ndarray  # int64 [B], first cropped frame
    length: np.ndarray  # int64 [B], cropped frames
    angles: np.ndarray | None  # float64 [B, 3] rotation about x, y, z; None: no rotation


def draw_augmentation(
    rng: np.random.Generator,
    lengths: np.ndarray,
    *,
    train: bool,
    crop_ratio: tuple[float, float] = (0.5, 1.0),
    eval_ratio: float = 0.95,
    min_crop: int = 64,
    rotation: float = 0.3,
) -> Augmentation:
    """Crops (and rotations when training) for samples of the given lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if not train:
        bias = ((1 - eval_ratio) * lengths / 2).astype(np.int64)
        return Augmentation(bias, lengths - 2 * bias, None)
    ratio = rng.uniform(crop_ratio[0], crop_ratio[1], len(lengths))
    crop = np.minimum(np.maximum(np.floor(lengths * ratio).astype(np.int64), min_crop), lengths)
    crop = np.maximum(crop, 1)
    begin = rng.integers(0, lengths - crop + 1)
    angles = rng.uniform(-rotation, rotation, (len(lengths), 3)) if rotation > 0 else None
    return Augmentation(begin, crop, angles)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``R = Rz · Ry · Rx`` for angles ``[B, 3]`` (x, y, z), as InfoGCN's random rotation builds it."""
    c, s = angles.cos(), angles.sin()
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rx = mat([[one, zero, zero], [zero, c[:, 0], s[:, 0]], [zero, -s[:, 0], c[:, 0]]])
    ry = mat([[c[:, 1], zero, -s[:, 1]], [zero, one, zero], [s[:, 1], zero, c[:, 1]]])
    rz = mat([[c[:, 2], s[:, 2], zero], [-s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


class GPUFeeder:
    """Batches of one subset of a store, built on ``device``.

    Args:
        store: the prepared store.
        indices: samples of the store this feeder serves (e.g. ``split.train``).
        device: where the frames live and batches are built (``"cuda"``, ``"cpu"``).
        window: frames per output sample (64).
        train: random crop + rotation, shuffled batches without the last partial one; else the
            centre crop, store order, every sample.
        rotation: maximum absolute rotation angle in radians (train only).
        modalities: any of ``joint``, ``bone``, ``motion``, ``bone_motion``, concatenated on channels.
        seed: base seed; epoch ``e`` draws from ``(seed, e)``.
        persons: persons per sample in the output (the store's by default; extra ones are zero).
    """

    def __init__(
        self,
        store: PreparedStore,
        indices: Sequence[int] | np.ndarray,
        *,
        device: str | torch.device,
        window: int = 64,
        train: bool,
        rotation: float = 0.3,
        modalities: Sequence[str] = ("joint",),
        seed: int = 0,
        persons: int | None = None,
        crop_ratio: tuple[float, float] = (0.5, 1.0),
        eval_ratio: float = 0.95,
        min_crop: int = 64,
    ) -> None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(f"unknown modalities {unknown}: choose from {', '.join(MODALITIES)}")
        self.indices = np.asarray(indices, dtype=np.int64)
        if not len(self.indices):
            raise ValueError("a feeder needs at least one sample")
        self.device = torch.device(device)
        self.window, self.train, self.rotation = window, train, rotation
        self.modalities = tuple(modalities)
        self.seed = seed
        self.crop_ratio, self.eval_ratio, self.min_crop = crop_ratio, eval_ratio, min_crop
        self.persons = persons or store.persons
        self.labels = torch.as_tensor(store.labels[self.indices], device=self.device)
        self.sample_ids = torch.as_tensor(self.indices, device=self.device)
        self.lengths = store.lengths[self.indices]
        self._frames, self._starts = self._upload(store)
        parents = np.arange(store.spec.num_joints)
        for child, parent in store.spec.edges:
            parents[child] = parent
        # The root is its own parent, so its bone is zero.
        self._parents = torch.as_tensor(parents, device=self.device)

    def _upload(self, store: PreparedStore) -> tuple[torch.Tensor, np.ndarray]:
        """Copy this subset's frames to the device once, contiguously, in chunks (float16)."""
        lengths = self.lengths
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        m = min(self.persons, store.persons)
        shape = (int(lengths.sum()), self.persons, store.spec.num_joints, 3)
        frames = torch.zeros(shape, dtype=torch.float16, device=self.device)
        chunk = 4096
        for a in range(0, len(self.indices), chunk):
            ids = self.indices[a : a + chunk]
            block = np.concatenate([store.frames[store.offsets[i] : store.offsets[i + 1], :m] for i in ids])
            lo = int(starts[a])
            frames[lo : lo + len(block), :m] = torch.from_numpy(
                np.ascontiguousarray(block, dtype=np.float16)
            ).to(self.device)
        return frames, starts

    def __len__(self) -> int:
        return len(self.indices)

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch: train drops the last partial batch, eval keeps it."""
        n = len(self.indices)
        return n // batch_size if self.train else -(-n // batch_size)

    def epoch_batches(
        self, batch_size: int, epoch: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(x [B, C, T, V, M], y [B] store labels, idx [B] store indices)`` for one epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.indices)
        order = rng.permutation(n) if self.train else np.arange(n)
        aug = draw_augmentation(
            rng,
            self.lengths[order],
            train=self.train,
            crop_ratio=self.crop_ratio,
            eval_ratio=self.eval_ratio,
            min_crop=self.min_crop,
            rotation=self.rotation,
        )
        # The whole epoch's order and augmentation go to the device in one copy each: a copy from
        # pageable host memory waits for the GPU, so per-batch copies would stall every step.
        dev = self.device
        order_t = torch.as_tensor(order, device=dev)
        begin_t = torch.as_tensor(self._starts[order] + aug.begin, device=dev)
        length_t = torch.as_tensor(aug.length, device=dev, dtype=torch.float32)
        rot_t = None
        if aug.angles is not None:
            rot_t = rotation_matrices(torch.as_tensor(aug.angles, device=dev, dtype=torch.float32))
        for b in range(self.num_batches(batch_size)):
            sl = slice(b * batch_size, min((b + 1) * batch_size, n))
            rows = order_t[sl]
            x = self._transform(begin_t[sl], length_t[sl], None if rot_t is None else rot_t[sl])
            yield x, self.labels[rows], self.sample_ids[rows]

    def transform(self, rows: np.ndarray, aug: Augmentation) -> torch.Tensor:
        """Crop, resample, rotate and derive modalities for feeder rows ``rows``: ``[B, C, T, V, M]``."""
        dev = self.device
        begin = torch.as_tensor(self._starts[rows] + aug.begin, device=dev)
        length = torch.as_tensor(aug.length, device=dev, dtype=torch.float32)
        rot = None
        if aug.angles is not None:
            rot = rotation_matrices(torch.as_tensor(aug.angles, device=dev, dtype=torch.float32))
        return self._transform(begin, length, rot)

    def _transform(self, begin: torch.Tensor, length: torch.Tensor, rot: torch.Tensor | None) -> torch.Tensor:
        """Device part of :meth:`transform`: ``begin`` absolute first frames, ``length`` crop lengths."""
        dev = self.device
        # Source position of each output frame, F.interpolate(align_corners=False) convention.
        pos = (torch.arange(self.window, device=dev, dtype=torch.float32) + 0.5) * (
            length[:, None] / self.window
        ) - 0.5
        pos = pos.clamp(min=0)
        last = (length[:, None] - 1).long()
        i0 = pos.floor().long().clamp(max=last)
        i1 = (i0 + 1).clamp(max=last)
        w = (pos - i0).view(*pos.shape, 1, 1, 1)
        f0 = self._frames[begin[:, None] + i0].float()
        f1 = self._frames[begin[:, None] + i1].float()
        x = f0 + (f1 - f0) * w  # [B, T, M, V, 3]
        if rot is not None:
            x = torch.einsum("bij,btmvj->btmvi", rot, x)
        parts = []
        bone = None
        for name in self.modalities:
            if name in ("bone", "bone_motion") and bone is None:
                bone = x - x[:, :, :, self._parents]
            base = x if name in ("joint", "motion") else bone
            if name.endswith("motion"):
                base = torch.cat([base[:, 1:] - base[:, :-1], torch.zeros_like(base[:, :1])], dim=1)
            parts.append(base)
        out = torch.cat(parts, dim=-1)  # [B, T, M, V, C]
        return out.permute(0, 4, 1, 3, 2).contiguous()

"""Denoising and transformation of raw bodies into actors, as the reference NTU pipeline does it.

Facts from the published description of the preprocessing used by CTR-GCN and InfoGCN
(``get_raw_denoised_data`` / ``seq_transformation`` as described in their papers and READMEs);
the code below is our own, vectorised with NumPy:

1. frames with no body are dropped (done by the readers);
2. with more than one body: bodies seen in at most 11 frames are noise; then the spread filter:
   a frame of a body is noisy when its x-spread exceeds 0.8 × its y-spread, and a body whose
   noisy-frame ratio is at least 0.69754 is dropped (never the last body left);
3. the remaining bodies are ranked by motion (sum over x, y, z of the variance of all joints over
   the body's non-noisy frames); the most moving one is actor 1, each next body goes to the first
   actor slot whose frame range it does not overlap (sharing one boundary frame is allowed), or is
   dropped;
4. frames where no actor is present are dropped;
5. everything is translated so that actor 1's centre joint (NTU: middle of the spine) in its first
   frame is the origin; absent actors stay zero;
6. a sequence with a single actor fills the second slot with zeros (NTU-60) or a copy of the actor
   (NTU-120): the spec's ``single_actor_fill``;
7. optionally (off by default) the view is aligned on the first frame of actor 1: the spine
   (base → middle) becomes +z and the hip axis (left → right hip) is rotated into the x-z plane
   towards +x, the frame-0 alignment InfoGCN and 2s-AGCN apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dataspec import DatasetSpec, SpecError
from trainer.data.readers import RawBodies, SkipSample


@dataclass(frozen=True)
class DenoiseParams:
    """Every parameter of the pipeline; all of them are written into the store's manifest."""

    min_body_frames: int = 11
    spread_ratio: float = 0.8
    noisy_frame_ratio: float = 0.69754
    max_actors: int = 2
    center_joint: int = 1
    single_actor_fill: str = "zeros"
    align_view: bool = False
    # Joints that define the view alignment: spine base, spine middle, left hip, right hip.
    view_joints: tuple[int, int, int, int] | None = None

    @classmethod
    def from_spec(cls, spec: DatasetSpec, *, align_view: bool = False) -> DenoiseParams:
        """Parameters for a dataset: actors, centre joint and single-actor fill come from its spec."""
        view_joints = None
        try:
            view_joints = tuple(
                spec.joint_index(n)
                for n in ("base of the spine", "middle of the spine", "left hip", "right hip")
            )
        except SpecError:
            if align_view:
                raise
        return cls(
            max_actors=spec.persons,
            center_joint=spec.center_joint,
            single_actor_fill=spec.single_actor_fill,
            align_view=align_view,
            view_joints=view_joints,  # type: ignore[arg-type]
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def denoise(raw: RawBodies, params: DenoiseParams) -> tuple[np.ndarray, dict[str, int]]:
    """Raw bodies → actors ``[T, max_actors, V, 3]`` float32, plus counts of what was dropped."""
    n_bodies = raw.n_bodies
    counts = np.bincount(raw.body, minlength=n_bodies)
    keep = np.ones(n_bodies, dtype=bool)
    stats = {"bodies": n_bodies, "dropped_short": 0, "dropped_spread": 0, "dropped_overlap": 0}
    motion = np.zeros(n_bodies)
    if n_bodies > 1:
        keep &= counts > params.min_body_frames
        stats["dropped_short"] = int(n_bodies - keep.sum())
        if keep.sum() > 1:
            noisy = _noisy_observations(raw.xyz, params.spread_ratio)
            ratio = np.bincount(raw.body, weights=noisy, minlength=n_bodies) / np.maximum(counts, 1)
            for b in np.flatnonzero(keep):
                if keep.sum() == 1:
                    break  # the filter never removes the last body
                if ratio[b] >= params.noisy_frame_ratio:
                    keep[b] = False
                    stats["dropped_spread"] += 1
            motion = _motion(raw, noisy, keep)
    if not keep.any():
        raise SkipSample(
            "no_body_after_denoise",
            f"all {n_bodies} bodies were noise (seen in ≤ {params.min_body_frames} frames)",
        )
    survivors = np.flatnonzero(keep)
    # Stable sort: equal motion keeps the order of first appearance.
    order = survivors[np.argsort(-motion[survivors], kind="stable")]
    actors, present, n_actors = _assign_actors(raw, order, params.max_actors, stats)
    frames = present.any(axis=1)
    actors, present = actors[frames], present[frames]
    first = int(np.argmax(present[:, 0]))
    origin = actors[first, 0, params.center_joint].copy()
    actors[present] -= origin
    if params.align_view:
        _align_view(actors, present, first, params)
    if n_actors == 1 and params.max_actors > 1 and params.single_actor_fill == "duplicate":
        actors[:, 1:] = actors[:, :1]
    stats.update(
        actors=n_actors, frames=int(len(actors)), dropped_frames=int((~frames).sum()) + raw.empty_frames
    )
    return actors, stats


def _noisy_observations(xyz: np.ndarray, spread_ratio: float) -> np.ndarray:
    spread = xyz.max(axis=1) - xyz.min(axis=1)  # [K, 3]
    return spread[:, 0] > spread_ratio * spread[:, 1]


def _motion(raw: RawBodies, noisy: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Sum over x, y, z of the variance of all joints over each kept body's non-noisy frames."""
    motion = np.zeros(len(keep))
    for b in np.flatnonzero(keep):
        sel = (raw.body == b) & ~noisy
        if not sel.any():
            sel = raw.body == b
        pts = raw.xyz[sel].reshape(-1, 3).astype(np.float64)
        motion[b] = float(pts.var(axis=0).sum())
    return motion


def _assign_actors(
    raw: RawBodies, order: np.ndarray, max_actors: int, stats: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, int]:
    n_joints = raw.xyz.shape[1]
    actors = np.zeros((raw.n_frames, max_actors, n_joints, 3), dtype=np.float32)
    present = np.zeros((raw.n_frames, max_actors), dtype=bool)
    ranges: list[tuple[int, int] | None] = [None] * max_actors
    for b in order:
        sel = raw.body == b
        frames = raw.frame[sel]
        start, end = int(frames.min()), int(frames.max())
        for slot, rng in enumerate(ranges):
            # As the reference: ranges that share at most one boundary frame do not overlap (the
            # later body then overwrites that frame).
            if rng is None or min(rng[1], end) - max(rng[0], start) <= 0:
                actors[frames, slot] = raw.xyz[sel]
                present[frames, slot] = True
                ranges[slot] = (start, end) if rng is None else (min(rng[0], start), max(rng[1], end))
                break
        else:
            stats["dropped_overlap"] += 1
    # One surviving body is a single actor; several make a multi-actor sample even when every later
    # body fitted into actor 1's gaps (the reference keeps the second slot, zero, in that case).
    n_actors = 1 if len(order) == 1 else min(max_actors, 2)
    return actors, present, n_actors


def _align_view(actors: np.ndarray, present: np.ndarray, first: int, params: DenoiseParams) -> None:
    if params.view_joints is None:
        return
    base, mid, lhip, rhip = params.view_joints
    pose = actors[first, 0].astype(np.float64)
    z = pose[mid] - pose[base]
    hips = pose[rhip] - pose[lhip]
    if np.linalg.norm(z) < 1e-6:
        return
    z /= np.linalg.norm(z)
    x = hips - hips.dot(z) * z
    if np.linalg.norm(x) < 1e-6:
        return
    x /= np.linalg.norm(x)
    rot = np.stack([x, np.cross(z, x), z])  # rows: the new axes
    actors[present] = (actors[present].astype(np.float64) @ rot.T).astype(np.float32)

"""Drawing key-joint distributions on a skeleton: one panel per class, a grid for many.

The skeleton is laid out in a neutral 2-D front view (A-pose) computed from the spec alone: the
tree of its edges is walked from the pelvis (the torso joint next to the most leg joints), and each
bone points by the child's ``part`` and ``side`` (torso and head up, arms out then down, legs down).
The performer faces the viewer, so the person's left is on the right of the picture.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataspec import DatasetSpec

# Bone lengths by the child's part (arbitrary units; only the look matters).
_LENGTH = {"torso": 1.0, "head": 0.7, "arm": 0.9, "hand": 0.35, "leg": 1.1, "foot": 0.35}
_SIDE_SIGN = {"left": 1.0, "right": -1.0, "center": 0.0}


@dataclass(frozen=True)
class Panel:
    """One panel: a title and a weight per joint (spec order)."""

    title: str
    weights: Sequence[float]


def _pelvis(spec: DatasetSpec, neighbours: list[set[int]]) -> int:
    torso = [j.index for j in spec.joints if j.part == "torso"] or [spec.center_joint]
    return max(torso, key=lambda i: (sum(spec.joints[n].part == "leg" for n in neighbours[i]), -i))


def _direction(spec: DatasetSpec, parent: int, child: int, sibling: int) -> tuple[float, float]:
    joint, up = spec.joints[child], spec.joints[parent]
    sign = _SIDE_SIGN.get(joint.side, 0.0)
    limb_start = up.part in ("torso", "head")
    if joint.part in ("arm", "hand"):
        dx, dy = (sign, 0.0) if limb_start else (0.35 * sign, -1.0)
    elif joint.part in ("leg", "foot"):
        dx, dy = (
            (sign, -0.3)
            if limb_start
            else ((0.5 * sign, -0.6) if joint.part == "foot" else (0.12 * sign, -1.0))
        )
    else:
        dx, dy = 0.0, 1.0  # torso and head stack upwards
    # Fan out siblings that would otherwise overlap (NTU: thumb and hand tip).
    angle = math.atan2(dy, dx) + 0.35 * sibling
    return math.cos(angle), math.sin(angle)


def neutral_pose(spec: DatasetSpec) -> np.ndarray:
    """2-D positions ``[J, 2]`` of the spec's joints in a front-facing A-pose."""
    neighbours: list[set[int]] = [set() for _ in spec.joints]
    for a, b in spec.edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    root = _pelvis(spec, neighbours)
    pos = np.zeros((spec.num_joints, 2))
    seen = {root}
    queue = deque([root])
    while queue:
        parent = queue.popleft()
        children = sorted(n for n in neighbours[parent] if n not in seen)
        same_dir: dict[tuple[str, str], int] = {}
        for child in children:
            key = (spec.joints[child].part, spec.joints[child].side)
            sibling = same_dir.get(key, 0)
            same_dir[key] = sibling + 1
            dx, dy = _direction(spec, parent, child, sibling)
            length = _LENGTH.get(spec.joints[child].part, 0.8)
            if spec.joints[child].part == "leg" and spec.joints[parent].part == "torso":
                length *= 0.45  # pelvis to hip is short
            pos[child] = pos[parent] + length * np.array([dx, dy])
            seen.add(child)
            queue.append(child)
    # Joints outside the edge tree (none in the shipped specs) sit in a row below the feet.
    stray = [j for j in range(spec.num_joints) if j not in seen]
    for k, j in enumerate(stray):
        pos[j] = (k * 0.5, pos[:, 1].min() - 0.5)
    return pos


def plot_keyjoints(spec: DatasetSpec, panels: Sequence[Panel], output: str | Path, columns: int = 4) -> Path:
    """Draw one skeleton panel per class, joint size and colour by weight; write PNG/SVG/PDF by suffix."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    if not panels:
        raise ValueError("nothing to plot: give at least one class")
    output = Path(output)
    pos = neutral_pose(spec)
    n = len(panels)
    ncols = min(columns, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.8 * nrows), squeeze=False)
    vmax = max(max(p.weights) for p in panels) or 1.0
    norm = Normalize(vmin=0.0, vmax=vmax)
    cmap = plt.get_cmap("viridis")
    for ax, panel in zip(axes.flat, panels, strict=False):
        weights = np.asarray(panel.weights, dtype=float)
        for a, b in spec.edges:
            ax.plot(pos[[a, b], 0], pos[[a, b], 1], color="0.75", linewidth=2, zorder=1)
        ax.scatter(
            pos[:, 0],
            pos[:, 1],
            s=15 + 600 * weights / vmax,
            c=weights,
            cmap=cmap,
            norm=norm,
            edgecolors="0.3",
            linewidths=0.5,
            zorder=2,
        )
        top = int(np.argmax(weights))
        ax.annotate(spec.joints[top].name, pos[top], xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_title(panel.title, fontsize=9)
        # Room around the figure for the largest markers and the label.
        ax.set_xlim(pos[:, 0].min() - 0.6, pos[:, 0].max() + 0.6)
        ax.set_ylim(pos[:, 1].min() - 0.4, pos[:, 1].max() + 0.4)
        ax.set_aspect("equal")
        ax.axis("off")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), shrink=0.6, label="k_gt weight"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output

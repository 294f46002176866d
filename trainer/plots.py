"""Pictures of a run: training curves, confusion matrices, joint importance drawn on the skeleton.

matplotlib is optional (the GPU machines may lack it): every function returns the written path, or
``None`` when matplotlib is not importable, and never fails a run for a missing picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_training_curves(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Training loss (and its parts), train accuracy, validation accuracy and lr against the step."""
    plt = pyplot()
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    if plt is None or not train:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train]
    skip = {"kind", "step", "epoch", "time", "train_accuracy", "lr"}
    for key in [k for k in train[0] if k not in skip]:
        axes[0].plot(steps, [r.get(key, np.nan) for r in train], label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("loss")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [r["train_accuracy"] for r in train], label="train")
    if val:
        axes[1].plot([r["step"] for r in val], [r["val_accuracy"] for r in val], "o-", label="validation")
    axes[1].set_title("accuracy (auxiliary classes)")
    axes[1].legend()
    axes[2].plot(steps, [r["lr"] for r in train])
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("step")
    return save_figure(fig, plt, path)


def plot_confusion(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str
) -> Path | None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class)."""
    plt = pyplot()
    if plt is None:
        return None
    conf = np.asarray(confusion, dtype=float)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * n + 2), max(4, 0.45 * n + 1.5)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=6)
    return save_figure(fig, plt, path)


def draw_skeleton(
    ax: Any, xy: np.ndarray, edges: Sequence[tuple[int, int]], weights: np.ndarray | None = None
) -> None:
    """Draw a skeleton (``xy [J, 2]``, child→parent ``edges``) on ``ax``; joint size/colour = ``weights``."""
    for child, parent in edges:
        ax.plot(xy[[child, parent], 0], xy[[child, parent], 1], color="0.6", lw=1.5, zorder=1)
    if weights is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=12, color="k", zorder=2)
    else:
        w = np.asarray(weights, dtype=float)
        scaled = w / max(w.max(), 1e-12)
        ax.scatter(
            xy[:, 0], xy[:, 1], s=20 + 280 * scaled, c=w, cmap="Reds", edgecolors="k", lw=0.5, zorder=2
        )
    ax.set_aspect("equal")
    ax.axis("off")


def plot_joint_importance(
    poses: Sequence[np.ndarray],
    importances: Sequence[np.ndarray],
    titles: Sequence[str],
    edges: Sequence[tuple[int, int]],
    path: Path,
) -> Path | None:
    """One panel per class: the JID's mean joint importance ``k_out`` drawn on that class's exemplar pose."""
    plt = pyplot()
    if plt is None or not poses:
        return None
    n = len(poses)
    cols = min(n, 5)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, xy, w, title in zip(axes.flat, poses, importances, titles, strict=False):
        draw_skeleton(ax, xy, edges, w)
        ax.set_title(title, fontsize=8)
    return save_figure(fig, plt, path)


def plot_grouped_bars(
    labels: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str, path: Path
) -> Path | None:
    """One group of bars per label, one bar per series (its name in the legend)."""
    plt = pyplot()
    if plt is None:
        return None
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, plt, path)


def save_figure(fig: Any, plt: Any, path: Path) -> Path:
    """Lay out, write (110 dpi, parents created) and close ``fig``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

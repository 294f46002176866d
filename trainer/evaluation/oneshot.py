"""One-shot protocol on extracted features: fixed exemplars, random exemplar draws, per-class scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainer.evaluation.calibration import (
    BaseStatistics,
    CalibrationParams,
    base_statistics,
    distribution_calibration_predict,
)
from trainer.evaluation.nearest import cosine_nearest_neighbour

METHODS = ("nn", "dc")


@dataclass
class OneShotFeatures:
    """Skeleton-branch features for one-shot evaluation.

    ``novel`` holds every sample of the novel classes, the protocol's exemplars first (row ``i`` is the
    exemplar of novel class ``i``), then the queries; ``novel_labels`` are ``0..C-1`` in
    ``novel_class_ids`` order. ``base``/``base_labels`` are the auxiliary training samples.
    """

    base: torch.Tensor
    base_labels: torch.Tensor
    novel: torch.Tensor
    novel_labels: torch.Tensor
    novel_class_ids: list[str]

    @property
    def num_novel(self) -> int:
        return len(self.novel_class_ids)


def confusion_matrix(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, C]`` counts, rows = true class, columns = predicted class."""
    flat = truth.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def score(pred: torch.Tensor, truth: torch.Tensor, class_ids: list[str]) -> dict[str, Any]:
    """Accuracy, per-class accuracy and the confusion matrix of one prediction."""
    conf = confusion_matrix(pred, truth, len(class_ids))
    per_class = {
        cid: (float(conf[i, i] / conf[i].sum()) if conf[i].sum() > 0 else float("nan"))
        for i, cid in enumerate(class_ids)
    }
    return {
        "accuracy": float((pred.cpu() == truth.cpu()).float().mean()),
        "per_class": per_class,
        "confusion": conf.tolist(),
        "queries": int(truth.numel()),
    }


def _predict(
    method: str,
    feats: OneShotFeatures,
    support_rows: torch.Tensor,
    query_rows: torch.Tensor,
    params: CalibrationParams,
    stats: BaseStatistics | None,
    seed: int,
) -> torch.Tensor:
    support, support_labels = feats.novel[support_rows], feats.novel_labels[support_rows]
    queries = feats.novel[query_rows]
    if method == "nn":
        return cosine_nearest_neighbour(support, support_labels, queries)
    if method == "dc":
        return distribution_calibration_predict(
            feats.base, feats.base_labels, support, support_labels, queries, params, seed=seed, stats=stats
        )
    raise ValueError(f"unknown one-shot method '{method}': use one of {', '.join(METHODS)}")


def draw_exemplars(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """One random row per class (rows of ``labels``), in class order."""
    rows = []
    for c in range(num_classes):
        candidates = (labels == c).nonzero().flatten()
        rows.append(candidates[torch.randint(len(candidates), (1,), generator=generator)])
    return torch.cat(rows)


def evaluate_oneshot(
    feats: OneShotFeatures,
    methods: list[str] | tuple[str, ...] = METHODS,
    exemplar_draws: int = 0,
    params: CalibrationParams | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Score each method with the protocol's exemplars and, if asked, over ``exemplar_draws`` random draws.

    Returns ``{method: {"fixed": score, "draws": {"mean", "std", "values"}}}`` (draws only when asked).
    """
    params = params or CalibrationParams()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown one-shot method '{unknown[0]}': use one of {', '.join(METHODS)}")
    device = feats.novel.device
    c = feats.num_novel
    stats = None
    if "dc" in methods:
        stats = base_statistics(feats.base.to(device), feats.base_labels.to(device), params.tukey_lambda)
    all_rows = torch.arange(len(feats.novel_labels), device=device)
    fixed_support = all_rows[:c]
    fixed_queries = all_rows[c:]
    truth = feats.novel_labels[fixed_queries]
    out: dict[str, Any] = {}
    for method in methods:
        pred = _predict(method, feats, fixed_support, fixed_queries, params, stats, seed)
        entry: dict[str, Any] = {"fixed": score(pred, truth, feats.novel_class_ids)}
        if exemplar_draws > 0:
            gen = torch.Generator().manual_seed(seed)
            values = []
            for k in range(exemplar_draws):
                support = draw_exemplars(feats.novel_labels.cpu(), c, gen).to(device)
                mask = torch.ones(len(all_rows), dtype=torch.bool, device=device)
                mask[support] = False
                queries = all_rows[mask]
                p = _predict(method, feats, support, queries, params, stats, seed + 1 + k)
                values.append(float((p == feats.novel_labels[queries]).float().mean()))
            t = torch.tensor(values)
            entry["draws"] = {
                "mean": float(t.mean()),
                "std": float(t.std()) if len(values) > 1 else 0.0,
                "values": values,
            }
        out[method] = entry
    return out

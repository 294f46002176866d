"""One-shot evaluation on synthetic features: NN against brute force, calibration beats chance."""

from __future__ import annotations

import math

import torch

from trainer.evaluation.calibration import (
    CalibrationParams,
    distribution_calibration_predict,
    tukey_transform,
)
from trainer.evaluation.nearest import cosine_nearest_neighbour
from trainer.evaluation.oneshot import OneShotFeatures, confusion_matrix, evaluate_oneshot


def test_nearest_neighbour_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    support = torch.randn(7, 16, generator=g)
    labels = torch.tensor([3, 1, 4, 0, 5, 2, 6])
    queries = torch.randn(50, 16, generator=g)
    pred = cosine_nearest_neighbour(support, labels, queries)
    for qi in range(len(queries)):
        best, best_sim = None, -math.inf
        for si in range(len(support)):
            q, s = queries[qi].tolist(), support[si].tolist()
            dot = sum(a * b for a, b in zip(q, s, strict=True))
            sim = dot / (math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in s)))
            if sim > best_sim:
                best, best_sim = int(labels[si]), sim
        assert int(pred[qi]) == best


def test_tukey_is_square_root_on_non_negative_features() -> None:
    x = torch.tensor([0.0, 0.25, 4.0])
    assert torch.allclose(tukey_transform(x, 0.5), torch.tensor([0.0, 0.5, 2.0]))


def _gaussian_task(seed: int, novel: int = 5, dim: int = 32, per_class: int = 60):
    """Base and novel classes drawn around random non-negative centres with shared spread."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(12 + novel, dim, generator=g) * 4

    def draw(c: int, n: int) -> torch.Tensor:
        return (centres[c] + 0.9 * torch.randn(n, dim, generator=g)).clamp_min(0)

    base = torch.cat([draw(c, per_class) for c in range(12)])
    base_labels = torch.arange(12).repeat_interleave(per_class)
    novel_feats = torch.cat([draw(12 + c, per_class) for c in range(novel)])
    novel_labels = torch.arange(novel).repeat_interleave(per_class)
    return base, base_labels, novel_feats, novel_labels


def test_distribution_calibration_beats_chance() -> None:
    base, base_labels, feats, labels = _gaussian_task(1)
    support_rows = torch.tensor([int((labels == c).nonzero()[0]) for c in range(5)])
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[support_rows] = False
    params = CalibrationParams(samples=200, classifier_steps=150)
    pred = distribution_calibration_predict(
        base, base_labels, feats[support_rows], labels[support_rows], feats[mask], params, seed=0
    )
    acc = float((pred == labels[mask]).float().mean())
    assert acc > 0.6  # chance is 0.2


def test_evaluate_oneshot_fixed_and_draws() -> None:
    base, base_labels, feats, labels = _gaussian_task(2, novel=4)
    # The protocol layout: exemplars (one per class, in class order) first, then queries.
    first = torch.tensor([int((labels == c).nonzero()[0]) for c in range(4)])
    rest = torch.tensor([i for i in range(len(labels)) if i not in set(first.tolist())])
    order = torch.cat([first, rest])
    f = OneShotFeatures(base, base_labels, feats[order], labels[order], ["n1", "n2", "n3", "n4"])
    params = CalibrationParams(samples=100, classifier_steps=100)
    res = evaluate_oneshot(f, ["nn", "dc"], exemplar_draws=3, params=params, seed=0)
    for method in ("nn", "dc"):
        fixed = res[method]["fixed"]
        assert fixed["queries"] == len(labels) - 4
        assert 0.4 < fixed["accuracy"] <= 1.0
        assert set(fixed["per_class"]) == {"n1", "n2", "n3", "n4"}
        assert sum(map(sum, fixed["confusion"])) == fixed["queries"]
        draws = res[method]["draws"]
        assert len(draws["values"]) == 3 and draws["std"] >= 0


def test_confusion_matrix_counts() -> None:
    conf = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert conf.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]

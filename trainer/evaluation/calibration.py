"""Distribution calibration for few-shot classification, on the device with torch.

Facts from Yang, Liu & Xu, "Free Lunch for Few-shot Learning: Distribution Calibration", ICLR 2021:
features go through Tukey's ladder of powers (λ = 0.5); each support feature borrows the statistics
of its top-k (k = 2) nearest base classes (by distance to the class means): the calibrated mean is the
average of those k means and the feature itself, the calibrated covariance the average of their
covariances plus a dispersion α (0.21); 750 features are sampled per support feature and a logistic
regression is trained on samples + supports.

Our choices (the paper is silent or its numbers are for image features): the Tukey transform is applied
to the base features too, so base statistics and support features live in one space; it is a signed
power (``sign(x)·|x|^λ``), identical to Tukey's on the non-negative features it was defined for; α is
added to the covariance diagonal (α·I), which keeps it positive definite when a base class has fewer
samples than feature dimensions; the logistic regression is trained full-batch with Adam on
standardised features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.evaluation.calibration_params import CalibrationParams


def tukey_transform(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Tukey's ladder of powers: ``x^λ`` (signed for negative inputs), ``log`` for λ = 0."""
    if lam == 0:
        return torch.log(x.clamp_min(1e-6))
    return torch.sign(x) * x.abs().pow(lam)


@dataclass
class BaseStatistics:
    """Per-class mean ``[B, F]`` and covariance ``[B, F, F]`` of the base (auxiliary) classes."""

    means: torch.Tensor
    covs: torch.Tensor


def base_statistics(features: torch.Tensor, labels: torch.Tensor, lam: float) -> BaseStatistics:
    """Mean and covariance of each base class after the Tukey transform (float64 for stable sampling)."""
    x = tukey_transform(features.double(), lam)
    means, covs = [], []
    for c in labels.unique(sorted=True):
        xc = x[labels == c]
        means.append(xc.mean(0))
        # A class with one sample has no spread: its covariance is zero, α supplies the dispersion.
        covs.append(torch.cov(xc.T) if len(xc) > 1 else torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype))
    return BaseStatistics(torch.stack(means), torch.stack([c.to(x.device) for c in covs]))


def calibrate(
    support: torch.Tensor, stats: BaseStatistics, params: CalibrationParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated mean ``[N, F]`` and covariance ``[N, F, F]`` of each (transformed) support feature."""
    dist = torch.cdist(support, stats.means)
    k = min(params.top_k, stats.means.shape[0])
    nearest = dist.topk(k, largest=False).indices  # [N, k]
    mean = (stats.means[nearest].sum(1) + support) / (k + 1)
    eye = torch.eye(support.shape[1], dtype=support.dtype, device=support.device)
    cov = stats.covs[nearest].mean(1) + params.alpha * eye
    return mean, cov


def sample_calibrated(
    mean: torch.Tensor, cov: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` samples of each Gaussian ``N(mean[i], cov[i])``: ``[N, n, F]``."""
    chol = torch.linalg.cholesky(cov)
    z = torch.randn(
        mean.shape[0], n, mean.shape[1], dtype=mean.dtype, device=mean.device, generator=generator
    )
    return mean[:, None, :] + z @ chol.transpose(1, 2)


def train_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, params: CalibrationParams, seed: int = 0
) -> torch.nn.Linear:
    """Multinomial logistic regression on ``x [N, F]`` (standardised inside), full-batch Adam."""
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    torch.manual_seed(seed)
    clf = torch.nn.Linear(x.shape[1], num_classes).to(device=x.device, dtype=torch.float32)
    opt = torch.optim.Adam(
        clf.parameters(), lr=params.classifier_lr, weight_decay=params.classifier_weight_decay
    )
    xs = ((x - mu) / sd).float()
    for _ in range(params.classifier_steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(clf(xs), y).backward()
        opt.step()
    clf.register_buffer("mu", mu.float())
    clf.register_buffer("sd", sd.float())
    return clf


def distribution_calibration_predict(
    base_features: torch.Tensor,
    base_labels: torch.Tensor,
    support: torch.Tensor,
    support_labels: torch.Tensor,
    queries: torch.Tensor,
    params: CalibrationParams | None = None,
    seed: int = 0,
    stats: BaseStatistics | None = None,
) -> torch.Tensor:
    """Predicted label of each query by distribution calibration.

    Args:
        base_features: ``[Nb, F]`` features of the auxiliary training samples.
        base_labels: ``[Nb]`` their class labels (any integers).
        support: ``[N, F]`` exemplar features; ``support_labels`` ``[N]`` in ``0..C-1``.
        queries: ``[Q, F]`` query features.
        stats: precomputed :func:`base_statistics` (reused across exemplar draws).
    Returns:
        ``[Q]`` predicted labels in ``0..C-1`` on the queries' device.
    """
    params = params or CalibrationParams()
    device = support.device
    if stats is None:
        stats = base_statistics(base_features.to(device), base_labels.to(device), params.tukey_lambda)
    s = tukey_transform(support.double(), params.tukey_lambda)
    q = tukey_transform(queries.double(), params.tukey_lambda)
    mean, cov = calibrate(s, stats, params)
    gen = torch.Generator(device=device).manual_seed(seed)
    sampled = sample_calibrated(mean, cov, params.samples, gen)  # [N, n, F]
    x = torch.cat([sampled.reshape(-1, s.shape[1]), s])
    y = torch.cat([support_labels.repeat_interleave(params.samples), support_labels]).to(device).long()
    num_classes = int(support_labels.max()) + 1
    clf = train_logistic_regression(x, y, num_classes, params, seed)
    with torch.no_grad():
        logits = clf(((q - clf.mu) / clf.sd).float())
    return logits.argmax(1)

"""The hyper-parameters of distribution calibration, without torch.

One dataclass serves both the run config (``eval.calibration`` in YAML) and the evaluation code; it
lives apart from :mod:`trainer.evaluation.calibration` so that loading a config never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CalibrationParams:
    """Distribution calibration (Yang et al., ICLR 2021, "Free Lunch for Few-shot Learning").

    Defaults are the paper's: Tukey λ 0.5, top-k 2 base classes, dispersion α 0.21, 750 samples per
    support feature; the classifier settings are ours.
    """

    tukey_lambda: float = 0.5
    top_k: int = 2
    alpha: float = 0.21
    samples: int = 750
    classifier_steps: int = 300
    classifier_lr: float = 0.05
    classifier_weight_decay: float = 1e-4

"""Learning-rate schedule: linear warm-up then step decay, evaluated per optimizer step."""

from __future__ import annotations

from collections.abc import Callable


def warmup_step_factor(
    steps_per_epoch: int, warmup_epochs: int, milestones: list[int], gamma: float
) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step ``s`` (for ``torch.optim.lr_scheduler.LambdaLR``).

    Warm-up rises linearly over the first ``warmup_epochs`` epochs (InfoGCN warms up 5 epochs);
    after it the lr is multiplied by ``gamma`` at each milestone epoch.
    """
    warmup_steps = max(0, warmup_epochs * steps_per_epoch)
    bounds = sorted(m * steps_per_epoch for m in milestones)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return gamma ** sum(step >= b for b in bounds)

    return factor

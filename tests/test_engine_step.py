"""The shared training step: eager on the CPU, optimizes, and matches a hand-written step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainer.engine.step import autocast_for, make_forward_loss, make_sgd, train_step, uses_compile
from trainer.models.losses import crossglg_loss


class TinyClassifier(nn.Module):
    """A linear classifier with the forward signature of CrossGLG (unit-test stand-in)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, text_joint: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x)}


def test_compile_only_on_cuda() -> None:
    assert not uses_compile("default", torch.device("cpu"))
    assert not uses_compile("off", torch.device("cuda"))
    assert uses_compile("reduce-overhead", torch.device("cuda"))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_train_step_equals_plain_step_and_learns(momentum: float) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    x = x + 2.0 * nn.functional.one_hot(y, 6).float()  # separable classes
    model = TinyClassifier()
    twin = copy.deepcopy(model)
    cpu = torch.device("cpu")
    opt = make_sgd(model.parameters(), 0.5, momentum, momentum > 0, 1e-4, cpu)
    ref_opt = torch.optim.SGD(
        twin.parameters(), lr=0.5, momentum=momentum, nesterov=momentum > 0, weight_decay=1e-4
    )
    fl = make_forward_loss(model, cpu, "default", label_smoothing=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    first = None
    for _ in range(20):
        loss, parts, logits = train_step(fl, opt, scaler, autocast_for(cpu, "bf16"), x, None, y, None)
        first = float(loss) if first is None else first
        ref_loss, _ = crossglg_loss(twin(x), y, None, label_smoothing=0.1)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        assert torch.allclose(loss, ref_loss, atol=1e-6)
    assert set(parts) == {"cls"} and logits.shape == (32, 3)
    assert float(loss) < 0.7 * first
    assert torch.allclose(model.fc.weight, twin.fc.weight, atol=1e-6)


def test_auto_compile_mode_is_cuda_graphs() -> None:
    from trainer.engine.step import resolve_compile_mode

    assert resolve_compile_mode("auto") == "reduce-overhead"
    assert resolve_compile_mode("default") == "default"
    assert uses_compile("auto", torch.device("cuda")) and not uses_compile("auto", torch.device("cpu"))


def test_auto_stays_eager_for_runs_too_short_to_win_back_compilation() -> None:
    from trainer.engine.step import AUTO_COMPILE_MIN_SAMPLES, choose_compile_mode

    nwucla = 1_000 * 50  # ~1,000 training sequences × 50 epochs
    ntu120 = 95_001 * 110
    assert choose_compile_mode("auto", nwucla) == "off"
    assert choose_compile_mode("auto", ntu120) == "auto"
    assert choose_compile_mode("auto", AUTO_COMPILE_MIN_SAMPLES) == "auto"
    assert choose_compile_mode("default", nwucla) == "default"  # an explicit mode is kept


REMAT = {"realize_reads_threshold": 16, "realize_opcount_threshold": 100, "realize_acc_reads_threshold": 32}


def test_compile_options_merge_the_mode_with_the_training_settings() -> None:
    from trainer.engine.step import compile_options

    assert compile_options("default", None) == {"mode": None}
    assert compile_options("reduce-overhead", {}) == {"mode": "reduce-overhead"}
    merged = compile_options("reduce-overhead", REMAT)
    assert set(merged) == {"options"}  # torch.compile refuses a mode and options together
    assert merged["options"]["triton.cudagraphs"] is True  # what reduce-overhead means to Inductor
    assert REMAT.items() <= merged["options"].items()
    assert "no_such_option" not in compile_options("default", {"no_such_option": 1})["options"]


def test_the_training_settings_compile_and_give_the_eager_result() -> None:
    """torch.compile takes the merged options (it raises on unknown or mistyped ones) and the
    recomputed chains give the same numbers (Inductor on the CPU)."""
    from trainer.engine.step import compile_options

    def chain(x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x * 2.0 + 1.0)
        return y.sum(0) + y.mean(1, keepdim=True).sum(0) + (y * y).sum(0)

    x = torch.randn(16, 8)
    compiled = torch.compile(chain, **compile_options("default", REMAT))
    torch.testing.assert_close(compiled(x), chain(x))

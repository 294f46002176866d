"""Training faults through ``trainer run``: out of memory gives the batch-size hint, a NaN loss stops
with the exact step, and the run directory keeps a loadable state.

Also covered elsewhere (not repeated here): a NaN loss from a huge learning rate,
``tests/test_trainer_run.py::test_nan_loss_stops_with_the_step``; an exact resume after a kill
mid-epoch, ``tests/test_trainer_run.py::test_resume_mid_epoch_matches_uninterrupted_run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pack_helpers import write_random_pack
from typer.testing import CliRunner

import trainer.engine.step as step
from dataspec import load_spec
from trainer.cli.app import _load_commands, app
from trainer.data.prepare import prepare_dataset
from trainer.data.synthetic import write_ntu_corpus
from trainer.engine.checkpoint import load_checkpoint

_load_commands()
runner = CliRunner()

# A tiny CPU run: 40 training samples, batches of 8, a checkpoint after every step.
TINY = [
    "optim.epochs=1",
    "optim.warmup_epochs=0",
    "optim.milestones=[1]",
    "data.batch_size=8",
    "data.eval_batch_size=32",
    "data.window=16",
    "model.options={base_channels: 8, width: 16, heads: 2, jid_hidden: 8}",
    "run.log_interval=1",
    "run.checkpoint_interval=1",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``--set`` arguments of a tiny NTU-60 run: a prepared synthetic store and a random pack."""
    root = tmp_path_factory.mktemp("tiny_training")
    spec = load_spec("ntu60")
    proto = spec.oneshot()
    classes = list(proto.novel) + list(proto.train_class_subsets[10])
    write_ntu_corpus(root / "raw", 80, classes=classes, spec=spec, seed=5)
    prepare_dataset(spec, root / "raw", root / "store", workers=1)
    pack = write_random_pack(root / "ntu60.kpack.safetensors", "ntu60", dim=16)
    sets = [*TINY, f"data.store={root / 'store'}", f"knowledge.pack={pack}"]
    return [arg for item in sets for arg in ("--set", item)]


def _run(tiny: list[str], run_dir: Path) -> Any:
    args = ["run", "--config", "ntu60_oneshot_10", "--run-dir", str(run_dir), "--no-eval", *tiny]
    return runner.invoke(app, args)


def _loss_failing_at(call: int, failure: Any) -> Any:
    """The real loss, except on its ``call``-th use: raise ``failure`` or turn the loss into NaN."""
    real = step.crossglg_loss
    calls = {"n": 0}

    def loss(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        value, parts = real(*args, **kwargs)
        if calls["n"] == call:
            if isinstance(failure, BaseException):
                raise failure
            value = value * float("nan")
        return value, parts

    return loss


def test_out_of_memory_stops_with_the_batch_size_hint(
    tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(step, "crossglg_loss", _loss_failing_at(1, oom))
    result = _run(tiny, tmp_path / "run")
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "out of GPU memory at step 1 with batch size 8" in flat
    assert "--set data.batch_size=4" in flat and "Traceback" not in flat
    assert not (tmp_path / "run" / "last.pt").exists()  # no half-written state either


@pytest.mark.slow  # two real training steps on the CPU: ~25 s
def test_nan_loss_names_the_exact_step_and_keeps_a_finite_checkpoint(
    tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(step, "crossglg_loss", _loss_failing_at(2, "nan"))
    result = _run(tiny, tmp_path / "run")
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "NaN or infinite at step 2 (epoch 1)" in flat and "Traceback" not in flat
    # The stop comes before step 2 is saved: last.pt is step 1, good weights.
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow  # two real training steps on the CPU: ~25 s
def test_resume_from_another_model_layout_stops_with_a_clear_line_and_keeps_the_checkpoint(
    tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(step, "crossglg_loss", _loss_failing_at(2, "nan"))
    assert _run(tiny, tmp_path / "run").exit_code == 1  # leaves last.pt at step 1
    last = tmp_path / "run" / "last.pt"
    state = load_checkpoint(last)
    # As if the model had one parameter fewer when last.pt was written.
    state["optimizer"]["param_groups"][0]["params"].pop()
    torch.save(state, last)
    before = last.read_bytes()
    result = _run(tiny, tmp_path / "run")
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "written by an earlier model layout" in flat and "move it away" in flat
    assert "Traceback" not in flat
    assert last.read_bytes() == before  # nothing already stored is lost

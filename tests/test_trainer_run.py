"""`trainer run` / `eval` / `report` end to end on a generated NTU-60 corpus, on the CPU.

The smoke run goes through the real pieces: synthetic `.skeleton` files → prepare → a knowledge pack
(random embeddings, `pack_helpers.write_random_pack`) → training → one-shot evaluation → report.
The resume test kills a run mid-epoch through the engine's test hook and checks that resuming ends
with bit-identical weights and the same metrics as a run that was never interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pack_helpers import write_random_pack
from typer.testing import CliRunner

from dataspec import load_spec
from trainer.cli.app import _load_commands, app
from trainer.data.prepare import prepare_dataset
from trainer.data.synthetic import write_ntu_corpus
from trainer.engine.checkpoint import load_checkpoint
from trainer.engine.loop import FAIL_AT_STEP_ENV, InjectedFailure

_load_commands()
runner = CliRunner()

# 10 training classes x 4 files -> 38-40 training samples after the 5 % validation hold-out: 4 batches
# of 8 per epoch, so a checkpoint every 3 steps lands mid-epoch.
TINY = [
    "optim.epochs=2",
    "optim.warmup_epochs=1",
    "optim.milestones=[1]",
    "data.batch_size=8",
    "data.eval_batch_size=32",
    "data.window=16",
    "model.options={base_channels: 8, width: 16, heads: 2, jid_hidden: 8}",
    "run.log_interval=2",
    "run.checkpoint_interval=3",
    "eval.calibration.samples=40",
    "eval.calibration.classifier_steps=40",
]


@pytest.fixture(scope="module")
def tiny_ntu60(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A prepared store of 80 synthetic files (10 novel + 10 training classes) and a random pack."""
    root = tmp_path_factory.mktemp("tiny_ntu60")
    spec = load_spec("ntu60")
    proto = spec.oneshot()
    classes = list(proto.novel) + list(proto.train_class_subsets[10])
    write_ntu_corpus(root / "raw", 80, classes=classes, spec=spec, seed=3)
    prepare_dataset(spec, root / "raw", root / "store")
    pack = write_random_pack(root / "ntu60.kpack.safetensors", "ntu60", dim=16)
    return {"store": root / "store", "pack": pack}


def _sets(data: dict[str, Path], *extra: str) -> list[str]:
    args = []
    for item in [*TINY, f"data.store={data['store']}", f"knowledge.pack={data['pack']}", *extra]:
        args += ["--set", item]
    return args


def test_smoke_run_eval_report(tiny_ntu60: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "run",
            "--config",
            "ntu60_oneshot_10",
            "--run-dir",
            str(run_dir),
            *_sets(tiny_ntu60, "optim.epochs=1"),
        ],
    )
    assert res.exit_code == 0, res.output
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "results.json", "train_summary.json"):
        assert (run_dir / name).exists(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["novel_classes"] == list(load_spec("ntu60").oneshot().novel)
    assert results["crossglg"] == {"g2l": True, "l2g": True}
    for method in ("nn", "dc"):
        fixed = results["methods"][method]["fixed"]
        # 10 novel classes x 4 files, minus one exemplar each.
        assert fixed["queries"] == 30
        assert 0.0 <= fixed["accuracy"] <= 1.0
        assert len(fixed["per_class"]) == 10
    assert len(results["joint_importance"]) == 10
    assert (run_dir / "plots" / "confusion_nn.png").exists()
    assert (run_dir / "plots" / "joint_importance.png").exists()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert train and {"loss", "cls", "calibrate", "text_cls", "mmd"} <= set(train[0])
    assert all(np.isfinite(r["loss"]) for r in train)
    # The checkpoint loads with weights_only and carries the resolved config.
    state = load_checkpoint(run_dir / "last.pt")
    assert state["config"]["data"]["store"] == str(tiny_ntu60["store"])
    assert {"torch", "numpy", "python"} <= set(state["rng"])

    res = runner.invoke(app, ["eval", "--run", str(run_dir), "--method", "nn", "--exemplar-draws", "3"])
    assert res.exit_code == 0, res.output
    again = json.loads((run_dir / "results.json").read_text())
    assert set(again["methods"]) == {"nn"}
    assert len(again["methods"]["nn"]["draws"]["values"]) == 3
    # Same checkpoint, same fixed exemplars: nearest neighbour is deterministic.
    assert again["methods"]["nn"]["fixed"]["accuracy"] == results["methods"]["nn"]["fixed"]["accuracy"]

    table = tmp_path / "table.md"
    res = runner.invoke(app, ["report", str(run_dir), "-o", str(table)])
    assert res.exit_code == 0, res.output
    text = table.read_text()
    assert "infogcn + CrossGLG" in text and "| ntu60 | 10 |" in text


def test_resume_mid_epoch_matches_uninterrupted_run(
    tiny_ntu60: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)  # bit-exact comparison: same reduction order in both runs
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    base = ["run", "--config", "ntu60_oneshot_10_baseline", "--no-eval", *_sets(tiny_ntu60)]
    res = runner.invoke(app, [*base, "--run-dir", str(straight)])
    assert res.exit_code == 0, res.output
    steps_per_epoch = load_checkpoint(straight / "last.pt")["step"] // 2
    assert steps_per_epoch == 4

    # Crash after step 7: the last checkpoint is step 6, in the middle of epoch 2.
    monkeypatch.setenv(FAIL_AT_STEP_ENV, "7")
    res = runner.invoke(app, [*base, "--run-dir", str(resumed)])
    assert isinstance(res.exception, InjectedFailure)
    state = load_checkpoint(resumed / "last.pt")
    assert (state["step"], state["epoch"]) == (6, 1)
    monkeypatch.delenv(FAIL_AT_STEP_ENV)

    res = runner.invoke(app, ["run", "--run-dir", str(resumed), "--no-eval"])
    assert res.exit_code == 0, res.output
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key

    def metrics(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]

    assert metrics(straight) == metrics(resumed)


def test_resume_with_another_config_is_refused(tiny_ntu60: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    base = ["run", "--config", "ntu60_oneshot_10_baseline", "--no-eval", "--run-dir", str(run_dir)]
    assert runner.invoke(app, [*base, *_sets(tiny_ntu60, "optim.epochs=1")]).exit_code == 0
    res = runner.invoke(app, [*base, *_sets(tiny_ntu60, "optim.epochs=1", "optim.lr=0.01")])
    assert res.exit_code == 1
    assert "optim.lr" in res.output and "Traceback" not in res.output


def test_nan_loss_stops_with_the_step(tiny_ntu60: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "run",
            "--config",
            "ntu60_oneshot_10_baseline",
            "--run-dir",
            str(run_dir),
            *_sets(tiny_ntu60, "optim.lr=1e30", "optim.warmup_epochs=0"),
        ],
    )
    assert res.exit_code == 1
    assert "NaN or infinite at step" in res.output


def test_missing_store_is_one_line(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["run", "--config", "nwucla_oneshot_baseline", "--run-dir", str(tmp_path / "run")]
        + ["--set", f"data.store={tmp_path}/nope"],
    )
    assert res.exit_code == 1
    assert "trainer prepare" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tiny_ntu60: dict[str, Path], tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m trainer run` (gloo on the CPU): half the steps, one writer."""
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "trainer", "run"]
    cmd += ["--config", "ntu60_oneshot_10", "--run-dir", str(run_dir), *_sets(tiny_ntu60)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # 38-40 training samples in batches of 8 = 4 batches per epoch, 2 per rank.
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["compile_mode"] == "off"  # CPU runs are eager whatever run.compile says
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "val"] == [0, 1]  # written once, by rank 0
    assert (run_dir / "results.json").exists()

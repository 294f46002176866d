"""`trainer report`: per-variant mean ± std over runs and exemplar draws, one-line errors."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from typer.testing import CliRunner

from trainer.cli.app import _load_commands, app
from trainer.evaluation.report import render_report, variant_name

_load_commands()
runner = CliRunner()


def _fake_results(run: Path, g2l: bool, l2g: bool, seed: int, nn: float, draws: list[float]) -> Path:
    run.mkdir(parents=True)
    res = {
        "run": run.name,
        "dataset": "nwucla",
        "encoder": "infogcn",
        "crossglg": {"g2l": g2l, "l2g": l2g},
        "seed": seed,
        "train_classes": 7,
        "inference_parameters": 1_530_000,
        "train_time_s": 100.0 + seed,
        "methods": {
            "nn": {
                "fixed": {"accuracy": nn},
                "draws": {"mean": statistics.mean(draws), "std": 0.0, "values": draws},
            }
        },
    }
    (run / "results.json").write_text(json.dumps(res))
    return run


def test_variants_are_grouped_with_mean_and_std(tmp_path: Path) -> None:
    runs = [
        _fake_results(tmp_path / "b1", False, False, 1, 0.70, [0.6, 0.8]),
        _fake_results(tmp_path / "b2", False, False, 2, 0.80, [0.7, 0.9]),
        _fake_results(tmp_path / "c1", True, True, 1, 0.90, [0.9, 0.9]),
    ]
    text = render_report(runs)
    # baseline: fixed 75.0 ± stdev(70, 80) = 7.1; draws over all four values: 75.0 ± 12.9
    assert "| nwucla | 7 | infogcn | 2 | 75.0 ± 7.1 | – | 75.0 ± 12.9 | – |" in text
    assert "| nwucla | 7 | infogcn + CrossGLG | 1 | 90.0 | – | 90.0 ± 0.0 | – |" in text
    assert text.count("| b1 |") == 1 and "| c1 |" in text


def test_variant_names() -> None:
    base = {"encoder": "stgcn"}
    assert variant_name({**base, "crossglg": {"g2l": True, "l2g": False}}) == "stgcn + G2L (JID) only"
    assert variant_name({**base, "crossglg": {"g2l": False, "l2g": True}}) == "stgcn + L2G (interaction) only"


def test_report_and_eval_name_a_run_without_results(tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "trainer eval" in res.output
    res = runner.invoke(app, ["eval", "--run", str(tmp_path)])
    assert res.exit_code == 1 and "no best.pt or last.pt" in res.output
    res = runner.invoke(app, ["eval", "--run", str(tmp_path), "--method", "knn"])
    assert res.exit_code != 0 and "nn, dc or both" in res.output

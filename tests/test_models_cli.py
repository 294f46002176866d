"""``trainer models``: the encoder × variant table with parameter counts."""

from __future__ import annotations

import importlib
import json

from typer.testing import CliRunner

from trainer.cli.app import COMMAND_MODULES, app

# Register every command group, as `trainer` does (with one command Typer would drop the name).
for _module in COMMAND_MODULES:
    importlib.import_module(_module)
runner = CliRunner()


def test_models_json_lists_every_encoder_and_variant():
    result = runner.invoke(app, ["models", "--json", "--num-classes", "100"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {(r["encoder"], r["variant"]) for r in rows} == {
        (e, v) for e in ("infogcn", "stgcn") for v in ("plain", "g2l", "l2g", "both")
    }
    by = {(r["encoder"], r["variant"]): r for r in rows}
    plain = by[("infogcn", "plain")]
    assert abs(plain["inference_parameters"] - 1.57e6) / 1.57e6 < 0.01
    assert by[("infogcn", "l2g")]["inference_parameters"] == plain["inference_parameters"]
    assert by[("infogcn", "l2g")]["training_parameters"] > plain["training_parameters"]
    assert 0 < by[("infogcn", "both")]["inference_overhead"] < 150_000


def test_models_table_and_bad_dataset():
    result = runner.invoke(app, ["models", "--dataset", "nwucla", "--num-classes", "7"])
    assert result.exit_code == 0 and "stgcn" in result.output and "inference" in result.output
    bad = runner.invoke(app, ["models", "--dataset", "nope"])
    assert bad.exit_code != 0 and "known datasets" in bad.output

"""`trainer prepare` and `trainer data info|sample|split` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer.cli.app import _load_commands, app
from trainer.data.synthetic import write_broken_corpus, write_ntu_corpus

runner = CliRunner()
_load_commands()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_ntu_corpus(root / "raw", 24, classes=["A1", "A2", "A7", "A8"], seed=9)
    write_broken_corpus(root / "raw")
    result = runner.invoke(
        app,
        [
            "prepare",
            "--dataset",
            "ntu120",
            "--raw",
            str(root / "raw"),
            "--out",
            str(root / "store"),
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "prepared 26 of 40 files" in result.output and "skipped 14" in result.output
    return root / "store"


def test_info_json_counts_add_up(store: Path) -> None:
    result = runner.invoke(app, ["data", "info", str(store), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["samples"] + info["skipped"] == info["files_found"] == 40
    assert info["skipped_by_reason"]["truncated"] == 1 and info["classes_present"] == 4
    table = runner.invoke(app, ["data", "info", str(store)])
    assert table.exit_code == 0 and "skipped" in table.output and "truncated" in table.output


def test_sample_json_has_the_array(store: Path) -> None:
    result = runner.invoke(app, ["data", "sample", str(store), "S001C003P008R001A007", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["class_id"] == "A7" and doc["class_name"] == "throw"
    assert len(doc["frames"]) == doc["shape"][0] and doc["shape"][1:] == [2, 25, 3]
    assert doc["frames"][0][0][1] == [0.0, 0.0, 0.0]  # centred on the spine middle
    missing = runner.invoke(app, ["data", "sample", str(store), "S009C001P001R001A001"])
    assert missing.exit_code == 1 and "is not in the store" in missing.output
    assert "Traceback" not in missing.output


def test_split_json(store: Path) -> None:
    args = ["data", "split", str(store), "--protocol", "oneshot", "--train-classes", "20", "--json"]
    strict = runner.invoke(app, args)
    assert strict.exit_code == 1 and "exemplar S001C003P008R001A013 of class A13" in strict.output
    result = runner.invoke(app, [*args, "--partial"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["exemplars"] == 2 and doc["novel_class_ids"] == ["A1", "A7"]
    names = (store / "names.txt").read_text().split()
    count = {a: sum(n.endswith(a) for n in names) for a in ("A001", "A007", "A002", "A008")}
    assert doc["queries"] == count["A001"] + count["A007"] - 2
    # A2 and A8 are both in the 20-class training subset and are the only auxiliary classes here.
    assert doc["train"] + doc["val"] == doc["auxiliary"] == count["A002"] + count["A008"]
    xsub = runner.invoke(app, ["data", "split", str(store), "--protocol", "xsub", "--json"])
    assert xsub.exit_code == 0 and sum(json.loads(xsub.output)[k] for k in ("train", "test")) == 26
    bad = runner.invoke(app, ["data", "split", str(store), "--protocol", "xview"])
    assert bad.exit_code == 1 and "has no 'xview' protocol" in bad.output


def test_errors_are_one_line(tmp_path: Path, store: Path) -> None:
    again = runner.invoke(
        app, ["prepare", "--dataset", "ntu120", "--raw", str(store.parent / "raw"), "--out", str(store)]
    )
    assert again.exit_code == 1 and "already holds a finished store" in again.output
    nostore = runner.invoke(app, ["data", "info", str(tmp_path)])
    assert nostore.exit_code == 1 and "not a prepared store" in nostore.output
    unknown = runner.invoke(
        app, ["prepare", "--dataset", "kinetics", "--raw", str(tmp_path), "--out", str(tmp_path / "s")]
    )
    assert unknown.exit_code != 0 and "no dataset spec 'kinetics'" in unknown.output
    for result in (again, nostore, unknown):
        assert "Traceback" not in result.output

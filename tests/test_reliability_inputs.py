"""Bad input: one clear line each (no traceback), and nothing stored is damaged.

Dataset specs, prompt templates, import files, knowledge packs, checkpoints, run configs,
skeleton data with NaN/inf, and output paths that cannot be written.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from pack_helpers import write_random_pack
from typer.testing import CliRunner

from dataspec import data_dir, load_spec
from kbgen.cli.app import _load_commands as load_kbgen_commands
from kbgen.cli.app import app as kbgen
from kbgen.store import db
from kbgen.testing.fake_openai import FakeOpenAIServer
from trainer.cli.app import _load_commands as load_trainer_commands
from trainer.cli.app import app as trainer
from trainer.data.prepare import prepare_dataset
from trainer.data.readers import SkipSample
from trainer.data.store import PreparedStore
from trainer.data.synthetic import write_ntu_corpus
from trainer.engine.checkpoint import CheckpointError, load_checkpoint
from trainer.knowledge.pack import PackError, load_pack

load_kbgen_commands()
load_trainer_commands()
runner = CliRunner()
NWUCLA = load_spec("nwucla")


def assert_one_clear_line(output: str, *expected: str) -> None:
    """A user error: the expected words, no traceback, and the error itself on one logical line."""
    assert "Traceback" not in output, output
    flat = " ".join(output.split())  # rich wraps long lines at the terminal width
    for text in expected:
        assert text in flat, output
    assert flat.lower().count("error") >= 1, output


def db_fingerprint(home: Path) -> tuple[str, list[tuple[Any, ...]]]:
    """SQLite's integrity check and every description row: equal before and after means untouched."""
    db.dispose_all()
    conn = sqlite3.connect(home / "kbgen.db")
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute("SELECT id, class_pk, kind, joint_position, text, is_current FROM descriptions")
        return integrity, sorted(rows.fetchall())
    finally:
        conn.close()


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def seeded(server: FakeOpenAIServer, _isolated_home: Path) -> Path:
    """A knowledge base with two NW-UCLA classes, generated through the CLI; returns KBGEN_HOME."""
    args = ["generate", "-d", "nwucla", "-c", "a01,a02", "--base-url", server.base_url, "--model", "fake"]
    result = runner.invoke(kbgen, args)
    assert result.exit_code == 0, result.output
    return _isolated_home


# --------------------------------------------------------------------------- dataset specs


def _spec_variant(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    raw = yaml.safe_load((data_dir() / "datasets" / "nwucla.yaml").read_text())
    change(raw)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _duplicate_joint(raw: dict[str, Any]) -> None:
    raw["joints"][5]["name"] = raw["joints"][4]["name"]


def _edge_to_unknown_joint(raw: dict[str, Any]) -> None:
    raw["edges"].append([19, 42])


def _class_twice(raw: dict[str, Any]) -> None:
    raw["classes"].append(dict(raw["classes"][0]))


def _joint_index_is_a_name(raw: dict[str, Any]) -> None:
    raw["joints"][0]["index"] = "hip"


def _joints_not_a_list(raw: dict[str, Any]) -> None:
    raw["joints"] = 20


SPEC_FAULTS = {
    "duplicate joint": (_duplicate_joint, "'left shoulder' is used twice"),
    "edge to unknown joint": (_edge_to_unknown_joint, "edge [19, 42] names joint 42, but joints run 0..19"),
    "class twice": (_class_twice, "class a01 is listed twice"),
    "index of the wrong type": (_joint_index_is_a_name, "malformed spec"),
    "joints not a list": (_joints_not_a_list, "malformed spec"),
}


@pytest.mark.parametrize("fault", list(SPEC_FAULTS))
def test_malformed_dataset_spec_is_one_line_and_touches_no_database(
    fault: str, seeded: Path, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    change, expected = SPEC_FAULTS[fault]
    path = _spec_variant(tmp_path, change)
    before = db_fingerprint(seeded)
    requests = len(server.requests)
    for args in (
        ["list", "-d", str(path)],
        ["generate", "-d", str(path), "--base-url", server.base_url, "--model", "fake"],
    ):
        result = runner.invoke(kbgen, args)
        assert result.exit_code == 1
        assert_one_clear_line(result.output, "broken.yaml", expected)
    assert len(server.requests) == requests
    assert db_fingerprint(seeded) == before
    assert before[0] == "ok" and len(before[1]) == 2 * (1 + NWUCLA.num_joints)


def test_malformed_spec_is_refused_by_the_trainer_too(tmp_path: Path) -> None:
    path = _spec_variant(tmp_path, _edge_to_unknown_joint)
    result = runner.invoke(
        trainer,
        ["prepare", "--dataset", str(path), "--raw", str(tmp_path)]
        + [
            "--out",
            str(tmp_path / "store"),
        ],
    )
    assert result.exit_code != 0
    assert_one_clear_line(result.output, "names joint 42")
    assert not (tmp_path / "store").exists()


# --------------------------------------------------------------------------- prompt templates


@pytest.mark.parametrize(
    "template, expected",
    [
        ("Describe $action with $tempo.", "needs variable(s) tempo"),
        ("Describe $action for 100$ now.", "malformed placeholder"),
    ],
)
def test_bad_prompt_template_stops_before_any_request(
    template: str, expected: str, seeded: Path, server: FakeOpenAIServer, tmp_path: Path, monkeypatch: Any
) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(Path(__file__).resolve().parents[1] / "prompts", prompts)
    (prompts / "global_action.md").write_text(template)
    monkeypatch.setenv("KBGEN_PROMPTS", str(prompts))
    before = db_fingerprint(seeded)
    requests = len(server.requests)
    args = ["generate", "-d", "nwucla", "-c", "a03", "--base-url", server.base_url, "--model", "fake"]
    result = runner.invoke(kbgen, args)
    assert result.exit_code == 1
    assert_one_clear_line(result.output, "global_action", expected)
    assert len(server.requests) == requests
    assert db_fingerprint(seeded) == before


# --------------------------------------------------------------------------- import files


def _exported(seeded: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "kb.json"
    result = runner.invoke(kbgen, ["export", "-d", "nwucla", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "import.json"
    path.write_text(json.dumps(document))
    return path


IMPORT_FAULTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown top-level field": lambda d: d.update(clases=d["classes"]),
    "unknown class field": lambda d: d["classes"][0].update(glob="a typo"),
    "text of the wrong type": lambda d: d["classes"][0].update(joints={"head": 42}),
    "text of 100 000 characters": lambda d: d["classes"][0].update(description="x" * 100_000),
    "20 000 classes": lambda d: d.update(classes=d["classes"] * 10_000),
    "unknown joint": lambda d: d["classes"][0]["joints"].update(tail="It wags."),
}


@pytest.mark.parametrize("fault", list(IMPORT_FAULTS))
def test_bad_import_file_is_one_line_and_imports_nothing(fault: str, seeded: Path, tmp_path: Path) -> None:
    document = _exported(seeded, tmp_path)
    # A good change in the same file proves that nothing at all is imported, not just the bad part.
    document["classes"][-1]["joints"]["head"] = "Changed by the import: it must not be saved."
    IMPORT_FAULTS[fault](document)
    before = db_fingerprint(seeded)
    result = runner.invoke(kbgen, ["import", str(_write(tmp_path, document)), "-d", "nwucla"])
    assert result.exit_code == 1, result.output
    assert_one_clear_line(result.output, "import.json", "nothing imported")
    assert db_fingerprint(seeded) == before


def test_import_file_over_the_size_bound_is_refused_before_reading(seeded: Path, tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:  # sparse: 40 MB on paper, nothing to parse
        handle.truncate(40 * 1024 * 1024)
    before = db_fingerprint(seeded)
    result = runner.invoke(kbgen, ["import", str(path), "-d", "nwucla"])
    assert result.exit_code == 1
    assert_one_clear_line(result.output, "byte limit")
    assert db_fingerprint(seeded) == before


# --------------------------------------------------------------------------- unwritable outputs


def test_export_to_an_unwritable_path_is_one_line(seeded: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(kbgen, ["export", "-d", "nwucla", "-o", str(blocker / "kb.json")])
    assert result.exit_code == 1
    assert_one_clear_line(result.output, "cannot write", "writable --output")


def test_prepare_into_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    write_ntu_corpus(tmp_path / "raw", 3, spec="ntu60", seed=1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["prepare", "--dataset", "ntu60", "--raw", str(tmp_path / "raw"), "--out", str(blocker / "store")]
    result = runner.invoke(trainer, [*args, "--workers", "1"])
    assert result.exit_code == 1
    assert_one_clear_line(result.output, "Not a directory", "--out is a writable folder")


# --------------------------------------------------------------------------- skeleton data


def test_nan_and_inf_skeletons_are_skipped_with_a_reason_and_never_stored(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    files = write_ntu_corpus(raw, 4, spec="ntu60", seed=2)
    for path, word in zip(files[:2], ("nan", "-inf"), strict=True):
        lines = path.read_text().split("\n")
        coords = next(i for i, line in enumerate(lines) if line.count(" ") == 11)
        lines[coords] = word + lines[coords][lines[coords].index(" ") :]
        path.write_text("\n".join(lines))
    summary = prepare_dataset(load_spec("ntu60"), raw, tmp_path / "store", workers=1)
    assert summary.prepared == 2 and summary.skipped_by_reason == {"non_finite": 2}
    store = PreparedStore.open(tmp_path / "store")
    assert len(store) == 2
    assert all(np.isfinite(store.sample(i).astype(np.float32)).all() for i in range(len(store)))
    report = json.loads((tmp_path / "store" / "prepare_report.json").read_text())
    assert "NaN or infinity" in json.dumps(report)
    with pytest.raises(SkipSample, match="non_finite"):
        from trainer.data.ntu_skeleton import read_ntu_skeleton

        read_ntu_skeleton(files[0].read_bytes(), load_spec("ntu60"))


# --------------------------------------------------------------------------- knowledge packs


def _truncated(path: Path) -> Path:
    data = write_random_pack(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _nan(path: Path) -> Path:
    joint_text = np.full((NWUCLA.num_classes, NWUCLA.num_joints, 8), np.nan, dtype=np.float16)
    return write_random_pack(path, tensors={"joint_text": joint_text})


PACK_FAULTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated file": (_truncated, "not a readable safetensors file"),
    "not a safetensors file": (lambda p: (p.write_bytes(b"\x00" * 64), p)[1], "not a readable safetensors"),
    "pack of another dataset": (
        lambda p: write_random_pack(p, "ntu60"),
        "written for dataset 'ntu60', not 'nwucla'",
    ),
    "other joint list": (
        lambda p: write_random_pack(p, joint_names=json.dumps(["pelvis", *NWUCLA.joint_names[1:]])),
        "joint 0 is 'pelvis' here",
    ),
    "class missing": (
        lambda p: write_random_pack(p, class_ids=json.dumps(["a01", *NWUCLA.class_ids[:-1]])),
        "a12",
    ),
    "newer format": (lambda p: write_random_pack(p, format_version="99"), "format version 99"),
    "NaN embeddings": (_nan, "NaN or infinite"),
}


@pytest.mark.parametrize("fault", list(PACK_FAULTS))
def test_corrupt_or_mismatched_pack_is_one_clear_error(fault: str, tmp_path: Path) -> None:
    make, expected = PACK_FAULTS[fault]
    path = make(tmp_path / "nwucla.kpack.safetensors")
    with pytest.raises(PackError) as caught:
        load_pack(path, NWUCLA, NWUCLA.class_ids)
    message = str(caught.value)
    assert expected in message and "\n" not in message


# --------------------------------------------------------------------------- checkpoints and configs


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it would create a file (what a hostile checkpoint could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled code", "not a dict"])
def test_corrupt_checkpoint_is_one_line_through_trainer_run(damage: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    last = run_dir / "last.pt"
    marker = tmp_path / "code-ran"
    if damage == "garbage":
        last.write_bytes(np.random.default_rng(0).bytes(500))
    elif damage == "truncated":
        torch.save({"model": torch.zeros(1000), "config": {}}, last)
        last.write_bytes(last.read_bytes()[:-300])
    elif damage == "pickled code":
        torch.save({"config": {}, "payload": _RunsCodeWhenUnpickled(marker)}, last)
    else:
        torch.save([torch.zeros(3)], last)
    with pytest.raises(CheckpointError):
        load_checkpoint(last)
    result = runner.invoke(trainer, ["run", "--run-dir", str(run_dir)])
    assert result.exit_code == 1
    assert_one_clear_line(result.output, "last.pt")
    assert not marker.exists(), "weights_only=True must refuse to run pickled code"


def test_config_with_an_unknown_key_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    base = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "nwucla_oneshot.yaml"
    config.write_text(f"base: {base}\noptim:\n  lrr: 0.1\n")
    for args in (
        ["run", "--config", str(config), "--run-dir", str(tmp_path / "run")],
        ["run", "--config", "nwucla_oneshot", "--set", "optim.lrr=0.1", "--run-dir", str(tmp_path / "run")],
    ):
        result = runner.invoke(trainer, args)
        assert result.exit_code == 1
        assert_one_clear_line(result.output, "unknown config key 'optim.lrr'", "lr")
    assert not (tmp_path / "run").exists()

"""kbgen export / import: the round trip is byte-identical; bad files store nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from store_helpers import count_descriptions, fill_class, kbgen, seed_dataset

from kbgen.store import db, kbfile, repo


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """An export of a small knowledge base: two complete classes (one edited) and a partial one."""
    seed_dataset()
    fill_class("ntu120", "A1")
    fill_class("ntu120", "A7")
    assert kbgen("set", "A7", "-d", "ntu120", "--global", "throw «overarm», ünïcode kept").exit_code == 0
    assert (
        kbgen("set", "A13", "-d", "ntu120", "--joint", "left hand", "--text", "tears the paper").exit_code
        == 0
    )
    out = tmp_path / "kb.json"
    result = kbgen("export", "-d", "ntu120", "-o", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_export_import_export_is_identical(exported: Path, tmp_path: Path) -> None:
    document = json.loads(exported.read_text(encoding="utf-8"))
    assert document["format"] == "kbgen-knowledge-base" and document["dataset"] == "ntu120"
    assert [c["class_id"] for c in document["classes"]] == ["A1", "A7", "A13"]
    assert document["classes"][2] == {
        "class_id": "A13",
        "name": "tear up paper",
        "global": None,
        "key_body_parts": [],
        "joints": {"left hand": "tears the paper"},
    }
    other = f"sqlite:///{tmp_path / 'other.db'}"
    result = kbgen("import", str(exported), "-d", "ntu120", "--db", other)
    assert result.exit_code == 0, result.output
    assert "3 classes, 53 texts saved, 0 unchanged" in result.stdout
    again = tmp_path / "again.json"
    assert kbgen("export", "-d", "ntu120", "--db", other, "-o", str(again)).exit_code == 0
    assert again.read_bytes() == exported.read_bytes()
    with db.session_scope(other) as s:
        rows = repo.history(s, repo.get_class(s, "ntu120", "A7"), kind="global")
        assert [(r.source, r.provenance) for r in rows] == [("import", {"file": "kb.json", "class_id": "A7"})]
    # Importing the same file again, or into the database it came from, changes nothing.
    for url in (other, None):
        before = count_descriptions(url)
        args = ["import", str(exported), "-d", "ntu120"] + (["--db", url] if url else [])
        result = kbgen(*args)
        assert result.exit_code == 0 and "0 texts saved, 53 unchanged" in result.stdout
        assert count_descriptions(url) == before


def test_export_to_stdout_matches_the_file(exported: Path) -> None:
    result = kbgen("export", "-d", "ntu120")
    assert result.exit_code == 0 and result.stdout == exported.read_text(encoding="utf-8")


def test_import_saves_changed_texts_as_new_versions(exported: Path) -> None:
    document = json.loads(exported.read_text(encoding="utf-8"))
    document["classes"][0]["global"] = "drink from a bottle"
    document["classes"][0]["joints"]["HandRight"] = document["classes"][0]["joints"].pop("right hand") + "!"
    exported.write_text(json.dumps(document), encoding="utf-8")
    result = kbgen("import", str(exported), "-d", "ntu120")
    assert result.exit_code == 0 and "2 texts saved, 51 unchanged" in result.stdout
    shown = json.loads(kbgen("show", "A1", "-d", "ntu120", "--json").stdout)
    assert shown["global"] == "drink from a bottle" and shown["joints"]["right hand"].endswith("!")


def _mutate(document: dict, case: str) -> dict:
    last = document["classes"][-1]
    if case == "extra field":
        last["confidence"] = 0.9
    elif case == "wrong type":
        last["joints"] = ["left hand"]
    elif case == "text too long":
        last["joints"]["left hand"] = "x" * (kbfile.MAX_TEXT_CHARS + 1)
    elif case == "too many key parts":
        last["key_body_parts"] = ["arm"] * (kbfile.MAX_KEY_PARTS + 1)
    elif case == "empty text":
        last["joints"]["left hand"] = "   "
    elif case == "unknown class":
        last["class_id"] = "A500"
    elif case == "unknown joint":
        last["joints"]["left tail"] = "wags"
    elif case == "duplicate joint":
        last["joints"]["HandLeft"] = "again"
    elif case == "duplicate class":
        document["classes"].append(dict(document["classes"][0], class_id="A001"))
    elif case == "other dataset":
        document["dataset"] = "ntu60"
    elif case == "wrong format":
        document["format"] = "something-else"
    return document


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("extra field", "classes[2].confidence: Extra inputs are not permitted"),
        ("wrong type", "classes[2].joints: Input should be a valid dictionary"),
        ("text too long", "at most 8000 characters"),
        ("too many key parts", "classes[2].key_body_parts: List should have at most 50 items"),
        ("empty text", "at least 1 character"),
        ("unknown class", "class 'A500' is not in dataset ntu120"),
        ("unknown joint", "unknown joint 'left tail'"),
        ("duplicate joint", "joint 'HandLeft' is given twice"),
        ("duplicate class", "class A1 appears twice"),
        ("other dataset", "the file is for dataset 'ntu60'"),
        ("wrong format", "format: Input should be 'kbgen-knowledge-base'"),
    ],
)
def test_import_rejects_bad_files_and_stores_nothing(exported: Path, case: str, expected: str) -> None:
    document = json.loads(exported.read_text(encoding="utf-8"))
    # A changed first class proves atomicity: it would be saved if the import were not all-or-nothing.
    document["classes"][0]["global"] = "a change that must not be stored"
    exported.write_text(json.dumps(_mutate(document, case)), encoding="utf-8")
    before = count_descriptions()
    result = kbgen("import", str(exported), "-d", "ntu120")
    assert result.exit_code == 1
    assert expected in result.stderr.replace("\n", " ") and "Traceback" not in result.output
    assert count_descriptions() == before


def test_import_refuses_huge_and_broken_files(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kbfile, "MAX_FILE_BYTES", 100)
    result = kbgen("import", str(exported), "-d", "ntu120")
    assert result.exit_code == 1 and "larger than the 100 byte limit" in result.stderr
    monkeypatch.undo()
    exported.write_text('{"format": "kbgen-knowledge-base",', encoding="utf-8")
    result = kbgen("import", str(exported), "-d", "ntu120")
    assert result.exit_code == 1 and "not valid JSON (line 1" in result.stderr
    result = kbgen("import", str(exported.with_name("absent.json")), "-d", "ntu120")
    assert result.exit_code == 1 and "no such file" in result.stderr

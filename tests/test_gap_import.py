"""The GAP importer: parsing, label matching, storing with provenance; on the real files when present."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import shared_path
from store_helpers import kbgen

from dataspec import load_spec
from kbgen.importers.gap import (
    gap_part_of_joint,
    import_gap,
    key_body_parts,
    match_labels,
    read_pasta,
)
from kbgen.keyjoints.lexicon import load_lexicon
from kbgen.store import db, repo

NTU = load_spec("ntu120")
UCLA = load_spec("nwucla")


def write_gap(folder: Path, sentences: list[str], pasta: list[str], prefix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}sentence_openai_t01.txt").write_text("\n".join(sentences) + "\n")
    (folder / f"{prefix}pasta_openai_t01.txt").write_text("\n".join(pasta))
    return folder


# ----------------------------------------------------------------------------- units


def test_pasta_lines_give_six_parts_and_malformed_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "pasta.txt"
    path.write_text(
        "drink water;head tilts back; hand grasps cup;arm lifts cup; hip remains stationary;"
        " leg: stays; foot still.\n"
        "broken;head only; hand\n"
    )
    entries, problems = read_pasta(path)
    assert [e.label for e in entries] == ["drink water"]
    assert entries[0].fields == (
        "head tilts back",
        "hand grasps cup",
        "arm lifts cup",
        "hip remains stationary",
        "stays",
        "foot still",
    )
    assert problems == ["pasta.txt:2: expected 6 body-part texts, found 2"]


def test_key_body_parts_leave_out_still_parts() -> None:
    parts = (
        "head tilts back",
        "hand grasps cup",
        "arm lifts cup",
        "hip doesn't move",
        "legs stay in place",
        "stands still on foot",
    )
    assert key_body_parts(parts, load_lexicon()) == ["head", "hand", "arm"]


def test_joints_take_the_text_of_their_body_part() -> None:
    by_name = {j.name: gap_part_of_joint(NTU, j.index) for j in NTU.joints}
    assert by_name["head"] == by_name["neck"] == "head"
    assert by_name["left thumb"] == by_name["right hand"] == "hand"
    assert by_name["left elbow"] == "arm"
    assert by_name["left hip"] == by_name["base of the spine"] == by_name["middle of the spine"] == "hip"
    assert by_name["left knee"] == "leg" and by_name["right foot"] == "foot"
    assert {gap_part_of_joint(UCLA, j.index) for j in UCLA.joints} == {
        "head",
        "hand",
        "arm",
        "hip",
        "leg",
        "foot",
    }


def test_labels_match_by_name_label_map_then_similar_name() -> None:
    label_map = ["drink water", "eat meal", "brush teeth"]
    matched, unmatched = match_labels(
        ["drink water", "eat meal", "brushing the teeth", "moonwalk"], NTU, label_map
    )
    assert matched["drink water"] == ("A1", "name")
    assert matched["eat meal"] == ("A2", "label map")
    assert matched["brushing the teeth"] == ("A3", "similar name")
    assert unmatched == ["moonwalk"]


def test_import_stores_texts_with_provenance_and_is_idempotent(tmp_path: Path) -> None:
    folder = write_gap(
        tmp_path / "gap",
        ["drink water,He drinks from a cup with his right hand.", "moonwalk,He glides backwards."],
        [
            "drink water;head tilts back;hand grasps cup;arm lifts cup;"
            "hip remains stationary;leg still;foot still"
        ],
    )
    with db.session_scope() as s:
        report = import_gap(s, NTU, folder)
    assert report.classes == 1 and report.stored == 1 + 25 and report.unmatched_labels == ["moonwalk"]
    assert len(report.classes_without_text) == 119
    with db.session_scope() as s:
        cls = repo.get_class(s, "ntu120", "A1")
        glob = repo.current_description(s, cls, "global")
        assert glob.source == "import" and glob.key_body_parts == ["head", "hand", "arm"]
        assert glob.provenance["file"] == "sentence_openai_t01.txt" and glob.provenance["line"] == 1
        hand = repo.current_description(s, cls, "joint", NTU.joint_index("right hand"))
        assert hand.text == "hand grasps cup" and hand.provenance["part"] == "hand"
        assert hand.provenance["file"] == "pasta_openai_t01.txt"
    with db.session_scope() as s:
        again = import_gap(s, NTU, folder)
    assert again.stored == 0 and again.unchanged == 26


def test_cli_import_gap_reports_unmatched_labels(tmp_path: Path) -> None:
    folder = write_gap(tmp_path / "gap", ["drink water,He drinks.", "moonwalk,He glides."], [])
    result = kbgen("import", "--format", "gap", "-d", "ntu120", str(folder))
    assert result.exit_code == 0, result.output
    assert "1 classes, 1 texts saved" in result.stdout
    assert "1 GAP labels match no class of ntu120: moonwalk" in result.output
    missing = kbgen("import", "--format", "gap", "-d", "ntu120", str(tmp_path / "nope"))
    assert missing.exit_code == 1 and "is not a folder" in missing.output
    unknown = kbgen("import", "--format", "xml", "-d", "ntu120", str(folder))
    assert unknown.exit_code != 0


# ----------------------------------------------------------------------------- real GAP files


def test_real_ntu120_files_import_every_class_and_put_the_mass_where_a_person_would() -> None:
    folder = shared_path("reference", "gap_text")
    with db.session_scope() as s:
        report = import_gap(s, NTU, folder)
    assert report.prefix == "" and report.classes == 120
    assert report.unmatched_labels == [] and report.classes_without_text == [] and report.malformed == []
    assert report.stored == 120 * 26
    assert report.matched_by == {"name": 61, "label map": 59}
    with db.session_scope() as s:
        kb = repo.current_kb(s, repo.get_class(s, "ntu120", "A1"))
        assert kb.complete and kb.global_text.startswith("The man is drinking water")
        assert kb.key_body_parts == ["head", "hand", "arm"]
        kick = repo.current_kb(s, repo.get_class(s, "ntu120", "A24"))
        assert {"leg", "foot"} <= set(kick.key_body_parts)

    result = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy", "--classes", "A1,A24,A51,A36")
    assert result.exit_code == 0, result.output

    def weights(cid: str) -> dict[str, float]:
        return json.loads(kbgen("show", cid, "-d", "ntu120", "--json").stdout)["key_joints"]

    def mass(w: dict[str, float], parts: set[str]) -> float:
        return sum(w[j.name] for j in NTU.joints if j.part in parts)

    drink = weights("A1")
    assert mass(drink, {"hand", "arm", "head"}) > 0.9
    assert drink["left hip"] == drink["left knee"] == 0  # "hip/leg remains stationary"
    for kick in (weights("A24"), weights("A51")):
        assert mass(kick, {"leg", "foot"}) > 0.5
    shake = weights("A36")
    assert max(shake, key=shake.get) == "head"


def test_real_files_give_ntu60_its_60_classes_and_report_the_rest() -> None:
    folder = shared_path("reference", "gap_text")
    with db.session_scope() as s:
        report = import_gap(s, load_spec("ntu60"), folder)
    assert report.classes == 60 and report.classes_without_text == []
    assert len(report.unmatched_labels) == 60 and "put on headphone" in report.unmatched_labels


def test_real_nwucla_files_use_the_ucla_prefix() -> None:
    folder = shared_path("reference", "gap_text")
    with db.session_scope() as s:
        report = import_gap(s, UCLA, folder)
    assert report.prefix == "ucla_" and report.classes == 10 and report.unmatched_labels == []
    assert report.matched_by == {"name": 10}

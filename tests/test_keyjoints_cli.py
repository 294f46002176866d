"""kbgen keyjoints / --explain / plot / show --json through the CLI, on a per-test database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy import func, select
from store_helpers import kbgen, seed_dataset

from kbgen.store import db, repo
from kbgen.store.models import KeyjointDistribution

TEXTS = {
    "A1": (
        "He lifts the glass with his right hand to his mouth. His legs remain stationary.",
        ["hand", "arm"],
    ),
    "A24": ("He swings his right leg and kicks the ball with his foot.", ["leg", "foot"]),
    "A7": ("A ball flies across the room.", []),
}


def seed(texts: dict = TEXTS) -> None:
    seed_dataset("ntu120")
    with db.session_scope() as s:
        for cid, (text, parts) in texts.items():
            repo.save_description(
                s, repo.get_class(s, "ntu120", cid), "global", None, text, "llm", key_body_parts=parts
            )


def distributions() -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(KeyjointDistribution))


def flags() -> dict[str, str]:
    rows = json.loads(kbgen("list", "-d", "ntu120", "--json").stdout)
    return {r["class_id"]: r["key_joints"] for r in rows if r["class_id"] in TEXTS}


def test_keyjoints_computes_stores_and_flags_uniform_rows() -> None:
    seed()
    result = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    assert result.exit_code == 0, result.output
    assert "computed 3" in result.stdout and "117 without a global description" in result.stdout
    assert "uniform (no body part found): A7" in result.stdout
    assert flags() == {"A1": "ok", "A24": "ok", "A7": "uniform"}
    with db.session_scope() as s:
        row = repo.current_keyjoints(s, repo.get_class(s, "ntu120", "A1"))
        assert row.backend == "spacy" and row.backend_version.startswith("spacy ")
        assert row.method.startswith("np-lexicon-v2") and len(row.lexicon_sha256) == 64
        assert row.source_description.version == 1
        assert any(p["phrase"] == "His legs" and p["negated"] for p in row.phrases)


def test_only_missing_or_stale_rows_are_recomputed_unless_all() -> None:
    seed()
    kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    again = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    assert "computed 0" in again.stdout and "3 already up to date" in again.stdout
    assert distributions() == 3

    edited = kbgen("set", "A24", "-d", "ntu120", "--global", "He stamps with his left foot.")
    assert edited.exit_code == 0, edited.output
    assert flags()["A24"] == "stale"
    after_edit = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    assert "computed 1" in after_edit.stdout
    assert flags()["A24"] == "ok"
    shown = json.loads(kbgen("show", "A24", "-d", "ntu120", "--json").stdout)
    assert shown["key_joints"]["left foot"] > shown["key_joints"]["right knee"]

    forced = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy", "--all", "--classes", "A1,A7")
    assert "computed 2" in forced.stdout
    assert distributions() == 6  # old rows stay as history, one current per class
    with db.session_scope() as s:
        current = s.scalar(select(func.count()).where(KeyjointDistribution.is_current.is_(True)))
    assert current == 3


def test_changed_parameters_make_rows_out_of_date() -> None:
    seed()
    kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    smoothed = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy", "--smoothing", "0.1")
    assert "computed 3" in smoothed.stdout


def test_show_json_gives_key_joints_by_name() -> None:
    seed()
    before = json.loads(kbgen("show", "A1", "-d", "ntu120", "--json").stdout)
    assert before["key_joints"] is None
    kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    shown = json.loads(kbgen("show", "A1", "-d", "ntu120", "--json").stdout)
    weights = shown["key_joints"]
    assert list(weights)[:2] == ["base of the spine", "middle of the spine"] and len(weights) == 25
    assert abs(sum(weights.values()) - 1) < 1e-4
    assert weights["right hand"] > weights["left hand"] > 0  # "right hand" mention + unsided key part
    assert weights["left knee"] == 0  # "His legs remain stationary"


def test_explain_lists_phrases_and_joints() -> None:
    seed()
    fresh = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy", "--explain", "A001")
    assert fresh.exit_code == 0, fresh.output
    assert "computed now (missing" in fresh.stdout
    assert "his right hand" in fresh.stdout and "tip of the right hand" in fresh.stdout
    assert "negated" in fresh.stdout
    kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    stored = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy", "--explain", "A1")
    assert "stored, spacy" in stored.stdout and "Top joints: right hand" in stored.stdout


def test_explain_without_text_is_one_clear_error() -> None:
    seed()
    result = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy", "--explain", "A9")
    assert result.exit_code == 1
    assert "A9 has no global description" in result.output and "Traceback" not in result.output


def test_unavailable_backend_is_one_clear_error(tmp_path: Path) -> None:
    seed()
    result = kbgen("keyjoints", "-d", "ntu120", "--backend", "stanza", "--stanza-dir", str(tmp_path))
    assert result.exit_code == 1 and "use --backend spacy" in result.output


def test_plot_draws_stored_rows_and_refuses_missing_ones(tmp_path: Path) -> None:
    seed()
    missing = kbgen("plot", "A1", "-d", "ntu120", "-o", str(tmp_path / "x.png"))
    assert missing.exit_code == 1 and "run `kbgen keyjoints --dataset ntu120` first" in missing.output
    kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    out = tmp_path / "plots" / "k.png"
    result = kbgen("plot", "A1", "A24", "A7", "-d", "ntu120", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    bad = kbgen("plot", "A1", "-d", "ntu120", "-o", str(tmp_path / "x.jpg"))
    assert bad.exit_code != 0 and "must end in .png, .svg or .pdf" in bad.output


def test_keyjoints_and_plot_have_help_and_are_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for command in ("keyjoints", "plot"):
        result = kbgen(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.stdout, command
        assert f"kbgen {command}" in readme
    assert "kbgen import --format gap" in readme


def test_a_changed_lexicon_makes_rows_out_of_date(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    shutil.copytree(Path(__file__).resolve().parent.parent / "data", data)
    monkeypatch.setenv("CROSSGLG_DATA", str(data))
    seed()
    kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    lexicon = data / "lexicon" / "body_parts.yaml"
    lexicon.write_text(lexicon.read_text() + "\n# a reviewed edit\n")
    result = kbgen("keyjoints", "-d", "ntu120", "--backend", "spacy")
    assert "computed 3" in result.stdout

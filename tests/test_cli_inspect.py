"""kbgen list/show/edit/set/history/logs/db through Typer's CliRunner, on a per-test database."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from store_helpers import count_descriptions, fill_class, kbgen, seed_dataset

from kbgen.store import db, repo

# A stand-in for $EDITOR: writes $EDIT_TO into the file, rewrites it unchanged with "=keep",
# or leaves it untouched (no save) with "=nosave".
EDITOR_SCRIPT = """
import os, sys
path, mode = sys.argv[1], os.environ["EDIT_TO"]
if mode == "=nosave":
    sys.exit(0)
text = open(path, encoding="utf-8").read() if mode == "=keep" else mode
os.utime(path, (0, 0))  # make sure the mtime changes even within the same second
with open(path, "w", encoding="utf-8") as f:
    f.write(text)
"""


@pytest.fixture
def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = tmp_path / "fake_editor.py"
    script.write_text(EDITOR_SCRIPT)
    monkeypatch.setenv("EDITOR", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    monkeypatch.delenv("VISUAL", raising=False)

    def run(*args: str, to: str):
        return kbgen("edit", *args, env={"EDIT_TO": to})

    return run


def test_show_json_has_the_contract_keys() -> None:
    seed_dataset()
    fill_class("ntu120", "A1")
    result = kbgen("show", "A001", "--dataset", "ntu120", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["class_id", "name", "global", "key_body_parts", "joints", "key_joints"]
    assert data["class_id"] == "A1" and data["name"] == "drink water"
    assert data["global"] == "global of A1" and data["key_body_parts"] == ["arm", "hand"]
    assert len(data["joints"]) == 25 and data["joints"]["right hand"] == "right hand moves in A1"


def test_show_table_marks_missing_joints() -> None:
    seed_dataset()
    kbgen("set", "A7", "-d", "ntu120", "--joint", "right hand", "--text", "throws the ball")
    result = kbgen("show", "A7", "-d", "ntu120")
    assert result.exit_code == 0, result.output
    assert "throws the ball" in result.stdout and "(missing)" in result.stdout and "partial" in result.stdout


def test_list_reports_status_source_and_key_joint_flag() -> None:
    seed_dataset("nwucla")
    fill_class("nwucla", "a01")
    kbgen("set", "a02", "-d", "nwucla", "--global", "pick up a box with both hands")
    result = kbgen("list", "-d", "nwucla", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["class_id"]: r for r in json.loads(result.stdout)}
    assert len(rows) == 10
    assert (rows["a01"]["status"], rows["a01"]["joints_described"], rows["a01"]["num_joints"]) == (
        "complete",
        20,
        20,
    )
    assert rows["a02"]["status"] == "partial" and rows["a02"]["sources"] == ["edit"]
    assert rows["a03"]["status"] == "missing" and rows["a03"]["last_change"] is None
    assert rows["a01"]["key_joints"] == "none"
    table = kbgen("list", "-d", "nwucla").stdout
    assert "1 complete, 1 partial, 8 missing" in table and "20/20" in table
    missing = json.loads(kbgen("list", "-d", "nwucla", "--status", "missing", "--json").stdout)
    assert len(missing) == 8 and {r["status"] for r in missing} == {"missing"}
    assert "1 partial classes" in kbgen("list", "-d", "nwucla", "--status", "partial").stdout
    assert kbgen("list", "-d", "nwucla", "--status", "done").exit_code == 2


def test_edit_saves_a_new_current_version(editor) -> None:
    seed_dataset()
    fill_class("ntu120", "A1")
    result = editor("A1", "-d", "ntu120", to="Lift a glass to the mouth and drink.\n# a comment line\n")
    assert result.exit_code == 0, result.output
    assert "version 2" in result.stdout
    with db.session_scope() as s:
        rows = repo.history(s, repo.get_class(s, "ntu120", "A1"), kind="global")
        assert [(r.version, r.is_current, r.source) for r in rows] == [(1, False, "llm"), (2, True, "edit")]
        assert rows[1].text == "Lift a glass to the mouth and drink."
        assert rows[1].key_body_parts == ["arm", "hand"]  # kept from the previous version
    result = editor("A1", "-d", "ntu120", "--joint", "HandRight", to="The right hand grips the glass.")
    assert result.exit_code == 0, result.output
    data = json.loads(kbgen("show", "A1", "-d", "ntu120", "--json").stdout)
    assert data["joints"]["right hand"] == "The right hand grips the glass."


@pytest.mark.parametrize(
    ("to", "message"),
    [("=keep", "Unchanged"), ("", "Empty"), ("# only a comment\n\n", "Empty"), ("=nosave", "Empty")],
)
def test_edit_unchanged_or_empty_saves_nothing(editor, to: str, message: str) -> None:
    seed_dataset()
    fill_class("ntu120", "A1")
    before = count_descriptions()
    result = editor("A1", "-d", "ntu120", to=to)
    assert result.exit_code == 0, result.output
    assert message in result.stdout and "nothing saved" in result.stdout
    assert count_descriptions() == before


def test_edit_without_a_working_editor_is_one_line(monkeypatch) -> None:
    seed_dataset()
    monkeypatch.setenv("EDITOR", "/nonexistent/editor-binary")
    result = kbgen("edit", "A1", "-d", "ntu120")
    assert result.exit_code == 1
    assert "EDITOR" in result.stderr and "Traceback" not in result.output


def test_set_and_history() -> None:
    seed_dataset()
    assert (
        kbgen("set", "A7", "-d", "ntu120", "--global", "throw a ball", "--key-parts", "arm, hand").exit_code
        == 0
    )
    assert kbgen("set", "A7", "-d", "ntu120", "--global", "throw a ball overarm").exit_code == 0
    same = kbgen("set", "A7", "-d", "ntu120", "--global", "throw a ball overarm")
    assert "unchanged; nothing saved" in same.stdout
    assert kbgen("set", "A7", "-d", "ntu120", "--joint", "right elbow", "--text", "extends").exit_code == 0
    result = kbgen("history", "A7", "-d", "ntu120", "--json")
    rows = json.loads(result.stdout)
    assert [(r["joint"], r["version"], r["current"]) for r in rows] == [
        (None, 1, False),
        (None, 2, True),
        ("right elbow", 1, True),
    ]
    assert rows[1]["key_body_parts"] == ["arm", "hand"] and rows[0]["provenance"] == {"via": "kbgen set"}
    only_joint = json.loads(kbgen("history", "A7", "-d", "ntu120", "--joint", "ElbowRight", "--json").stdout)
    assert [r["text"] for r in only_joint] == ["extends"]
    assert "overarm" in kbgen("history", "A7", "-d", "ntu120").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["set", "A7", "-d", "ntu120"],
        ["set", "A7", "-d", "ntu120", "--joint", "right hand"],
        ["set", "A7", "-d", "ntu120", "--global", "x", "--joint", "right hand", "--text", "y"],
        ["set", "A7", "-d", "ntu120", "--joint", "right hand", "--text", "y", "--key-parts", "arm"],
    ],
)
def test_set_refuses_ambiguous_options(args: list[str]) -> None:
    result = kbgen(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["show", "A999", "-d", "ntu120"], "class 'A999' is not in dataset ntu120"),
        (["show", "A1", "-d", "nosuch"], "no dataset spec 'nosuch'"),
        (["set", "A1", "-d", "ntu120", "--joint", "tail", "--text", "wags"], "unknown joint 'tail'"),
        (["set", "A1", "-d", "ntu120", "--global", "   "], "cannot be empty"),
        (["logs", "--class", "7"], "is not a class id"),
    ],
)
def test_user_errors_are_one_line(args: list[str], expected: str) -> None:
    seed_dataset()
    result = kbgen(*args)
    assert result.exit_code == 1
    assert expected in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 or expected in result.stderr.replace("\n", " ")


def _log_calls() -> None:
    seed_dataset()
    seed_dataset("ntu60")
    with db.session_scope() as s:
        template = repo.ensure_template(s, "joint_motion", "How does each joint move in {action}?")
        a1, a7 = repo.get_class(s, "ntu120", "A1"), repo.get_class(s, "ntu120", "A7")
        other = repo.get_class(s, "ntu60", "A1")
        for cls, status, error in [
            (a1, "error", "HTTP 500 from the endpoint"),
            (a1, "ok", None),
            (a7, "invalid", "missing joint 'neck'"),
            (a7, "ok", None),
            (other, "ok", None),
        ]:
            repo.record_call(
                s, class_row=cls, kind="joints", rendered_prompt=f"prompt for {cls.name}", status=status,
                error=error, template=template, model="smollm2", endpoint="http://127.0.0.1:5001/v1",
                prompt_tokens=100, completion_tokens=50, latency_s=0.5, raw_answer='{"joints": []}',
            )  # fmt: skip


def test_logs_filters_and_json() -> None:
    _log_calls()
    rows = json.loads(kbgen("logs", "--json").stdout)
    assert [r["id"] for r in rows] == [5, 4, 3, 2, 1]
    assert rows[0]["rendered_prompt"] == "prompt for drink water" and rows[0]["template"] == "joint_motion"
    assert rows[0]["endpoint_host"] == "127.0.0.1:5001"
    assert len(json.loads(kbgen("logs", "-n", "2", "--json").stdout)) == 2
    a7 = json.loads(kbgen("logs", "--class", "A007", "--json").stdout)
    assert [(r["class_id"], r["status"]) for r in a7] == [("A7", "ok"), ("A7", "invalid")]
    failed = json.loads(kbgen("logs", "--failed", "--json").stdout)
    assert {r["status"] for r in failed} == {"error", "invalid"}
    a1_all = json.loads(kbgen("logs", "--class", "A1", "--json").stdout)
    assert {r["dataset"] for r in a1_all} == {"ntu60", "ntu120"}
    a1_ntu60 = json.loads(kbgen("logs", "--class", "A1", "-d", "ntu60", "--json").stdout)
    assert [r["dataset"] for r in a1_ntu60] == ["ntu60"]
    table = kbgen("logs", "--failed").stdout
    assert "#1 HTTP 500 from the endpoint" in table and "missing joint" in table and "#2" not in table


def test_db_commands(_isolated_home: Path) -> None:
    assert kbgen("db", "path").stdout.strip() == str(_isolated_home / "kbgen.db")
    assert "blank" in kbgen("db", "current").stdout
    assert kbgen("db", "upgrade").stdout.strip().endswith("at revision 0002 (head)")
    assert kbgen("db", "current").stdout.strip() == "0002 (head)"
    other = _isolated_home / "elsewhere.db"
    assert kbgen("db", "path", "--db", str(other)).stdout.strip() == str(other)
    assert (
        kbgen("db", "path", "--db", "postgresql://kb:pw@dbhost/kb").stdout.strip()
        == "postgresql://kb:***@dbhost/kb"
    )


def test_a_database_from_a_newer_kbgen_is_one_line(_isolated_home: Path) -> None:
    from sqlalchemy import text

    assert kbgen("db", "upgrade").exit_code == 0
    with db.make_engine(f"sqlite:///{_isolated_home / 'kbgen.db'}").begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    db.dispose_all()  # a new process would not have the engine cached
    assert "unknown to this kbgen" in kbgen("db", "current").stdout
    result = kbgen("list", "-d", "ntu120")
    assert result.exit_code == 1 and "revision 0099, which this kbgen does not know" in result.stderr
    assert "Traceback" not in result.output

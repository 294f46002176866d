"""kbgen on a real PostgreSQL server: migrations, generate, inspection, edits, transfer, concurrency.

A throwaway server from the ``pgserver`` wheel (PostgreSQL binaries in a pip package; as root it
runs the server as a system user ``pgserver`` that it creates) lives for this module in a temp
dir and listens on a Unix socket only; each test gets a fresh database and points ``KBGEN_DB``
at it (``postgresql+psycopg://``). Everything goes through kbgen's real code paths: the CLI
(in process, or as child processes for the concurrency test) and the store functions. The
module skips, with the reason, when pgserver or psycopg is missing or the server cannot start.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from reliability_helpers import KBGEN, finish_all, start_cli
from sqlalchemy import create_engine, func, inspect, select
from sqlalchemy.engine import URL
from store_helpers import count_descriptions, kbgen, seed_dataset

from dataspec import load_spec
from kbgen.store import db, repo
from kbgen.store.migrate import head_revision
from kbgen.store.models import Base, Description, LlmCall
from kbgen.testing.fake_openai import FakeOpenAIServer

try:
    import psycopg  # noqa: F401  (the driver of postgresql+psycopg:// URLs)

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then uses /tmp.
        warnings.simplefilter("ignore")
        import pgserver
except ImportError as exc:
    pytest.skip(
        f"pgserver or psycopg cannot be imported ({exc}): pip install -e '.[dev]'", allow_module_level=True
    )

NWUCLA = load_spec("nwucla")
TEXTS_PER_CLASS = 1 + NWUCLA.num_joints
KEY = "sk-test-postgres-0123456789"
_database_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL server for this module, stopped and deleted at its end; skips if it cannot start."""
    pgdata = tmp_path_factory.mktemp("postgres") / "pgdata"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(pgdata, cleanup_mode="delete")
    except Exception as exc:  # any reason at all: no server, no test
        pytest.skip(f"cannot start a PostgreSQL server with pgserver: {exc.__class__.__name__}: {exc}")
    try:
        yield server
    finally:
        server.cleanup()


def _url(server: Any, database: str) -> str:
    socket_dir = str(server.get_postmaster_info().socket_dir)
    url = URL.create("postgresql+psycopg", username="postgres", database=database, query={"host": socket_dir})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def pg_url(postgres: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database on the server; ``KBGEN_DB`` points at it for this test."""
    name = f"kbgen_test_{next(_database_numbers)}"
    admin = create_engine(_url(postgres, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = _url(postgres, name)
    monkeypatch.setenv("KBGEN_DB", url)
    try:
        yield url
    finally:
        db.dispose_all()


def _ok(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``kbgen args...`` in process, check that it succeeded, return its stdout."""
    result = kbgen(*args, env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def _generate(server: FakeOpenAIServer, *classes: str) -> str:
    return _ok(
        *("generate", "-d", "nwucla", "--classes", ",".join(classes)),
        *("--base-url", server.base_url, "--model", "fake"),
        env={"OPENAI_API_KEY": KEY},
    )


def test_a_blank_database_is_migrated_to_head_without_drift(pg_url: str) -> None:
    assert "blank" in _ok("db", "current")
    _ok("db", "upgrade")
    assert _ok("db", "current").strip() == f"{head_revision()} (head)"
    engine = db.get_engine()
    assert engine.dialect.name == "postgresql"
    assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
    # The partial unique indexes that keep one current version per text exist as such.
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("descriptions")}
    current_global = indexes["uq_descriptions_current_global"]
    assert current_global["unique"] and "is_current" in current_global["dialect_options"]["postgresql_where"]
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_generate_inspect_edit_and_transfer_on_postgres(pg_url: str, tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        out = _generate(server, "a01", "a02", "a03")
    assert "3 done, 0 failed" in out and KEY not in out

    listed = {row["class_id"]: row for row in json.loads(_ok("list", "-d", "nwucla", "--json"))}
    assert len(listed) == NWUCLA.num_classes
    assert [c for c, row in listed.items() if row["status"] == "complete"] == ["a01", "a02", "a03"]
    assert listed["a02"]["joints_described"] == NWUCLA.num_joints and listed["a02"]["sources"] == ["llm"]
    assert listed["a04"]["status"] == "missing"

    shown = json.loads(_ok("show", "-d", "nwucla", "a1", "--json"))
    assert shown["class_id"] == "a01" and shown["name"] == NWUCLA.classes[0].name
    assert list(shown["joints"]) == [j.name for j in NWUCLA.joints] and shown["global"]

    # An edit and a `kbgen edit` (a stand-in editor that overwrites the file) make versions 2 and 3.
    out = _ok("set", "a01", "-d", "nwucla", "--global", "Bend and pick it up.", "--key-parts", "hand, arm")
    assert "version 2" in out
    editor = 'sh -c \'printf "Reach down, then lift.\\n" > "$0" && touch -d @1 "$0"\''
    _ok("edit", "a01", "-d", "nwucla", env={"EDITOR": editor, "VISUAL": editor})
    versions = json.loads(_ok("history", "a01", "-d", "nwucla", "--global", "--json"))
    assert [(v["version"], v["source"], v["current"]) for v in versions] == [
        (1, "llm", False),
        (2, "edit", False),
        (3, "edit", True),
    ]
    assert versions[1]["key_body_parts"] == ["hand", "arm"]
    assert versions[2]["text"] == "Reach down, then lift."
    assert json.loads(_ok("show", "-d", "nwucla", "a01", "--json"))["global"] == "Reach down, then lift."
    assert count_descriptions() == 3 * TEXTS_PER_CLASS + 2

    # export -> import into another PostgreSQL database gives the same knowledge base.
    exported = tmp_path / "nwucla.json"
    _ok("export", "-d", "nwucla", "-o", str(exported))
    assert "0 texts saved" in _ok("import", "-d", "nwucla", str(exported))  # same database: unchanged
    other = f"{pg_url.split('?')[0]}_copy"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {other.rsplit('/', 1)[1]}")
    admin.dispose()
    other_url = f"{other}?{pg_url.split('?')[1]}"
    out = _ok("import", "-d", "nwucla", str(exported), "--db", other_url)
    assert f"{3 * TEXTS_PER_CLASS} texts saved" in out
    again = tmp_path / "again.json"
    _ok("export", "-d", "nwucla", "-o", str(again), "--db", other_url)
    assert json.loads(again.read_text()) == json.loads(exported.read_text())
    assert json.loads(_ok("show", "-d", "nwucla", "a01", "--json", "--db", other_url))["global"] == (
        "Reach down, then lift."
    )

    (run,) = json.loads(_ok("runs", "--json"))
    assert (run["kind"], run["dataset"], run["status"], run["model"]) == ("generate", "nwucla", "ok", "fake")
    assert (run["calls"], run["ok_calls"]) == (6, 6) and run["params"]["classes"] == ["a01", "a02", "a03"]
    assert run["finished_at"] >= run["started_at"] and run["summary"]["done"] == 3
    assert KEY not in json.dumps(run)

    calls = json.loads(_ok("logs", "-n", "0", "--json"))
    assert len(calls) == 6 and KEY not in json.dumps(calls)
    assert sorted((c["class_id"], c["kind"]) for c in calls) == sorted(
        (c, k) for c in ("a01", "a02", "a03") for k in ("global", "joints")
    )
    assert all(c["status"] == "ok" and c["raw_answer"] for c in calls)
    table = _ok("logs", "-n", "2", "-c", "a02")
    assert "nwucla/a02" in table and "nwucla/a01" not in table


def test_two_writers_of_one_text_wait_for_each_other(pg_url: str) -> None:
    """The second writer waits for the first one's commit, then saves version 2 (no unique violation)."""
    seed_dataset("nwucla")
    first = db.session_factory()()
    repo.save_description(first, repo.get_class(first, "nwucla", "a01"), "global", None, "first", "edit")
    outcome: dict[str, Any] = {}

    def second_writer() -> None:
        try:
            with db.session_scope() as s:
                row = repo.get_class(s, "nwucla", "a01")
                saved = repo.save_description(s, row, "global", None, "second", "edit")
                outcome["version"] = saved.version if saved is not None else None
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=second_writer)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), outcome  # waiting for the first writer
    first.commit()
    first.close()
    thread.join(30)
    assert outcome == {"version": 2}
    with db.session_scope() as s:
        versions = repo.history(s, repo.get_class(s, "nwucla", "a01"), kind="global")
        saved = [(v.version, v.text, v.is_current) for v in versions]
    assert saved == [(1, "first", False), (2, "second", True)]


def _ok_calls(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(LlmCall).where(LlmCall.status == "ok"))
    except Exception:  # not migrated yet
        return 0
    finally:
        engine.dispose()


def test_two_generators_and_edits_into_one_fresh_database(pg_url: str) -> None:
    """Both generators race to create the schema; edits land while they answer. Nothing is lost."""
    halves = [",".join(NWUCLA.class_ids[:5]), ",".join(NWUCLA.class_ids[5:])]
    edited = [NWUCLA.class_ids[i] for i in (0, 4, 5, 9)]
    with FakeOpenAIServer(delay_s=0.2) as server:
        generators = [
            start_cli(KBGEN, "generate", "-d", "nwucla", "--classes", classes, "-j", "2", "--base-url",
                      server.base_url, "--model", "fake", "--timeout", "10", OPENAI_API_KEY=KEY)
            for classes in halves
        ]  # fmt: skip
        deadline = time.monotonic() + 120
        while _ok_calls(pg_url) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        edits = [
            start_cli(KBGEN, "set", class_id, "-d", "nwucla", "--joint", "left hand",
                      "--text", f"Edited while generating: {class_id}.")
            for class_id in edited
        ]  # fmt: skip
        results = finish_all(generators + edits)
    assert [code for code, _, _ in results] == [0] * len(results), [err[-1500:] for _, _, err in results]

    expected_texts = NWUCLA.num_classes * TEXTS_PER_CLASS
    with db.session_scope() as s:
        per_text = s.execute(
            select(
                Description.class_pk,
                Description.kind,
                Description.joint_position,
                func.count(),
                func.count().filter(Description.is_current),
                func.count(func.distinct(Description.version)),
            ).group_by(Description.class_pk, Description.kind, Description.joint_position)
        ).all()
        assert len(per_text) == expected_texts
        # One current version per text, and versions numbered without duplicates.
        assert all(current == 1 and distinct == total for _, _, _, total, current, distinct in per_text)
        assert sum(row[3] for row in per_text) == expected_texts + len(edited)
        edits_saved = s.execute(
            select(Description.text).where(Description.source == "edit").order_by(Description.text)
        ).scalars()
        assert list(edits_saved) == sorted(f"Edited while generating: {c}." for c in edited)
        assert s.scalar(select(func.count()).select_from(LlmCall).where(LlmCall.status == "ok")) == (
            2 * NWUCLA.num_classes
        )
    runs = json.loads(_ok("runs", "--json"))
    assert sorted(r["status"] for r in runs) == ["ok", "ok"] and {r["ok_calls"] for r in runs} == {10}
    assert _ok("db", "current").strip() == f"{head_revision()} (head)"

"""``kbgen runs`` and dead-run detection: migration 0002 (run owner), a SIGKILLed generate, hosts."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import types
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from reliability_helpers import KBGEN, cli_env, run_cli
from sqlalchemy import select, text
from store_helpers import kbgen, seed_dataset

from kbgen.store import db, owner, repo
from kbgen.store.db import make_engine
from kbgen.store.migrate import alembic_config, head_revision
from kbgen.store.models import Run, utcnow
from kbgen.testing.fake_openai import FakeOpenAIServer, Reply

HOST = owner.this_host()


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _add_running(pid: int | None, hostname: str | None, url: str | None = None) -> int:
    """A ``running`` generate row of ntu120 with this owner; returns its id."""
    with db.session_scope(url) as s:
        run = Run(
            dataset_id=repo.get_dataset(s, "ntu120").id,
            kind="generate",
            status="running",
            params={},
            pid=pid,
            hostname=hostname,
        )
        s.add(run)
        s.flush()
        return run.id


def _statuses(url: str | None = None) -> dict[int, str]:
    with db.session_scope(url) as s:
        return {r.id: r.status for r in s.scalars(select(Run))}


def _runs_json(*args: str) -> list[dict]:
    result = kbgen("runs", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- migration 0002


def test_a_0001_database_with_runs_is_upgraded_in_place(tmp_path: Path) -> None:
    dbfile = tmp_path / "old.db"
    url = f"sqlite:///{dbfile}"
    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(url, connection=conn), "0001")
        conn.execute(
            text(
                "INSERT INTO datasets (name, title, spec_sha256, num_joints, created_at) "
                "VALUES ('ntu120', 'NTU', 'abc', 25, '2026-01-01 10:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO runs (dataset_id, kind, started_at, finished_at, model, endpoint_host, params, "
                "status, summary) VALUES (1, 'generate', '2026-01-01 10:00:00', NULL, 'old-model', "
                "'127.0.0.1:8080', '{\"force\": false}', 'running', NULL)"
            )
        )
    engine.dispose()
    assert kbgen("db", "current", "--db", str(dbfile)).stdout.startswith("0001 (newest is 0002")

    # Any command upgrades once, at start; a row from before 0002 has no owner and is shown as is.
    rows = _runs_json("--db", str(dbfile))
    assert head_revision() == "0002"
    assert kbgen("db", "current", "--db", str(dbfile)).stdout.strip() == "0002 (head)"
    assert [(r["id"], r["status"], r["pid"], r["hostname"], r["model"]) for r in rows] == [
        (1, "running", None, None, "old-model")
    ]
    with sqlite3.connect(dbfile) as conn:
        stored = conn.execute("SELECT kind, started_at, params, status, pid, hostname FROM runs").fetchall()
    assert stored == [("generate", "2026-01-01 10:00:00", '{"force": false}', "running", None, None)]


# --------------------------------------------------------------------------- a real killed run


def _generate(server: FakeOpenAIServer, dbfile: Path) -> list[str]:
    return [
        *KBGEN,
        *("generate", "-d", "ntu120", "--classes", "A1", "-j", "1", "--base-url", server.base_url),
        *("--model", "fake", "--db", str(dbfile), "--timeout", "60"),
    ]


def _wait_for_request(server: FakeOpenAIServer, proc: subprocess.Popen[bytes]) -> None:
    """Until the child asked its first question: by then its run row is committed."""
    deadline = time.monotonic() + 60
    while not server.requests and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.requests and proc.poll() is None, "generate never asked the fake endpoint"


def test_a_killed_generate_is_interrupted_and_a_rerun_is_ok(tmp_path: Path) -> None:
    dbfile = tmp_path / "kb.db"
    with FakeOpenAIServer() as server:
        server.enqueue(Reply(delay_s=30))  # the first answer never comes before the kill
        proc = subprocess.Popen(
            _generate(server, dbfile), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env()
        )
        _wait_for_request(server, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        (killed,) = _runs_json("--db", str(dbfile))
        assert killed["status"] == "interrupted" and killed["finished_at"] is None
        assert killed["summary"] == {"reason": f"process {proc.pid} on {HOST} is gone"}
        assert (killed["pid"], killed["hostname"], killed["kind"]) == (proc.pid, HOST, "generate")
        with sqlite3.connect(dbfile) as conn:  # marked in the database, not only in the listing
            assert conn.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]

        # A run that died unseen: the next generate marks it when it starts.
        dead = _add_running(_dead_pid(), HOST, str(dbfile))
        rerun = run_cli(_generate(server, dbfile), timeout=120)
        assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    with sqlite3.connect(dbfile) as conn:
        assert conn.execute("SELECT status FROM runs WHERE id = ?", (dead,)).fetchall() == [("interrupted",)]

    rows = _runs_json("--db", str(dbfile))
    assert [(r["id"], r["status"]) for r in rows] == [
        (dead + 1, "ok"),
        (dead, "interrupted"),
        (killed["id"], "interrupted"),
    ]
    assert rows[0]["summary"]["done"] == 1 and rows[0]["finished_at"] is not None
    table = kbgen("runs", "--db", str(dbfile)).stdout
    assert "1/1 classes ok, 2 calls" in table
    assert f"process {proc.pid} on {HOST} is gone, 0 answers stored" in table


# --------------------------------------------------------------------------- live and foreign runs


def test_live_runs_and_runs_of_other_hosts_stay_running() -> None:
    seed_dataset()
    live = _add_running(os.getpid(), HOST)
    foreign = _add_running(_dead_pid(), "build-box-7")
    unknown = _add_running(None, None)  # from before migration 0002
    rows = {r["id"]: r for r in _runs_json()}
    assert {i: rows[i]["status"] for i in (live, foreign, unknown)} == dict.fromkeys(
        (live, foreign, unknown), "running"
    )
    assert _statuses() == dict.fromkeys((live, foreign, unknown), "running")
    table = kbgen("runs").stdout
    assert "running? (host build-box-7)" in table and "interrupted" not in table


def test_only_dead_runs_of_this_host_are_marked_when_a_run_starts() -> None:
    seed_dataset()
    dead, live = _add_running(_dead_pid(), HOST), _add_running(os.getpid(), HOST)
    foreign = _add_running(_dead_pid(), "build-box-7")
    with db.session_scope() as s:
        new = repo.start_run(s, repo.get_dataset(s, "ntu120"), "generate").id
    assert _statuses() == {dead: "interrupted", live: "running", foreign: "running", new: "running"}
    with db.session_scope() as s:
        run = s.get(Run, new)
        assert (run.pid, run.hostname) == (os.getpid(), HOST)


# --------------------------------------------------------------------------- pid reuse


@pytest.fixture
def fake_psutil(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A stand-in psutil module whose one process has a settable creation time (or is missing)."""

    class NoSuchProcess(Exception):
        pass

    class AccessDenied(Exception):
        pass

    module = types.SimpleNamespace(
        STATUS_ZOMBIE="zombie", NoSuchProcess=NoSuchProcess, AccessDenied=AccessDenied, created=0.0
    )

    class Process:
        def __init__(self, pid: int) -> None:
            if module.created is None:
                raise NoSuchProcess(pid)

        def status(self) -> str:
            return "sleeping"

        def create_time(self) -> float:
            return module.created

    module.Process = Process
    monkeypatch.setitem(sys.modules, "psutil", module)
    return module


def test_a_reused_pid_counts_as_gone_with_psutil(fake_psutil: types.SimpleNamespace) -> None:
    started = utcnow() - timedelta(minutes=10)
    epoch = (started - utcnow()).total_seconds() + time.time()
    fake_psutil.created = epoch - 5  # the process started before its run: the owner
    assert not owner.owner_is_gone(12345, started)
    fake_psutil.created = epoch + 60  # a newer process holds the pid now
    assert owner.owner_is_gone(12345, started)
    fake_psutil.created = None
    assert owner.owner_is_gone(12345, started)


def test_our_own_pid_on_an_older_run_is_a_previous_process() -> None:
    assert not owner.owner_is_gone(os.getpid(), utcnow())
    assert owner.owner_is_gone(os.getpid(), utcnow() - timedelta(days=1))


# --------------------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [("nosuch", "no dataset spec 'nosuch'"), ("ntu60", "dataset 'ntu60' is not in the database yet")],
)
def test_an_unknown_dataset_is_one_line_and_changes_nothing(dataset: str, expected: str) -> None:
    seed_dataset()
    dead = _add_running(_dead_pid(), HOST)
    result = kbgen("runs", "-d", dataset)
    assert result.exit_code == 1
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert _statuses() == {dead: "running"}

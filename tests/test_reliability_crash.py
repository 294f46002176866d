"""Crash safety and concurrency of ``kbgen generate`` on one SQLite file, with the real CLI.

- SIGKILL at random moments (during start-up, migration, mid-answer), six times in a row, then a
  run to completion: the knowledge base equals a clean run's, and SQLite reports no damage.
- Two generators on different classes and ``kbgen set`` edits, all at once: no "database is
  locked", every answer and every edit kept.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from reliability_helpers import KBGEN, cli_env, finish_all, run_cli, start_cli

from dataspec import load_spec
from kbgen.testing.fake_openai import FakeOpenAIServer

NTU120 = load_spec("ntu120")
TEXTS_PER_CLASS = 1 + NTU120.num_joints
KILLS = 6


def _generate_args(server: FakeOpenAIServer, dbfile: Path, *extra: str) -> list[str]:
    return [
        *KBGEN,
        *("generate", "--dataset", "ntu120", "--base-url", server.base_url, "--model", "fake"),
        *("--db", str(dbfile), "--timeout", "5", *extra),
    ]


def _query(dbfile: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read with a separate plain sqlite3 connection, as another tool would."""
    conn = sqlite3.connect(f"file:{dbfile}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _ok_calls(dbfile: Path) -> int:
    if not dbfile.exists():
        return 0
    try:
        return _query(dbfile, "SELECT count(*) FROM llm_calls WHERE status = 'ok'")[0][0]
    except sqlite3.OperationalError:  # not migrated yet
        return 0


def _knowledge_base(dbfile: Path) -> dict[str, object]:
    """What must be identical to a clean run: counts per class and text, and SQLite's own check."""
    per_text = _query(
        dbfile,
        "SELECT c.class_id, d.kind, d.joint_position, count(*), sum(d.is_current) "
        "FROM descriptions d JOIN classes c ON c.id = d.class_pk GROUP BY 1, 2, 3",
    )
    return {
        "integrity": _query(dbfile, "PRAGMA integrity_check")[0][0],
        "descriptions": _query(dbfile, "SELECT count(*) FROM descriptions")[0][0],
        "current": _query(dbfile, "SELECT count(*) FROM descriptions WHERE is_current")[0][0],
        "texts": len(per_text),
        "texts_with_one_version": sum(1 for row in per_text if row[3] == 1),
        "texts_with_one_current": sum(1 for row in per_text if row[4] == 1),
        "ok_calls": _ok_calls(dbfile),
    }


@pytest.mark.slow
def test_generate_killed_six_times_then_completed_equals_a_clean_run(tmp_path: Path) -> None:
    rng = random.Random(20240921)
    crashed, clean = tmp_path / "crashed.db", tmp_path / "clean.db"
    # 100 ms per answer and 4 requests in flight: a whole run takes ~6 s of answering, so each
    # kill (at most a few seconds in) leaves work for the next run.
    with FakeOpenAIServer(delay_s=0.1) as server:
        progress = []
        for _ in range(KILLS):
            before = _ok_calls(crashed)
            proc = subprocess.Popen(
                _generate_args(server, crashed, "-j", "4"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=cli_env(),
            )
            # Half the kills land at a random time (start-up, migration, first answers), half
            # after a random number of answers, plus jitter so they fall mid-transaction.
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0.3, 3.0))
            else:
                target = before + rng.randint(1, 40)
                deadline = time.monotonic() + 60
                while _ok_calls(crashed) < target and time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0, 0.05))
            assert proc.poll() is None, "the run finished before it could be killed: slow the server down"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            progress.append(_ok_calls(crashed))
        assert progress[-1] < 2 * NTU120.num_classes, "the kills must leave work to do"

        final = run_cli(_generate_args(server, crashed, "-j", "16"), timeout=300)
        assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
        reference = run_cli(_generate_args(server, clean, "-j", "16"), timeout=300)
        assert reference.returncode == 0, reference.stderr[-2000:]

    after_crashes, after_clean = _knowledge_base(crashed), _knowledge_base(clean)
    assert after_crashes["integrity"] == "ok"
    expected_texts = NTU120.num_classes * TEXTS_PER_CLASS
    assert after_clean["texts"] == after_clean["texts_with_one_version"] == expected_texts
    assert after_clean["texts_with_one_current"] == expected_texts
    # Exactly one version, current, of every text: nothing lost, nothing duplicated by the kills.
    assert {k: v for k, v in after_crashes.items() if k != "ok_calls"} == {
        k: v for k, v in after_clean.items() if k != "ok_calls"
    }
    # An answer killed after it arrived but before its commit is asked again: never more than
    # the kills could have lost in flight.
    assert 2 * NTU120.num_classes <= after_crashes["ok_calls"] <= 2 * NTU120.num_classes + KILLS * 4


@pytest.mark.slow
def test_two_generators_and_edits_at_once_lose_nothing_and_never_lock(tmp_path: Path) -> None:
    dbfile = tmp_path / "shared.db"
    first_half = ",".join(NTU120.class_ids[:60])
    second_half = ",".join(NTU120.class_ids[60:])
    # Edits hit classes of both halves while their generators run (and maybe before their answers).
    edited = [NTU120.class_ids[i] for i in (0, 5, 30, 59, 60, 61, 90, 119)]
    # 400 ms per answer, 4 in flight: each generator answers for ~12 s, longer than the start-up
    # of the edit processes (several seconds on 2 busy cores).
    with FakeOpenAIServer(delay_s=0.4) as server:
        # A fresh file: both generators also race to create the schema.
        generators = [
            start_cli(_generate_args(server, dbfile, "-j", "4", "--classes", classes))
            for classes in (first_half, second_half)
        ]
        deadline = time.monotonic() + 120
        while _ok_calls(dbfile) < 10 and time.monotonic() < deadline:  # answers are being saved
            time.sleep(0.02)
        edits = [
            start_cli(KBGEN, "set", class_id, "--dataset", "ntu120", "--db", dbfile, "--joint", "left hand",
                      "--text", f"Edited while generating: {class_id} waves.")
            for class_id in edited
        ]  # fmt: skip
        results = finish_all(generators + edits)
    assert [code for code, _, _ in results] == [0] * len(results), [err[-1500:] for _, _, err in results]
    assert not any("locked" in out + err for _, out, err in results)

    kb = _knowledge_base(dbfile)
    assert kb["integrity"] == "ok"
    expected_texts = NTU120.num_classes * TEXTS_PER_CLASS
    assert kb["texts"] == kb["texts_with_one_current"] == kb["current"] == expected_texts
    # Edited texts have two versions (the answer and the edit), every other text one.
    assert kb["texts_with_one_version"] == expected_texts - len(edited)
    assert kb["descriptions"] == expected_texts + len(edited)
    assert kb["ok_calls"] == 2 * NTU120.num_classes
    left_hand = NTU120.joint_index("left hand")
    saved_edits = _query(
        dbfile,
        "SELECT c.class_id, d.text FROM descriptions d JOIN classes c ON c.id = d.class_pk "
        "WHERE d.source = 'edit' AND d.kind = 'joint' AND d.joint_position = ?",
        (left_hand,),
    )
    # Every edit is kept as a version (current unless an answer for that joint arrived after it).
    assert sorted(saved_edits) == sorted((c, f"Edited while generating: {c} waves.") for c in edited)
    # The edits really overlapped the generation: some were saved before its last answer.
    first_edit = _query(dbfile, "SELECT min(created_at) FROM descriptions WHERE source = 'edit'")[0][0]
    last_answer = _query(dbfile, "SELECT max(created_at) FROM llm_calls")[0][0]
    assert first_edit < last_answer

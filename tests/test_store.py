"""The store API (kbgen.store.repo) against a real SQLite file in a per-test KBGEN_HOME."""

from __future__ import annotations

import pytest
import yaml
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from store_helpers import fill_class, seed_dataset

from dataspec import load_spec
from kbgen.home import database_url
from kbgen.store import StoreError, db, repo
from kbgen.store.models import ClassRow, Description, JointRow, KeyjointDistribution, LlmCall


def _count(session, model, *where) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where))


def test_ensure_dataset_creates_rows_once() -> None:
    spec = load_spec("ntu120")
    for _ in range(2):
        with db.session_scope() as s:
            repo.ensure_dataset(s, spec)
    with db.session_scope() as s:
        dataset = repo.get_dataset(s, "ntu120")
        assert dataset.num_joints == 25 and dataset.spec_sha256 == spec.sha256
        assert _count(s, ClassRow) == 120 and _count(s, JointRow) == 25
        assert repo.joint_names(s, dataset)[11] == "right hand"
        assert [c.class_id for c in repo.list_classes(s, dataset)][:3] == ["A1", "A2", "A3"]


def test_get_class_accepts_padded_ids_and_rejects_unknown() -> None:
    seed_dataset()
    with db.session_scope() as s:
        assert repo.get_class(s, "ntu120", "A001").name == "drink water"
        with pytest.raises(StoreError, match="not in dataset ntu120"):
            repo.get_class(s, "ntu120", "A999")
        with pytest.raises(StoreError, match="not in the database"):
            repo.get_class(s, "ntu60", "A1")


def test_new_version_retires_the_previous_and_unchanged_text_saves_nothing() -> None:
    seed_dataset()
    with db.session_scope() as s:
        row = repo.get_class(s, "ntu120", "A1")
        first = repo.save_description(s, row, "joint", 11, "the right hand lifts a cup", "llm")
        assert first is not None and first.version == 1
        assert repo.save_description(s, row, "joint", 11, "  the right hand lifts a cup \n", "edit") is None
        second = repo.save_description(
            s, row, "joint", 11, "the right hand raises a cup to the mouth", "edit"
        )
    with db.session_scope() as s:
        rows = repo.history(s, repo.get_class(s, "ntu120", "A1"), kind="joint", joint_position=11)
        assert [(r.version, r.is_current, r.source) for r in rows] == [(1, False, "llm"), (2, True, "edit")]
        assert second is not None and rows[1].id == second.id
        current = _count(s, Description, Description.joint_position == 11, Description.is_current.is_(True))
        assert current == 1


def test_global_key_parts_are_kept_unless_given_and_count_as_a_change() -> None:
    seed_dataset()
    with db.session_scope() as s:
        row = repo.get_class(s, "ntu120", "A7")
        repo.save_description(s, row, "global", None, "throw something", "llm", key_body_parts=["arm"])
        kept = repo.save_description(s, row, "global", None, "throw an object forward", "edit")
        assert kept is not None and kept.key_body_parts == ["arm"] and kept.version == 2
        changed = repo.save_description(
            s, row, "global", None, "throw an object forward", "import", key_body_parts=["hand"]
        )
        assert changed is not None and changed.version == 3
        with pytest.raises(StoreError, match="empty"):
            repo.save_description(s, row, "global", None, "   ", "edit")
        with pytest.raises(StoreError, match="outside"):
            repo.save_description(s, row, "joint", 25, "no such joint", "edit")


def test_partial_unique_index_allows_one_current_row() -> None:
    seed_dataset()
    with db.session_scope() as s:
        row = repo.get_class(s, "ntu120", "A1")
        repo.save_description(s, row, "global", None, "drink", "llm")
    with pytest.raises(IntegrityError), db.session_scope() as s:
        row = repo.get_class(s, "ntu120", "A1")
        s.add(
            Description(class_pk=row.id, kind="global", text="x", version=9, source="edit", is_current=True)
        )
        s.flush()


def test_new_global_text_marks_key_joints_stale() -> None:
    seed_dataset()
    with db.session_scope() as s:
        row = repo.get_class(s, "ntu120", "A1")
        repo.save_description(s, row, "global", None, "drink water with the right hand", "llm")
        s.add(KeyjointDistribution(class_pk=row.id, weights=[1 / 25] * 25, is_uniform=True))
        s.flush()
        assert repo.keyjoint_flag(repo.current_keyjoints(s, row)) == "uniform"
        repo.save_description(s, row, "joint", 0, "the spine stays still", "llm")
        assert repo.keyjoint_flag(repo.current_keyjoints(s, row)) == "uniform"
        repo.save_description(s, row, "global", None, "drink water, right hand to mouth", "edit")
        assert repo.keyjoint_flag(repo.current_keyjoints(s, row)) == "stale"
    assert repo.keyjoint_flag(None) == "none"


def test_current_kb_reports_status_and_sources() -> None:
    seed_dataset()
    fill_class("ntu120", "A1")
    with db.session_scope() as s:
        kb = repo.current_kb(s, repo.get_class(s, "ntu120", "A1"))
        assert kb.complete and kb.status == "complete" and kb.sources == ["llm"]
        assert list(kb.joints)[:2] == ["base of the spine", "middle of the spine"] and len(kb.joints) == 25
        assert kb.to_json()["key_body_parts"] == ["arm", "hand"]
        row2 = repo.get_class(s, "ntu120", "A2")
        assert repo.current_kb(s, row2).status == "missing"
        repo.save_description(s, row2, "joint", 3, "the head bends", "edit")
        assert repo.current_kb(s, row2).status == "partial"


def test_calls_are_logged_and_filtered() -> None:
    seed_dataset()
    seed_dataset("ntu60")
    with db.session_scope() as s:
        a1, a7 = repo.get_class(s, "ntu120", "A1"), repo.get_class(s, "ntu120", "A7")
        other = repo.get_class(s, "ntu60", "A1")
        template = repo.ensure_template(s, "global_action", "Describe {action}.")
        assert repo.ensure_template(s, "renamed", "Describe {action}.").id == template.id
        run = repo.start_run(s, a1.dataset, "generate", model="m", endpoint="http://127.0.0.1:8080/v1")
        for cls, status in [(a1, "error"), (a1, "ok"), (a7, "invalid"), (other, "ok")]:
            repo.record_call(
                s,
                class_row=cls,
                kind="global",
                rendered_prompt="p",
                status=status,
                run=run,
                template=template,
            )
        repo.finish_run(s, run, "ok", {"done": 3})
        assert run.endpoint_host == "127.0.0.1:8080" and run.finished_at is not None
        dataset = repo.get_dataset(s, "ntu120")
        assert len(repo.list_calls(s, dataset=dataset)) == 3
        assert [c.status for c in repo.list_calls(s, dataset=dataset, class_row=a1)] == ["ok", "error"]
        assert {c.status for c in repo.list_calls(s, dataset=dataset, failed_only=True)} == {
            "error",
            "invalid",
        }
        assert len(repo.list_calls(s, limit=2)) == 2
        with pytest.raises(ValueError, match="status"):
            repo.record_call(s, class_row=a1, kind="global", rendered_prompt="p", status="fine")


def test_api_key_never_reaches_the_database(tmp_path) -> None:
    secret = "sk-test-4f9a8b7c6d5e"
    seed_dataset()
    with db.session_scope() as s:
        row = repo.get_class(s, "ntu120", "A1")
        run = repo.start_run(
            s,
            row.dataset,
            "generate",
            endpoint=f"https://user:{secret}@api.example.com/v1?key={secret}",
            params={"api_key": secret, "temperature": 0.2, "headers": {"Authorization": f"Bearer {secret}"}},
        )
        call = repo.record_call(
            s,
            class_row=row,
            kind="joints",
            rendered_prompt="p",
            status="ok",
            run=run,
            endpoint=f"https://user:{secret}@api.example.com:8443/v1",
            params={"OPENAI_API_KEY": secret, "max_tokens": 512},
        )
        assert call.endpoint_host == "api.example.com:8443" and call.params == {"max_tokens": 512}
    engine = db.get_engine()
    with engine.connect() as conn:
        dump = "\n".join(conn.connection.dbapi_connection.iterdump())
    assert "api.example.com" in dump and "temperature" in dump
    assert secret not in dump


def test_sqlite_uses_wal_and_a_busy_timeout(_isolated_home) -> None:
    seed_dataset()
    assert database_url() == f"sqlite:///{_isolated_home / 'kbgen.db'}"
    with db.get_engine().connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def _open_when_released(url: str, barrier, errors) -> None:
    try:
        engine = db.make_engine(url)
        barrier.wait()
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.put(str(exc)[:200])


def test_processes_opening_a_fresh_file_at_once_wait_for_the_wal_conversion(tmp_path) -> None:
    # SQLite does not run the busy handler for "PRAGMA journal_mode=WAL": before the fix, 8
    # processes opening one fresh file at once failed with "database is locked" in 6 trials of 20.
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for trial in range(6):
        url = f"sqlite:///{tmp_path}/fresh{trial}.db"
        barrier, errors = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_open_when_released, args=(url, barrier, errors)) for _ in range(8)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * 8
        assert errors.empty(), errors.get()


def test_wal_conversion_gives_up_after_its_timeout_with_the_lock_error(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        other = sqlite3.connect(path, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            db._use_wal(other.cursor(), timeout_s=0.2)
    finally:
        holder.execute("ROLLBACK")
    db._use_wal(other.cursor(), timeout_s=0.2)  # released: converts
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_engine_is_migrated_once_per_process(monkeypatch) -> None:
    calls: list[str] = []
    import kbgen.store.db as db_module

    real = db_module.upgrade_to_head
    monkeypatch.setattr(
        db_module, "upgrade_to_head", lambda engine: calls.append(str(engine.url)) or real(engine)
    )
    for _ in range(3):
        with db.session_scope() as s:
            s.execute(select(func.count()).select_from(LlmCall))
    assert len(calls) == 1


def test_parallel_writers_do_not_lock_each_other_out() -> None:
    """Several workers commit answers at once (generate --concurrency): WAL + busy timeout, no 'locked'."""
    from concurrent.futures import ThreadPoolExecutor

    seed_dataset()
    class_ids = [f"A{i}" for i in range(1, 9)]

    def work(class_id: str) -> None:
        for position in range(10):
            with db.session_scope() as s:
                row = repo.get_class(s, "ntu120", class_id)
                call = repo.record_call(s, class_row=row, kind="joints", rendered_prompt="p", status="ok")
                repo.save_description(s, row, "joint", position, f"text {position}", "llm", call=call)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, class_ids))
    with db.session_scope() as s:
        assert _count(s, Description, Description.is_current.is_(True)) == 8 * 10
        assert _count(s, LlmCall) == 8 * 10


def test_ensure_dataset_follows_an_edited_spec(tmp_path) -> None:
    original = load_spec("nwucla")
    seed_dataset("nwucla")
    edited = tmp_path / "nwucla.yaml"
    edited.write_text(original.raw_text.replace("name: pick up with one hand", "name: pick up (one hand)"))
    with db.session_scope() as s:
        dataset = repo.ensure_dataset(s, load_spec(edited))
        assert repo.get_class(s, "nwucla", "a01").name == "pick up (one hand)"
        assert dataset.spec_sha256 != original.sha256 and len(dataset.classes) == 10
    fewer_joints = tmp_path / "short" / "nwucla.yaml"
    fewer_joints.parent.mkdir()
    spec_data = yaml.safe_load(original.raw_text)
    spec_data["joints"] = spec_data["joints"][:19]
    spec_data["edges"] = [e for e in spec_data["edges"] if max(e) < 19]
    fewer_joints.write_text(yaml.safe_dump(spec_data))
    with (
        pytest.raises(StoreError, match="stored with 20 joints but its spec now has 19"),
        db.session_scope() as s,
    ):
        repo.ensure_dataset(s, load_spec(fewer_joints))


def test_batch_save_versions_each_text_and_checks_everything_first() -> None:
    seed_dataset()
    with db.session_scope() as s:
        row = repo.get_class(s, "ntu120", "A1")
        first = repo.save_descriptions(
            s,
            row,
            [repo.NewText("global", None, "drink", ["hand"]), repo.NewText("joint", 11, "lifts the cup")],
            "llm",
        )
        assert [d.version for d in first if d is not None] == [1, 1]
        second = repo.save_descriptions(
            s,
            row,
            [
                repo.NewText("global", None, "drink"),  # unchanged (key parts kept)
                repo.NewText("joint", 11, "raises the cup"),
                repo.NewText("joint", 3, "tilts back"),
            ],
            "edit",
        )
        assert second[0] is None
        assert [(d.joint_position, d.version) for d in second[1:] if d is not None] == [(11, 2), (3, 1)]
        before = _count(s, Description)
        with pytest.raises(StoreError, match="outside"):
            repo.save_descriptions(
                s, row, [repo.NewText("joint", 0, "new text"), repo.NewText("joint", 99, "bad")], "edit"
            )
        with pytest.raises(ValueError, match="twice"):
            repo.save_descriptions(
                s, row, [repo.NewText("joint", 0, "a"), repo.NewText("joint", 0, "b")], "edit"
            )
        assert _count(s, Description) == before
        assert _count(s, Description, Description.is_current.is_(True)) == 3

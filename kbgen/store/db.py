"""Engines and sessions for the kbgen database.

SQLite by default (``$KBGEN_HOME/kbgen.db``), any SQLAlchemy URL through ``--db``/``$KBGEN_DB``.
SQLite connections use WAL and a 30 s busy timeout so parallel workers and a reader in another
terminal do not hit "database is locked" (llm #789). The schema is upgraded to the newest
migration ONCE per process and URL, when the engine is first asked for, never per call.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from kbgen.home import database_url
from kbgen.store.errors import StoreError
from kbgen.store.migrate import postgres_write_lock, upgrade_to_head

BUSY_TIMEOUT_S = 30

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _use_wal(cursor: Any, timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """Put the file in WAL mode, waiting for other connections instead of failing.

    Converting the journal needs the file to itself, and SQLite does not run the busy handler for
    ``PRAGMA journal_mode=WAL``: processes opening a fresh file at once got "database is locked"
    at once (6 trials of 20 with 8 processes, 2026-12-07). WAL persists in the file, so this looks
    first and converts only a file that is not in WAL yet, retrying with backoff until
    ``timeout_s``; another connection converting it meanwhile ends the wait.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # (":memory:" answers "memory": nothing to do)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.1)


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    _use_wal(cursor)
    # NORMAL is the documented setting for WAL: a killed process loses nothing committed; only
    # an OS crash or power cut can drop the last commits. FULL fsyncs every commit (~10x slower).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` with kbgen's connection settings; does not migrate."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(url, pool_pre_ping=True)


def get_engine(url: str | None = None, *, upgrade: bool = True) -> Engine:
    """The process-wide engine for ``url`` (resolved by :func:`kbgen.home.database_url`).

    The first call for a URL upgrades its schema to head (unless ``upgrade=False``, used by
    ``kbgen db current`` to look without touching).
    """
    resolved = database_url(url)
    with _lock:
        engine = _engines.get(resolved)
        if engine is None:
            try:
                engine = make_engine(resolved)
            except (SQLAlchemyError, ImportError) as exc:
                raise StoreError(
                    f"cannot open database {resolved}: {exc.__class__.__name__}: {exc}"
                ) from None
            if not upgrade:
                return engine
            _engines[resolved] = engine
            try:
                upgrade_to_head(engine)
            except SQLAlchemyError as exc:
                del _engines[resolved]
                raise StoreError(
                    f"cannot prepare database {resolved}: {exc.__class__.__name__}: {exc}"
                ) from None
            except StoreError:
                del _engines[resolved]
                raise
    return engine


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """A session factory bound to the (migrated) engine of ``url``."""
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A short transaction: commits on success, rolls back on error.

    Use one scope per unit of work (one good LLM answer, one edit) so that a killed process
    loses nothing already answered.
    """
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def lock_for_write(session: Session) -> None:
    """Take the write lock now: ``BEGIN IMMEDIATE`` on SQLite (unless the transaction holds it).

    Call it before reading what a write depends on (the current version of a text, whether a row
    exists). pysqlite runs reads outside any transaction until the first write, so without it
    another process can commit between the read and the write: two "current" rows, a duplicate
    dataset. On PostgreSQL a transaction-level advisory lock does the same (there the constraints
    would hold, but the loser of such a race would fail instead of waiting). Waits up to the busy
    timeout; a no-op on other databases.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        postgres_write_lock(conn, BUSY_TIMEOUT_S)
        return
    if conn.dialect.name != "sqlite":
        return
    if not conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def dispose_all() -> None:
    """Close every cached engine (tests, and processes that fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()

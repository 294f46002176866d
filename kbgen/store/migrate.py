"""Alembic plumbing: find the migrations shipped with the code, upgrade, read revisions."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from dataspec.resources import resource_dir
from kbgen.store.errors import StoreError

# The toolkit's migrations/ folder (the checkout's, or the copy a wheel installs), found from the code so
# the CLI works from any cwd.
MIGRATIONS_DIR = resource_dir("migrations")
ALEMBIC_INI = MIGRATIONS_DIR / "alembic.ini"
# Key of the transaction-level advisory lock that serializes kbgen's writers on PostgreSQL.
POSTGRES_WRITE_LOCK_KEY = 0x6B6267656E  # b"kbgen"


def postgres_write_lock(conn: Connection, timeout_s: float = 30) -> None:
    """On PostgreSQL, take kbgen's write lock until the transaction ends (like SQLite's BEGIN IMMEDIATE).

    A transaction-level advisory lock: it serializes the read-then-write units of kbgen's writers
    (and schema upgrades) across processes. Waits up to ``timeout_s``, then fails with a lock
    timeout. Taking it again in the same transaction is harmless.
    """
    # set_config(..., true) is SET LOCAL with a bound value (SET itself takes no parameters).
    conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(timeout_s * 1000)}ms"})
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_WRITE_LOCK_KEY})


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """An Alembic config for ``url``; with ``connection`` the migration runs on it (no new engine)."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise StoreError(f"kbgen's migrations are missing ({MIGRATIONS_DIR}): reinstall the crossglg package")
    cfg = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    cfg.attributes["configure_logging"] = False
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this code."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None, "migrations/versions has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a blank database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def known_revision(revision: str, script: ScriptDirectory | None = None) -> bool:
    """Whether this code ships ``revision`` (a newer kbgen may have migrated the database further)."""
    script = script or ScriptDirectory.from_config(alembic_config("sqlite://"))
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def upgrade_to_head(engine: Engine) -> None:
    """Bring the database to the newest revision (a no-op when it is already there).

    Safe when several processes open a fresh database at once: on SQLite and PostgreSQL the
    upgrade holds the write lock from the start and looks at the revision again under it.
    """
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite runs DDL outside any transaction, so two processes creating the tables of
            # a fresh file collide ("table ... already exists"). BEGIN IMMEDIATE takes the write
            # lock (waiting up to the busy timeout); the loser then finds the schema at head.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head:
                return
        elif engine.dialect.name == "postgresql":
            # Two processes creating the tables at once collide in the catalog (duplicate key in
            # pg_type); the loser waits here, then finds the schema at head.
            postgres_write_lock(conn)
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head:
                return
        if current is not None and not known_revision(current, script):
            raise StoreError(
                f"the database is at revision {current}, which this kbgen does not know: upgrade kbgen "
                "or point --db at another database"
            )
        command.upgrade(alembic_config(str(engine.url), connection=conn), "head")

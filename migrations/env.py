"""Alembic environment of the kbgen database.

kbgen runs migrations in-process (``kbgen.store.migrate``) on a connection it passes in
``config.attributes["connection"]``. The plain ``alembic -c migrations/alembic.ini ...`` command
line works too and resolves the URL like kbgen does (``--db`` aside): ``$KBGEN_DB`` or
``$KBGEN_HOME/kbgen.db``. Batch mode so that ALTERs work on SQLite.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from kbgen.home import database_url
from kbgen.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: object | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url") or database_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    section = config.get_section(config.config_ini_section, {})
    section["sqlalchemy.url"] = section.get("sqlalchemy.url") or database_url()
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

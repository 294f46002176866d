"""Migrations: a blank database upgrades to head, the schema matches the models, and back down."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from kbgen.store.db import make_engine
from kbgen.store.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from kbgen.store.models import Base

TABLES = {
    "datasets", "classes", "joints", "templates", "runs", "llm_calls",
    "descriptions", "keyjoint_distributions", "embeddings", "packs",
}  # fmt: skip


def test_blank_database_upgrades_to_head_without_drift(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'blank.db'}")
    assert current_revision(engine) is None
    upgrade_to_head(engine)
    assert current_revision(engine) == head_revision() == "0001"
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as conn:
        # What `alembic check` does: compare the migrated schema with the models.
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("descriptions")}
    assert {"uq_descriptions_current_global", "uq_descriptions_current_joint"} <= indexes
    upgrade_to_head(engine)  # idempotent
    assert current_revision(engine) == "0001"


def test_downgrade_to_base_and_up_again(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'cycle.db'}"
    engine = make_engine(url)
    upgrade_to_head(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(url, connection=conn), "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade_to_head(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES

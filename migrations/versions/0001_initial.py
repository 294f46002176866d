"""Initial schema: datasets, classes, joints, templates, runs, LLM calls, versioned descriptions,
key-joint distributions, cached embeddings and knowledge packs.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 21:58:58.254318
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("spec_sha256", sa.String(length=64), nullable=False),
        sa.Column("num_joints", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("name", name=op.f("uq_datasets_name")),
    )
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("encoder_key", sa.String(length=300), nullable=False),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embeddings")),
        sa.UniqueConstraint("encoder_key", "text_sha256", name=op.f("uq_embeddings_encoder_key")),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint("sha256", name=op.f("uq_templates_sha256")),
    )
    op.create_table(
        "classes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_classes_dataset_id_datasets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_classes")),
        sa.UniqueConstraint("dataset_id", "class_id", name=op.f("uq_classes_dataset_id")),
    )
    with op.batch_alter_table("classes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_classes_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "joints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_joints_dataset_id_datasets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_joints")),
        sa.UniqueConstraint("dataset_id", "position", name=op.f("uq_joints_dataset_id")),
    )
    with op.batch_alter_table("joints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_joints_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "packs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kb_revision", sa.String(length=64), nullable=False),
        sa.Column("encoder_key", sa.String(length=300), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_packs_dataset_id_datasets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_packs")),
    )
    with op.batch_alter_table("packs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_packs_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("endpoint_host", sa.String(length=255), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name=op.f("fk_runs_dataset_id_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "llm_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("class_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("rendered_prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("endpoint_host", sa.String(length=255), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("raw_answer", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("latency_s", sa.Float(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('global', 'joints')", name=op.f("ck_llm_calls_kind")),
        sa.CheckConstraint("status IN ('ok', 'invalid', 'error')", name=op.f("ck_llm_calls_status")),
        sa.ForeignKeyConstraint(
            ["class_pk"], ["classes.id"], name=op.f("fk_llm_calls_class_pk_classes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_llm_calls_run_id_runs")),
        sa.ForeignKeyConstraint(
            ["template_id"], ["templates.id"], name=op.f("fk_llm_calls_template_id_templates")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_calls")),
    )
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_llm_calls_class_pk"), ["class_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_llm_calls_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_llm_calls_run_id"), ["run_id"], unique=False)

    op.create_table(
        "descriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("class_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("joint_position", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("key_body_parts", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=True),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "(kind = 'global' AND joint_position IS NULL) OR (kind = 'joint' AND joint_position IS NOT NULL)",
            name=op.f("ck_descriptions_joint_position"),
        ),
        sa.CheckConstraint("kind IN ('global', 'joint')", name=op.f("ck_descriptions_kind")),
        sa.CheckConstraint("source IN ('llm', 'edit', 'import')", name=op.f("ck_descriptions_source")),
        sa.ForeignKeyConstraint(
            ["call_id"], ["llm_calls.id"], name=op.f("fk_descriptions_call_id_llm_calls")
        ),
        sa.ForeignKeyConstraint(
            ["class_pk"], ["classes.id"], name=op.f("fk_descriptions_class_pk_classes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_descriptions")),
    )
    with op.batch_alter_table("descriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_descriptions_class_pk"), ["class_pk"], unique=False)
        batch_op.create_index(
            "uq_descriptions_current_global",
            ["class_pk"],
            unique=True,
            sqlite_where=sa.text("is_current AND kind = 'global'"),
            postgresql_where=sa.text("is_current AND kind = 'global'"),
        )
        batch_op.create_index(
            "uq_descriptions_current_joint",
            ["class_pk", "joint_position"],
            unique=True,
            sqlite_where=sa.text("is_current AND kind = 'joint'"),
            postgresql_where=sa.text("is_current AND kind = 'joint'"),
        )

    op.create_table(
        "keyjoint_distributions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("class_pk", sa.Integer(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("is_uniform", sa.Boolean(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("backend", sa.Text(), nullable=False),
        sa.Column("backend_version", sa.Text(), nullable=False),
        sa.Column("lexicon_sha256", sa.String(length=64), nullable=True),
        sa.Column("source_description_id", sa.Integer(), nullable=True),
        sa.Column("phrases", sa.JSON(), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["class_pk"],
            ["classes.id"],
            name=op.f("fk_keyjoint_distributions_class_pk_classes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_description_id"],
            ["descriptions.id"],
            name=op.f("fk_keyjoint_distributions_source_description_id_descriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keyjoint_distributions")),
    )
    with op.batch_alter_table("keyjoint_distributions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_keyjoint_distributions_class_pk"), ["class_pk"], unique=False)
        batch_op.create_index(
            "uq_keyjoint_distributions_current",
            ["class_pk"],
            unique=True,
            sqlite_where=sa.text("is_current"),
            postgresql_where=sa.text("is_current"),
        )


def downgrade() -> None:
    with op.batch_alter_table("keyjoint_distributions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_keyjoint_distributions_current",
            sqlite_where=sa.text("is_current"),
            postgresql_where=sa.text("is_current"),
        )
        batch_op.drop_index(batch_op.f("ix_keyjoint_distributions_class_pk"))

    op.drop_table("keyjoint_distributions")
    with op.batch_alter_table("descriptions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_descriptions_current_joint",
            sqlite_where=sa.text("is_current AND kind = 'joint'"),
            postgresql_where=sa.text("is_current AND kind = 'joint'"),
        )
        batch_op.drop_index(
            "uq_descriptions_current_global",
            sqlite_where=sa.text("is_current AND kind = 'global'"),
            postgresql_where=sa.text("is_current AND kind = 'global'"),
        )
        batch_op.drop_index(batch_op.f("ix_descriptions_class_pk"))

    op.drop_table("descriptions")
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_llm_calls_run_id"))
        batch_op.drop_index(batch_op.f("ix_llm_calls_created_at"))
        batch_op.drop_index(batch_op.f("ix_llm_calls_class_pk"))

    op.drop_table("llm_calls")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_dataset_id"))

    op.drop_table("runs")
    with op.batch_alter_table("packs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_packs_dataset_id"))

    op.drop_table("packs")
    with op.batch_alter_table("joints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_joints_dataset_id"))

    op.drop_table("joints")
    with op.batch_alter_table("classes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_classes_dataset_id"))

    op.drop_table("classes")
    op.drop_table("templates")
    op.drop_table("embeddings")
    op.drop_table("datasets")

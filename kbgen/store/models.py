"""SQLAlchemy 2 models of the kbgen database.

The schema is created by the Alembic migrations in ``migrations/versions``; a test checks that
the migrated schema and these models do not drift apart. Times are naive UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names: Alembic batch mode on SQLite needs names to alter constraints.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DESCRIPTION_KINDS = ("global", "joint")
DESCRIPTION_SOURCES = ("llm", "edit", "import")
CALL_KINDS = ("global", "joints")
CALL_STATUSES = ("ok", "invalid", "error")


def utcnow() -> datetime:
    """Current time, naive UTC (SQLite keeps no time zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Dataset(Base):
    """A dataset spec as the database knows it (name, spec hash, joint count)."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    spec_sha256: Mapped[str] = mapped_column(String(64))
    num_joints: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    classes: Mapped[list[ClassRow]] = relationship(
        back_populates="dataset", order_by="ClassRow.position", cascade="all, delete-orphan"
    )
    joints: Mapped[list[JointRow]] = relationship(
        back_populates="dataset", order_by="JointRow.position", cascade="all, delete-orphan"
    )


class ClassRow(Base):
    """One action class of a dataset; ``id`` is the surrogate key (``class_pk`` elsewhere)."""

    __tablename__ = "classes"
    __table_args__ = (UniqueConstraint("dataset_id", "class_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    class_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)

    dataset: Mapped[Dataset] = relationship(back_populates="classes")


class JointRow(Base):
    """One joint of a dataset, by 0-based position, with the name prompts use."""

    __tablename__ = "joints"
    __table_args__ = (UniqueConstraint("dataset_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))

    dataset: Mapped[Dataset] = relationship(back_populates="joints")


class Template(Base):
    """A prompt template, stored once per distinct content."""

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    content: Mapped[str] = mapped_column(Text)


class Run(Base):
    """One invocation of a long job (``generate``, ``keyjoints``...) with its parameters and summary."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    model: Mapped[str | None] = mapped_column(String(200))
    endpoint_host: Mapped[str | None] = mapped_column(String(255))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The process that owns a running row, so a run whose process died (SIGKILL, power cut) can
    # be told from one still working. NULL on rows from before migration 0002.
    pid: Mapped[int | None] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(255))

    dataset: Mapped[Dataset | None] = relationship()


class LlmCall(Base):
    """One request to an LLM and what came back, failed attempts included."""

    __tablename__ = "llm_calls"
    __table_args__ = (
        CheckConstraint("kind IN ('global', 'joints')", name="kind"),
        CheckConstraint("status IN ('ok', 'invalid', 'error')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    class_pk: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id"))
    rendered_prompt: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str | None] = mapped_column(String(200))
    # Host (and port) only: never a URL with credentials, never the API key.
    endpoint_host: Mapped[str | None] = mapped_column(String(255))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raw_answer: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_s: Mapped[float | None] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    class_row: Mapped[ClassRow] = relationship()
    template: Mapped[Template | None] = relationship()
    run: Mapped[Run | None] = relationship()


class Description(Base):
    """One version of a text: the global description of a class or the motion of one joint.

    Exactly one row per (class, kind, joint) is current; two partial unique indexes enforce it
    (one per kind, because SQL treats the NULL joint position of global rows as distinct).
    """

    __tablename__ = "descriptions"
    __table_args__ = (
        CheckConstraint("kind IN ('global', 'joint')", name="kind"),
        CheckConstraint("source IN ('llm', 'edit', 'import')", name="source"),
        CheckConstraint(
            "(kind = 'global' AND joint_position IS NULL) OR (kind = 'joint' AND joint_position IS NOT NULL)",
            name="joint_position",
        ),
        Index(
            "uq_descriptions_current_global",
            "class_pk",
            unique=True,
            sqlite_where=text("is_current AND kind = 'global'"),
            postgresql_where=text("is_current AND kind = 'global'"),
        ),
        Index(
            "uq_descriptions_current_joint",
            "class_pk",
            "joint_position",
            unique=True,
            sqlite_where=text("is_current AND kind = 'joint'"),
            postgresql_where=text("is_current AND kind = 'joint'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    class_pk: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    joint_position: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    key_body_parts: Mapped[list[Any] | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_calls.id"))
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    class_row: Mapped[ClassRow] = relationship()
    call: Mapped[LlmCall | None] = relationship()


class KeyjointDistribution(Base):
    """A key-joint distribution k_gt of one class, mapped from its global description."""

    __tablename__ = "keyjoint_distributions"
    __table_args__ = (
        Index(
            "uq_keyjoint_distributions_current",
            "class_pk",
            unique=True,
            sqlite_where=text("is_current"),
            postgresql_where=text("is_current"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    class_pk: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    weights: Mapped[list[Any]] = mapped_column(JSON)
    is_uniform: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(Text, default="")
    backend: Mapped[str] = mapped_column(Text, default="")
    backend_version: Mapped[str] = mapped_column(Text, default="")
    lexicon_sha256: Mapped[str | None] = mapped_column(String(64))
    source_description_id: Mapped[int | None] = mapped_column(ForeignKey("descriptions.id"))
    phrases: Mapped[list[Any]] = mapped_column(JSON, default=list)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    stale: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    class_row: Mapped[ClassRow] = relationship()
    source_description: Mapped[Description | None] = relationship()


class Embedding(Base):
    """A cached text embedding: float32 little-endian bytes, keyed by encoder and text hash."""

    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("encoder_key", "text_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    encoder_key: Mapped[str] = mapped_column(String(300))
    text_sha256: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Pack(Base):
    """A knowledge pack written from this database."""

    __tablename__ = "packs"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    kb_revision: Mapped[str] = mapped_column(String(64))
    encoder_key: Mapped[str] = mapped_column(String(300))
    num_classes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

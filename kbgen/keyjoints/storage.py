"""Computing, storing and reading key-joint distributions in the kbgen database.

Uses the store's ORM models and repo functions; the caller owns the transaction (these functions
only flush), like :mod:`kbgen.store.repo`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from dataspec import DatasetSpec
from kbgen.keyjoints.distribution import KeyJoints, compute_keyjoints, method_string
from kbgen.keyjoints.lexicon import Lexicon
from kbgen.keyjoints.phrases import PhraseExtractor
from kbgen.store import repo
from kbgen.store.db import lock_for_write
from kbgen.store.models import ClassRow, Description, KeyjointDistribution


@dataclass(frozen=True)
class Settings:
    """What a distribution is computed with; a stored row made otherwise is out of date."""

    backend: str
    lexicon_sha256: str
    key_part_weight: float = 1.0
    smoothing: float = 0.0

    @property
    def method(self) -> str:
        return method_string(self.key_part_weight, self.smoothing)


def why_outdated(
    distribution: KeyjointDistribution | None, source: Description | None, settings: Settings
) -> str | None:
    """Why a class's stored distribution must be recomputed, or None when it is up to date.

    ``source`` is the class's current global description (None: nothing to compute from).
    """
    if source is None:
        return None
    if distribution is None:
        return "missing"
    if distribution.stale or distribution.source_description_id != source.id:
        return "stale (description changed)"
    if distribution.lexicon_sha256 != settings.lexicon_sha256:
        return "lexicon changed"
    if distribution.backend != settings.backend:
        return f"backend {distribution.backend} -> {settings.backend}"
    if distribution.method != settings.method:
        return "method parameters changed"
    return None


def save_distribution(
    session: Session, class_row: ClassRow, result: KeyJoints, source: Description
) -> KeyjointDistribution:
    """Store ``result`` as the class's current distribution; the previous one stays, not current."""
    # Another process must not make a distribution current between this read and the insert.
    lock_for_write(session)
    previous = repo.current_keyjoints(session, class_row)
    if previous is not None:
        previous.is_current = False
        # One current row per class (partial unique index): retire the old one before inserting.
        session.flush()
    row = KeyjointDistribution(
        class_pk=class_row.id,
        weights=list(result.weights),
        is_uniform=result.is_uniform,
        method=result.method,
        backend=result.backend,
        backend_version=result.backend_version,
        lexicon_sha256=result.lexicon_sha256,
        source_description_id=source.id,
        phrases=result.phrases_json(),
        is_current=True,
        stale=False,
    )
    session.add(row)
    session.flush()
    return row


def compute_for_class(
    session: Session,
    spec: DatasetSpec,
    class_row: ClassRow,
    extractor: PhraseExtractor,
    lexicon: Lexicon,
    settings: Settings,
) -> KeyjointDistribution | None:
    """Compute and store the distribution of one class from its current global description.

    Returns None (and stores nothing) when the class has no global description yet.
    """
    source = repo.current_description(session, class_row, "global")
    if source is None:
        return None
    result = compute_keyjoints(
        spec,
        source.text,
        list(source.key_body_parts or []),
        extractor,
        lexicon=lexicon,
        key_part_weight=settings.key_part_weight,
        smoothing=settings.smoothing,
    )
    return save_distribution(session, class_row, result, source)


def key_joints_json(spec: DatasetSpec, distribution: KeyjointDistribution | None) -> dict[str, float] | None:
    """``{joint name: weight}`` of a stored distribution for ``show --json``, or None when there is none."""
    if distribution is None:
        return None
    return {name: round(float(w), 6) for name, w in zip(spec.joint_names, distribution.weights, strict=True)}

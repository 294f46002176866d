"""Helpers for the embedding and pack tests: a small complete knowledge base in the per-test database."""

from __future__ import annotations

from collections.abc import Sequence

from store_helpers import fill_class, seed_dataset

from dataspec import load_spec
from kbgen.store import db, repo
from kbgen.store.models import KeyjointDistribution


def keyjoint_weights(num_joints: int, seed: int) -> list[float]:
    """A deterministic, non-uniform, unnormalised k_gt (the writer must normalise it)."""
    return [float((i * 7 + seed * 3) % 5 + 1) for i in range(num_joints)]


def add_keyjoints(dataset: str, class_id: str, weights: Sequence[float], *, stale: bool = False) -> None:
    """Insert a current key-joint distribution for a class (as `kbgen keyjoints` would)."""
    with db.session_scope() as s:
        row = repo.get_class(s, dataset, class_id)
        s.add(
            KeyjointDistribution(
                class_pk=row.id, weights=list(weights), method="test", backend="test", stale=stale
            )
        )


def build_kb(dataset: str = "nwucla", class_ids: Sequence[str] | None = None) -> list[str]:
    """Seed ``dataset`` and give ``class_ids`` (default: all) texts and k_gt; returns the filled ids."""
    spec = load_spec(dataset)
    seed_dataset(dataset)
    ids = list(class_ids) if class_ids is not None else spec.class_ids
    for n, class_id in enumerate(ids):
        fill_class(dataset, class_id)
        add_keyjoints(dataset, class_id, keyjoint_weights(spec.num_joints, n))
    return ids

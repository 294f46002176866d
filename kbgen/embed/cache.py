"""Content-hash cache of text embeddings in the ``embeddings`` table.

An embedding is keyed by ``(encoder_key, sha256(text))``: the exact text and the exact encoder
(model + pooling + normalisation). Re-embedding a knowledge base after one edit therefore runs
the model on the edited text only, and a run where nothing changed does not load the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kbgen.store.models import Embedding

# SQLite allows 999 bound parameters per statement in old builds; stay well below.
_QUERY_CHUNK = 500


class Encoder(Protocol):
    """What the cache needs from an encoder (:class:`kbgen.embed.encoder.TextEncoder` is one)."""

    key: str

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class CacheStats:
    """How a request was served: distinct texts, found in the cache, and newly encoded."""

    requested: int
    distinct: int
    cached: int
    encoded: int


def text_sha256(text: str) -> str:
    """Hash of the exact text (no normalisation: a changed space is a changed embedding input)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def lookup(session: Session, key: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
    """Cached vectors of ``key`` for the given text hashes (absent hashes are left out)."""
    found: dict[str, np.ndarray] = {}
    for chunk in _chunks(list(hashes), _QUERY_CHUNK):
        rows = session.execute(
            select(Embedding.text_sha256, Embedding.dim, Embedding.vector).where(
                Embedding.encoder_key == key, Embedding.text_sha256.in_(chunk)
            )
        )
        for sha, dim, blob in rows:
            vector = np.frombuffer(blob, dtype="<f4")
            if vector.shape[0] != dim:
                # A truncated blob is worth re-encoding rather than failing the whole pack.
                continue
            found[sha] = vector.astype(np.float32)
    return found


def _rows(key: str, vectors: dict[str, np.ndarray]) -> list[Embedding]:
    return [
        Embedding(encoder_key=key, text_sha256=sha, dim=int(vec.shape[0]), vector=vec.astype("<f4").tobytes())
        for sha, vec in vectors.items()
    ]


def store(session: Session, key: str, vectors: dict[str, np.ndarray]) -> None:
    """Insert new vectors; rows another process inserted meanwhile are kept as they are."""
    try:
        # A savepoint, so that a clash rolls back these rows only, not the caller's transaction.
        with session.begin_nested():
            session.add_all(_rows(key, vectors))
    except IntegrityError:
        # A parallel `kbgen embed` stored some of the same texts first: add only what is still absent.
        present = lookup(session, key, list(vectors))
        with session.begin_nested():
            session.add_all(_rows(key, {sha: v for sha, v in vectors.items() if sha not in present}))


def embed_cached(
    session: Session,
    encoder: Encoder,
    texts: Sequence[str],
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, CacheStats]:
    """Embeddings of ``texts`` (float32 ``[N, D]``, input order), encoding only uncached texts.

    Duplicates are encoded once. New vectors are flushed to the session; the caller commits.
    ``on_batch`` receives progress counts of the texts actually encoded.
    """
    hashes = [text_sha256(t) for t in texts]
    distinct: dict[str, str] = {}
    for sha, text in zip(hashes, texts, strict=True):
        distinct.setdefault(sha, text)
    cached = lookup(session, encoder.key, list(distinct))
    todo = [sha for sha in distinct if sha not in cached]
    vectors = dict(cached)
    if todo:
        fresh = encoder.encode([distinct[sha] for sha in todo], on_batch=on_batch)
        new = {sha: fresh[i] for i, sha in enumerate(todo)}
        store(session, encoder.key, new)
        vectors.update(new)
    stats = CacheStats(requested=len(texts), distinct=len(distinct), cached=len(cached), encoded=len(todo))
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), stats
    dims = {v.shape[0] for v in vectors.values()}
    if len(dims) != 1:
        raise ValueError(
            f"cached embeddings of encoder '{encoder.key}' have different widths {sorted(dims)}: "
            "delete its rows from the embeddings table and embed again"
        )
    return np.stack([vectors[sha] for sha in hashes]).astype(np.float32), stats

"""The content-hash embedding cache: only new or changed texts reach the encoder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from embed_helpers import build_kb
from sqlalchemy import func, select

from dataspec import load_spec
from kbgen.embed.cache import embed_cached, text_sha256
from kbgen.embed.pack_writer import PackError, write_pack
from kbgen.store import db, repo
from kbgen.store.models import Embedding


class CountingEncoder:
    """A fake encoder (unit tests only): vectors derived from the text hash, every call recorded."""

    def __init__(self, key: str = "fake|mean|raw", dim: int = 8) -> None:
        self.key = key
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        self.calls.append(list(texts))
        if on_batch is not None:
            on_batch(len(texts))
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[: self.dim], dtype=np.uint8) for t in texts]
        return np.asarray(rows, dtype=np.float32) / 255.0

    @property
    def encoded(self) -> int:
        return sum(len(c) for c in self.calls)


def test_second_request_is_served_from_the_cache_and_duplicates_encode_once() -> None:
    encoder = CountingEncoder()
    texts = ["left hand up", "right hand up", "left hand up"]
    with db.session_scope() as s:
        first, stats = embed_cached(s, encoder, texts)
    assert encoder.calls == [["left hand up", "right hand up"]]
    assert (stats.requested, stats.distinct, stats.cached, stats.encoded) == (3, 2, 0, 2)
    assert np.array_equal(first[0], first[2])
    with db.session_scope() as s:
        again, stats = embed_cached(s, encoder, ["right hand up", "left hand up", "head nods"])
    assert encoder.calls[1] == ["head nods"] and stats.cached == 2
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[1], first[0])
    with db.session_scope() as s:
        stored = s.scalar(select(Embedding).where(Embedding.text_sha256 == text_sha256("head nods")))
        assert stored is not None and stored.dim == 8 and stored.encoder_key == encoder.key
        assert np.array_equal(np.frombuffer(stored.vector, dtype="<f4"), again[2])


def test_another_encoder_key_does_not_reuse_vectors() -> None:
    with db.session_scope() as s:
        embed_cached(s, CountingEncoder("a|mean|raw"), ["knee bends"])
    other = CountingEncoder("a|cls|raw")
    with db.session_scope() as s:
        embed_cached(s, other, ["knee bends"])
        assert s.scalar(select(func.count()).select_from(Embedding)) == 2
    assert other.encoded == 1


def test_re_embedding_a_knowledge_base_after_one_edit_encodes_only_that_text(tmp_path) -> None:
    build_kb("nwucla")
    spec = load_spec("nwucla")
    encoder = CountingEncoder()
    with db.session_scope() as s:
        first = write_pack(s, spec, encoder, tmp_path / "a.kpack.safetensors", encoder_info={})
    texts = spec.num_classes * (spec.num_joints + 1)
    assert first.stats.encoded == texts == encoder.encoded  # every text is distinct in build_kb
    with db.session_scope() as s:
        row = repo.get_class(s, "nwucla", "a05")
        repo.save_description(s, row, "joint", 3, "the head lowers as the person sits", "edit")
    with db.session_scope() as s:
        second = write_pack(s, spec, encoder, tmp_path / "b.kpack.safetensors", encoder_info={})
    assert encoder.calls[-1] == ["the head lowers as the person sits"]
    assert (second.stats.cached, second.stats.encoded) == (texts - 1, 1)
    assert second.metadata["kb_revision"] != first.metadata["kb_revision"]
    with db.session_scope() as s:
        unchanged = write_pack(s, spec, encoder, tmp_path / "c.kpack.safetensors", encoder_info={})
    assert len(encoder.calls) == 2 and unchanged.stats.encoded == 0
    assert unchanged.metadata["kb_revision"] == second.metadata["kb_revision"]


def test_embeddings_beyond_float16_range_are_refused(tmp_path) -> None:
    build_kb("nwucla", ["a01"])

    class HugeEncoder(CountingEncoder):
        def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
            return super().encode(texts, on_batch) * 1e6

    with db.session_scope() as s, pytest.raises(PackError, match="beyond float16's range: try --normalize"):
        write_pack(
            s,
            load_spec("nwucla"),
            HugeEncoder(),
            tmp_path / "x.kpack.safetensors",
            encoder_info={},
            allow_missing=True,
        )
    assert not (tmp_path / "x.kpack.safetensors").exists()

"""Helpers for the embedding and pack tests: a small complete knowledge base in the per-test database."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from store_helpers import fill_class, seed_dataset

from dataspec import load_spec
from kbgen.store import db, repo
from kbgen.store.models import Description, KeyjointDistribution


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
    """Seed ``dataset`` and give ``class_ids`` (default: all) texts and k_gt; returns the filled ids.

    Texts go through the store API (``repo.save_description``), as `kbgen generate` stores them.
    """
    spec = load_spec(dataset)
    seed_dataset(dataset)
    ids = list(class_ids) if class_ids is not None else spec.class_ids
    for n, class_id in enumerate(ids):
        fill_class(dataset, class_id)
        add_keyjoints(dataset, class_id, keyjoint_weights(spec.num_joints, n))
    return ids


def bulk_kb(dataset: str) -> None:
    """Every class of ``dataset`` complete, by direct ORM inserts in one transaction (fast)."""
    spec = load_spec(dataset)
    seed_dataset(dataset)
    with db.session_scope() as s:
        for n, class_id in enumerate(spec.class_ids):
            row = repo.get_class(s, dataset, class_id)
            s.add(
                Description(
                    class_pk=row.id, kind="global", text=f"global of {class_id}", version=1, source="import"
                )
            )
            s.add_all(
                Description(
                    class_pk=row.id,
                    kind="joint",
                    joint_position=j.index,
                    text=f"{j.name} moves in {class_id}",
                    version=1,
                    source="import",
                )
                for j in spec.joints
            )
            s.add(KeyjointDistribution(class_pk=row.id, weights=keyjoint_weights(spec.num_joints, n)))


def tiny_deberta_dir(root: Path) -> Path:
    """A randomly initialised DeBERTa-V2 (relative attention, p2c/c2p) with a Unigram tokenizer built here."""
    import torch
    from transformers import DebertaV2Config, DebertaV2Model, DebertaV2Tokenizer

    words = [
        "the",
        "a",
        "person",
        "left",
        "right",
        "hand",
        "arm",
        "rises",
        "lowers",
        "moves",
        "slowly",
        "to",
        "mouth",
        "head",
        "knee",
        "bends",
    ]
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    vocab = [(t, 0.0) for t in specials] + [("▁" + w, -2.0) for w in words]
    vocab += [(ch, -8.0) for ch in "abcdefghijklmnopqrstuvwxyz.,"] + [("▁", -9.0)]
    tokenizer = DebertaV2Tokenizer(vocab=vocab, do_lower_case=True)
    config = DebertaV2Config(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        relative_attention=True,
        position_buckets=32,
        pos_att_type=["p2c", "c2p"],
        pad_token_id=0,
    )
    torch.manual_seed(0)
    path = root / "tiny-deberta-v2"
    DebertaV2Model(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

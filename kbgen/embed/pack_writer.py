"""Write the knowledge pack (``*.kpack.safetensors``) the trainer reads.

Contract (``DESIGN.md``, read by ``trainer/knowledge/pack.py``):

- ``joint_text``  float16 ``[C, J, D]``: embedding of the motion description of joint j of class c
- ``global_text`` float16 ``[C, D]``: embedding of the global description of class c
- ``key_joints``  float32 ``[C, J]``: k_gt, each row sums to 1
- string metadata: format and version, dataset, class ids (JSON, row order), class names, joint
  names (JSON, spec order), encoder, encoder key, D, pooling, normalisation, kb revision (sha256
  of the exact texts and distributions used), the versions of the texts used, classes left out.

Rows follow the dataset spec's class order; joints follow the spec's joint order.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspec import DatasetSpec
from kbgen.embed.cache import CacheStats, Encoder, embed_cached
from kbgen.store.models import ClassRow, Dataset, Description, KeyjointDistribution, Pack

# Must equal trainer/knowledge/pack.py (a test checks both sides agree).
PACK_FORMAT = "crossglg-knowledge-pack"
PACK_FORMAT_VERSION = 1
PACK_SUFFIX = ".kpack.safetensors"


class PackError(ValueError):
    """A pack cannot be written; the message is one line saying what is wrong and what to do."""


@dataclass(frozen=True)
class ClassKnowledge:
    """The current texts and k_gt of one class, in spec joint order."""

    class_id: str
    name: str
    global_text: str
    joint_texts: tuple[str, ...]
    key_joints: tuple[float, ...]
    text_versions: dict[str, object]


@dataclass(frozen=True)
class MissingClass:
    """A class that cannot go into the pack, and why."""

    class_id: str
    reason: str


@dataclass
class KnowledgeSnapshot:
    """Everything a pack is made of, read from the database at one moment."""

    dataset: str
    joint_names: list[str]
    classes: list[ClassKnowledge] = field(default_factory=list)
    missing: list[MissingClass] = field(default_factory=list)

    @property
    def revision(self) -> str:
        """sha256 of the exact texts and distributions of the included classes (see :func:`kb_revision`)."""
        return kb_revision(self.dataset, self.joint_names, self.classes)


@dataclass
class PackResult:
    """A written pack: where, what went in, and how the embedding cache served it."""

    path: Path
    metadata: dict[str, str]
    class_ids: list[str]
    missing: list[MissingClass]
    stats: CacheStats


def kb_revision(dataset: str, joint_names: Sequence[str], classes: Sequence[ClassKnowledge]) -> str:
    """Hash of the exact knowledge a pack holds: texts and k_gt weights, in row order.

    The encoder is not part of it (it has its own metadata): the revision answers "is this the
    knowledge the database holds now?".
    """
    payload = {
        "format_version": PACK_FORMAT_VERSION,
        "dataset": dataset,
        "joints": list(joint_names),
        "classes": [[c.class_id, c.global_text, list(c.joint_texts), list(c.key_joints)] for c in classes],
    }
    canonical = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _dataset_row(session: Session, spec: DatasetSpec) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.name == spec.name))
    if dataset is None:
        raise PackError(
            f"the knowledge base has no dataset '{spec.name}': run `kbgen generate --dataset {spec.name}` "
            "or `kbgen import` first"
        )
    db_joints = [j.name for j in dataset.joints]
    if db_joints and db_joints != spec.joint_names:
        raise PackError(
            f"the joints of dataset '{spec.name}' in the database differ from {spec.path}: the spec changed "
            "after the knowledge base was built; regenerate the joint descriptions or restore the spec"
        )
    return dataset


def _normalised_weights(raw: Sequence[float], num_joints: int) -> tuple[float, ...] | str:
    """k_gt as a distribution, or the reason it is unusable."""
    weights = np.asarray(raw, dtype=np.float64)
    if weights.shape != (num_joints,):
        return f"its key-joint distribution has {weights.size} weights, not {num_joints}"
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        return "its key-joint distribution has negative, non-finite or all-zero weights"
    return tuple(float(w) for w in weights / weights.sum())


def _why_incomplete(
    spec: DatasetSpec,
    current: Sequence[Description],
    joints: dict[int | None, Description],
    dist: KeyjointDistribution | None,
) -> str:
    """Why a class cannot go into a pack, or "" when its texts and k_gt are complete."""
    absent = [name for j, name in enumerate(spec.joint_names) if j not in joints]
    if not current:
        return "it has no descriptions"
    if not any(d.kind == "global" for d in current):
        return "it has no global description"
    if absent:
        more = "…" if len(absent) > 3 else ""
        return f"it has no description of {len(absent)} joint(s) ({', '.join(absent[:3])}{more})"
    if dist is None:
        return "it has no key-joint distribution (run `kbgen keyjoints`)"
    if dist.stale:
        return "its key-joint distribution is stale after a global edit (run `kbgen keyjoints`)"
    return ""


def snapshot(
    session: Session, spec: DatasetSpec, class_ids: Sequence[str] | None = None
) -> KnowledgeSnapshot:
    """Current texts and k_gt of every class of ``spec`` (or of ``class_ids``), with the incomplete ones.

    A class is missing when its global description, any joint description or a current, not stale,
    key-joint distribution is absent.
    """
    dataset = _dataset_row(session, spec)
    wanted = [spec.get_class(c).id for c in class_ids] if class_ids is not None else spec.class_ids
    rows = {c.class_id: c for c in session.scalars(select(ClassRow).where(ClassRow.dataset_id == dataset.id))}
    pks = [rows[c].id for c in wanted if c in rows]
    descriptions: dict[int, list[Description]] = {pk: [] for pk in pks}
    for d in session.scalars(
        select(Description).where(Description.class_pk.in_(pks), Description.is_current.is_(True))
    ):
        descriptions[d.class_pk].append(d)
    distributions = {
        k.class_pk: k
        for k in session.scalars(
            select(KeyjointDistribution).where(
                KeyjointDistribution.class_pk.in_(pks), KeyjointDistribution.is_current.is_(True)
            )
        )
    }
    snap = KnowledgeSnapshot(dataset=spec.name, joint_names=spec.joint_names)
    num_joints = spec.num_joints
    for class_id in wanted:
        row = rows.get(class_id)
        if row is None:
            snap.missing.append(MissingClass(class_id, "it has no descriptions"))
            continue
        current = descriptions[row.id]
        global_rows = [d for d in current if d.kind == "global"]
        joints = {d.joint_position: d for d in current if d.kind == "joint"}
        dist = distributions.get(row.id)
        reason = _why_incomplete(spec, current, joints, dist)
        weights = _normalised_weights(dist.weights, num_joints) if not reason and dist else ()
        if isinstance(weights, str):
            reason = weights
        if reason:
            snap.missing.append(MissingClass(class_id, reason))
            continue
        snap.classes.append(
            ClassKnowledge(
                class_id=class_id,
                name=row.name,
                global_text=global_rows[0].text,
                joint_texts=tuple(joints[j].text for j in range(num_joints)),
                key_joints=weights,
                text_versions={
                    "global": global_rows[0].version,
                    "joints": [joints[j].version for j in range(num_joints)],
                    "keyjoints_id": dist.id,
                },
            )
        )
    return snap


def missing_message(missing: Sequence[MissingClass], limit: int = 5) -> str:
    """One line naming the incomplete classes (the first ``limit`` with their reasons)."""
    shown = "; ".join(f"{m.class_id}: {m.reason}" for m in missing[:limit])
    more = f"; and {len(missing) - limit} more" if len(missing) > limit else ""
    return f"{len(missing)} class(es) are incomplete — {shown}{more}"


def build_pack_arrays(
    session: Session,
    snap: KnowledgeSnapshot,
    encoder: Encoder,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], CacheStats]:
    """The three pack tensors of the snapshot's classes (embeddings through the cache)."""
    num_joints = len(snap.joint_names)
    texts: list[str] = []
    for c in snap.classes:
        texts.append(c.global_text)
        texts.extend(c.joint_texts)
    vectors, stats = embed_cached(session, encoder, texts, on_batch=on_batch)
    if not np.isfinite(vectors).all() or np.abs(vectors).max() > np.finfo(np.float16).max:
        raise PackError(
            "the encoder gave non-finite embeddings or values beyond float16's range: "
            "try --normalize, or another --encoder / dtype"
        )
    per_class = vectors.reshape(len(snap.classes), num_joints + 1, -1)
    arrays = {
        "global_text": np.ascontiguousarray(per_class[:, 0]).astype(np.float16),
        "joint_text": np.ascontiguousarray(per_class[:, 1:]).astype(np.float16),
        "key_joints": np.asarray([c.key_joints for c in snap.classes], dtype=np.float32),
    }
    return arrays, stats


def pack_metadata(snap: KnowledgeSnapshot, encoder_info: dict[str, object], dim: int) -> dict[str, str]:
    """The string metadata of a pack (safetensors keeps ``dict[str, str]``)."""
    return {
        "format": PACK_FORMAT,
        "format_version": str(PACK_FORMAT_VERSION),
        "dataset": snap.dataset,
        "class_ids": json.dumps([c.class_id for c in snap.classes]),
        "class_names": json.dumps([c.name for c in snap.classes]),
        "joint_names": json.dumps(snap.joint_names),
        "encoder": str(encoder_info.get("encoder", "")),
        "encoder_key": str(encoder_info.get("encoder_key", "")),
        "dim": str(dim),
        "pooling": str(encoder_info.get("pooling", "")),
        "normalize": json.dumps(bool(encoder_info.get("normalize", False))),
        "kb_revision": snap.revision,
        "text_versions": json.dumps({c.class_id: c.text_versions for c in snap.classes}),
        "missing_classes": json.dumps([{"class_id": m.class_id, "reason": m.reason} for m in snap.missing]),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_pack(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write atomically (temporary file + rename): a reader never sees half a pack."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(arrays, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_pack(
    session: Session,
    spec: DatasetSpec,
    encoder: Encoder,
    path: Path,
    *,
    encoder_info: dict[str, object],
    allow_missing: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> PackResult:
    """Embed the current knowledge of ``spec``'s classes and write the pack to ``path``.

    Raises :class:`PackError` naming the incomplete classes unless ``allow_missing``, in which
    case they are left out (and listed in the metadata). Registers the pack in ``packs``;
    the caller commits.
    """
    snap = snapshot(session, spec)
    if snap.missing and not allow_missing:
        raise PackError(
            f"{missing_message(snap.missing)}: complete them, or pass --allow-missing to leave them out"
        )
    if not snap.classes:
        raise PackError(f"no class of dataset '{spec.name}' is complete: nothing to pack")
    arrays, stats = build_pack_arrays(session, snap, encoder, on_batch=on_batch)
    metadata = pack_metadata(snap, encoder_info, dim=int(arrays["global_text"].shape[1]))
    save_pack(path, arrays, metadata)
    dataset = _dataset_row(session, spec)
    session.add(
        Pack(
            dataset_id=dataset.id,
            path=str(path.resolve()),
            kb_revision=metadata["kb_revision"],
            encoder_key=metadata["encoder_key"],
            num_classes=len(snap.classes),
        )
    )
    session.flush()
    return PackResult(
        path=path,
        metadata=metadata,
        class_ids=[c.class_id for c in snap.classes],
        missing=snap.missing,
        stats=stats,
    )

"""Evaluation protocols as data: the one-shot split and the standard cross-subject/setup/view splits.

Everything is read from the spec's ``protocols`` section; the functions here only apply it. The
``*_from_labels``/``*_from_meta`` variants work on plain names, labels and metadata columns, so a
protocol can be checked against the official sample lists without any skeleton file.

Validation for checkpoint choice (``protocols.oneshot.validation``): a deterministic subset of the
training classes' samples, never of the novel classes. Rule ``name_hash``: a sample is held out when
``crc32(name) % 1000 < 10 * percent`` (stable across machines, Python versions and store order).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dataspec import DatasetSpec

if TYPE_CHECKING:
    from trainer.data.store import PreparedStore


class ProtocolError(ValueError):
    """A protocol cannot be applied to these samples; the message says what is missing."""


@dataclass(frozen=True)
class OneShotSplit:
    """Index arrays into the store (or the given name list) for one-shot training and evaluation."""

    train: np.ndarray
    val: np.ndarray
    exemplars: np.ndarray
    queries: np.ndarray
    auxiliary: np.ndarray
    train_class_ids: list[str]
    novel_class_ids: list[str]
    validation_rule: str

    def sizes(self) -> dict[str, int]:
        """Number of samples in each part."""
        return {
            "train": len(self.train),
            "val": len(self.val),
            "exemplars": len(self.exemplars),
            "queries": len(self.queries),
            "auxiliary": len(self.auxiliary),
            "train_classes": len(self.train_class_ids),
            "novel_classes": len(self.novel_class_ids),
        }


@dataclass(frozen=True)
class StandardSplit:
    """Train/test indices of a standard protocol (xsub, xset, xview)."""

    name: str
    train: np.ndarray
    test: np.ndarray
    rule: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "test": len(self.test)}


def validation_mask(names: Sequence[str], rule: dict[str, Any]) -> np.ndarray:
    """Which samples the spec's validation rule holds out (boolean per name)."""
    kind = rule.get("rule", "name_hash")
    if kind != "name_hash":
        raise ProtocolError(f"unknown validation rule '{kind}': the trainer knows 'name_hash'")
    threshold = int(round(float(rule.get("percent", 5)) * 10))
    return np.fromiter(
        (zlib.crc32(n.encode()) % 1000 < threshold for n in names), dtype=bool, count=len(names)
    )


def oneshot_split_from_labels(
    names: Sequence[str],
    labels: np.ndarray | Sequence[int],
    spec: DatasetSpec,
    train_classes: int | None = None,
    *,
    partial: bool = False,
) -> OneShotSplit:
    """The one-shot split of samples given by name and label (index into the spec's classes).

    ``train_classes``: size of the auxiliary training subset (a key of ``train_class_subsets``);
    None trains on every auxiliary class. A listed exemplar that is absent is an error, unless
    ``partial`` (synthetic or partial data): then a novel class without samples is left out and one
    whose exemplar is absent uses its first sample in name order.
    """
    proto = spec.oneshot()
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(names):
        raise ProtocolError(f"{len(names)} names but {len(labels)} labels")
    class_ids = spec.class_ids
    novel = list(proto.novel)
    aux_rows = [i for i, c in enumerate(class_ids) if c not in set(novel)]
    if partial:
        novel = [c for c in novel if (labels == class_ids.index(c)).any()]
    novel_rows = [class_ids.index(c) for c in novel]
    if train_classes is None:
        train_ids = [class_ids[i] for i in aux_rows]
    elif train_classes in proto.train_class_subsets:
        train_ids = list(proto.train_class_subsets[train_classes])
    else:
        known = ", ".join(str(k) for k in sorted(proto.train_class_subsets)) or "none"
        raise ProtocolError(
            f"no {train_classes}-class training subset in spec {spec.name} (subsets: {known}); "
            "add it to protocols.oneshot.train_class_subsets"
        )
    train_rows = np.array([class_ids.index(c) for c in train_ids])
    index = {n: i for i, n in enumerate(names)}
    exemplars = []
    for cid, row in zip(novel, novel_rows, strict=True):
        name = proto.exemplars.get(cid)
        if name in index and labels[index[name]] == row:
            exemplars.append(index[name])
            continue
        candidates = np.flatnonzero(labels == row)
        if not partial or not len(candidates):
            where = (
                f"exemplar {name} of class {cid}"
                if name
                else f"no exemplar for class {cid} in the spec, and it"
            )
            raise ProtocolError(
                f"{where} is not among the samples: prepare the full dataset, list it in the spec, "
                "or allow a partial split"
            )
        exemplars.append(int(min(candidates, key=lambda i: names[i])))
    exemplar_idx = np.array(exemplars, dtype=np.int64)
    is_novel = np.isin(labels, novel_rows)
    is_query = is_novel.copy()
    is_query[exemplar_idx] = False
    in_train_classes = np.isin(labels, train_rows)
    rule = dict(proto.extra.get("validation") or {"rule": "name_hash", "percent": 5})
    held_out = validation_mask(names, rule) & in_train_classes
    return OneShotSplit(
        train=np.flatnonzero(in_train_classes & ~held_out),
        val=np.flatnonzero(held_out),
        exemplars=exemplar_idx,
        queries=np.flatnonzero(is_query),
        auxiliary=np.flatnonzero(np.isin(labels, aux_rows)),
        train_class_ids=train_ids,
        novel_class_ids=novel,
        validation_rule=", ".join(f"{k}={v}" for k, v in rule.items()),
    )


def oneshot_split(store: PreparedStore, train_classes: int | None = None, **kwargs: Any) -> OneShotSplit:
    """The one-shot split of a prepared store (see :func:`oneshot_split_from_labels`)."""
    return oneshot_split_from_labels(store.names, store.labels, store.spec, train_classes, **kwargs)


def standard_protocols(spec: DatasetSpec) -> list[str]:
    """Names of the standard splits the spec defines (those with ``column`` and ``train``)."""
    return [k for k, v in spec.protocols.items() if isinstance(v, dict) and "column" in v and "train" in v]


def standard_split_from_meta(meta: dict[str, np.ndarray], spec: DatasetSpec, name: str) -> StandardSplit:
    """A standard split: samples whose ``column`` value is in the ``train`` list train, the rest test."""
    if name not in standard_protocols(spec):
        known = ", ".join(["oneshot", *standard_protocols(spec)])
        raise ProtocolError(f"spec {spec.name} has no '{name}' protocol (known: {known})")
    proto = spec.protocols[name]
    column = str(proto["column"])
    if column not in meta:
        raise ProtocolError(f"protocol {name} splits on '{column}', which these samples do not record")
    values = np.asarray(meta[column])
    is_train = np.isin(values, [int(v) for v in proto["train"]])
    return StandardSplit(
        name=name,
        train=np.flatnonzero(is_train),
        test=np.flatnonzero(~is_train),
        rule=str(proto.get("rule", f"{column} in {list(proto['train'])} → train")),
    )


def standard_split(store: PreparedStore, name: str) -> StandardSplit:
    """A standard split (``xsub``, ``xset``, ``xview``…) of a prepared store."""
    return standard_split_from_meta(store.meta, store.spec, name)

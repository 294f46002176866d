"""Protocols as data: NTU-120 one-shot counts from the official lists, validation rule, standard splits."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from dataspec import load_spec
from trainer.data.protocol import (
    ProtocolError,
    oneshot_split_from_labels,
    standard_protocols,
    standard_split_from_meta,
    validation_mask,
)

NTU120 = load_spec("ntu120")


@pytest.fixture(scope="module")
def ntu120_meta() -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    folder = shared_path("data", "ntu120_meta")
    names = (folder / "skes_available_name.txt").read_text().split()
    labels = np.array((folder / "label.txt").read_text().split(), dtype=np.int64) - 1
    meta = {
        c: np.array((folder / f"{c}.txt").read_text().split(), dtype=np.int64)
        for c in ("setup", "camera", "performer", "replication")
    }
    return names, labels, meta


def test_ntu120_oneshot_counts(ntu120_meta) -> None:
    names, labels, _ = ntu120_meta
    split = oneshot_split_from_labels(names, labels, NTU120, 100)
    assert len(split.queries) == 18_924
    assert len(split.exemplars) == 20
    assert len(split.auxiliary) == 95_001
    assert len(split.train) + len(split.val) == 95_001
    assert [names[i] for i in split.exemplars] == [
        NTU120.oneshot().exemplars[c] for c in split.novel_class_ids
    ]
    assert not set(split.exemplars) & set(split.queries)


def test_validation_never_touches_novel_classes(ntu120_meta) -> None:
    names, labels, _ = ntu120_meta
    novel_rows = [NTU120.class_index(c) for c in NTU120.oneshot().novel]
    for n in (20, 60, 100):
        split = oneshot_split_from_labels(names, labels, NTU120, n)
        train_rows = [NTU120.class_index(c) for c in split.train_class_ids]
        assert len(split.train_class_ids) == n
        assert not np.isin(labels[split.val], novel_rows).any()
        assert np.isin(labels[split.val], train_rows).all() and np.isin(labels[split.train], train_rows).all()
        assert not set(split.train) & set(split.val)
        assert 0.04 < len(split.val) / (len(split.train) + len(split.val)) < 0.06
    # Deterministic: a function of the name only, whatever the order of samples.
    mask = validation_mask(names, {"rule": "name_hash", "percent": 5})
    order = np.random.default_rng(0).permutation(len(names))
    np.testing.assert_array_equal(validation_mask([names[i] for i in order], {"percent": 5}), mask[order])


def test_training_subset_must_exist(ntu120_meta) -> None:
    names, labels, _ = ntu120_meta
    with pytest.raises(ProtocolError, match="no 30-class training subset"):
        oneshot_split_from_labels(names, labels, NTU120, 30)


def test_missing_exemplar_is_an_error_unless_fallback() -> None:
    names = ["S002C001P001R001A001", "S001C001P002R001A001", "S001C001P001R001A002"]
    labels = [0, 0, 1]
    spec = load_spec("ntu120")
    with pytest.raises(ProtocolError, match="exemplar S001C003P008R001A001 of class A1"):
        oneshot_split_from_labels(names, labels, spec)
    split = oneshot_split_from_labels(names, labels, spec, partial=True)
    assert split.novel_class_ids == ["A1"] and split.exemplars.tolist() == [1]  # first A1 in name order
    assert split.queries.tolist() == [0] and split.auxiliary.tolist() == [2]


def test_ntu120_standard_splits(ntu120_meta) -> None:
    names, _, meta = ntu120_meta
    assert set(standard_protocols(NTU120)) == {"xsub", "xset"}
    xsub = standard_split_from_meta(meta, NTU120, "xsub")
    assert len(xsub.train) == 63_026 and len(xsub.train) + len(xsub.test) == len(names)
    assert set(meta["performer"][xsub.train]) == set(NTU120.protocols["xsub"]["train"])
    xset = standard_split_from_meta(meta, NTU120, "xset")
    assert (meta["setup"][xset.train] % 2 == 0).all() and (meta["setup"][xset.test] % 2 == 1).all()
    with pytest.raises(ProtocolError, match="has no 'xview' protocol"):
        standard_split_from_meta(meta, NTU120, "xview")


def test_ntu60_xview_uses_cameras_two_and_three() -> None:
    spec = load_spec("ntu60")
    camera = np.array([1, 2, 3, 1, 3])
    split = standard_split_from_meta({"camera": camera}, spec, "xview")
    assert split.train.tolist() == [1, 2, 4] and split.test.tolist() == [0, 3]
    xsub = spec.protocols["xsub"]["train"]
    assert len(xsub) == 20 and max(xsub) == 38

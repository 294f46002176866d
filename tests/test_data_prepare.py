"""`prepare_dataset` and `PreparedStore`: real samples, broken corpora, resume, refusal, workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from dataspec import load_spec
from trainer.data.prepare import STATE_FILE, PrepareError, prepare_dataset
from trainer.data.store import PreparedStore, StoreError
from trainer.data.synthetic import write_broken_corpus, write_ntu_corpus

NTU120 = load_spec("ntu120")


def test_real_ntu_samples_and_their_crlf_copy(tmp_path: Path) -> None:
    raw = shared_path("data", "ntu_samples")
    summary = prepare_dataset(NTU120, raw, tmp_path / "lf")
    assert summary.found == summary.prepared == 5 and summary.skipped == 0
    store = PreparedStore.open(tmp_path / "lf")
    assert len(store) == 5 and store.frames.shape[1:] == (2, 25, 3) and store.frames.dtype == np.float16
    i = store.index_of("S001C001P001R001A050")
    assert store.class_ids[store.labels[i]] == "A50"
    assert store.meta["setup"][store.index_of("S004C002P003R001A017")] == 4
    assert store.sample(i)[:, 1].any()  # two-person sample: second slot is a real actor
    assert store.lengths.sum() == store.frames.shape[0] == summary.frames
    prepare_dataset(NTU120, raw / "crlf", tmp_path / "crlf")
    crlf = PreparedStore.open(tmp_path / "crlf")
    j = store.index_of("S001C001P001R001A001")
    np.testing.assert_array_equal(crlf.sample(0), store.sample(j))
    manifest = store.manifest
    assert manifest["preprocessing"]["noisy_frame_ratio"] == 0.69754
    assert manifest["preprocessing"]["single_actor_fill"] == "duplicate"
    assert manifest["counts"]["samples"] == 5 and manifest["checksums"]["frames.f16"]


def test_broken_corpus_is_reported_not_fatal(tmp_path: Path) -> None:
    expected = write_broken_corpus(tmp_path / "raw")
    summary = prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "store", workers=2)
    good = [f for f, code in expected.items() if code is None]
    assert summary.prepared == len(good) and summary.found == len(expected)
    assert summary.prepared + summary.skipped == summary.found
    report = json.loads((tmp_path / "store" / "prepare_report.json").read_text())
    assert {s["file"]: s["code"] for s in report["skipped_files"]} == {
        f: c for f, c in expected.items() if c is not None
    }
    assert sum(report["skipped_by_reason"].values()) == report["skipped"] == summary.skipped
    store = PreparedStore.open(tmp_path / "store")
    assert sorted(store.names) == sorted(f.removesuffix(".skeleton") for f in good)


def test_missing_list_is_honoured(tmp_path: Path) -> None:
    files = write_ntu_corpus(tmp_path / "raw", 6, classes=["A2", "A3"], seed=1)
    listed = files[2].stem
    missing = tmp_path / "NTU_RGBD120_samples_with_missing_skeletons.txt"
    missing.write_text(f"header line\n\n{listed}\n")
    summary = prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "store")  # found next to --raw
    assert summary.skipped_by_reason == {"missing_list": 1}
    assert PreparedStore.open(tmp_path / "store").manifest["source"]["missing_listed"] == 1


def test_workers_give_the_same_store(tmp_path: Path) -> None:
    write_ntu_corpus(tmp_path / "raw", 16, classes=["A1", "A2", "A3"], seed=2)
    prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "one", workers=1)
    prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "two", workers=2)
    a, b = PreparedStore.open(tmp_path / "one"), PreparedStore.open(tmp_path / "two")
    assert a.names == b.names and a.names == sorted(a.names)
    np.testing.assert_array_equal(np.asarray(a.frames), np.asarray(b.frames))
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.manifest["checksums"] == b.manifest["checksums"]


def test_interrupted_run_resumes_to_the_same_store(tmp_path: Path) -> None:
    write_ntu_corpus(tmp_path / "raw", 20, classes=["A4", "A5"], seed=3)
    prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "fresh")

    def crash(done: int, total: int, skipped: int) -> None:
        if done == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "store", checkpoint_every=5, on_progress=crash)
    assert (tmp_path / "store" / STATE_FILE).exists()
    with pytest.raises(StoreError, match="unfinished"):
        PreparedStore.open(tmp_path / "store")
    frames = tmp_path / "store" / "frames.f16"
    saved = frames.read_bytes()
    frames.write_bytes(saved[:100])  # a damaged unfinished store is refused, not padded
    with pytest.raises(PrepareError, match="damaged"):
        prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "store", checkpoint_every=5)
    frames.write_bytes(saved)
    summary = prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "store", checkpoint_every=5)
    assert summary.resumed_from == 10 and summary.prepared == 20
    fresh, resumed = PreparedStore.open(tmp_path / "fresh"), PreparedStore.open(tmp_path / "store")
    assert resumed.manifest["checksums"] == fresh.manifest["checksums"]
    assert not (tmp_path / "store" / STATE_FILE).exists()


def test_rerun_refuses_never_mixes(tmp_path: Path) -> None:
    write_ntu_corpus(tmp_path / "raw", 4, classes=["A6"], seed=4)
    write_ntu_corpus(tmp_path / "other", 4, classes=["A8"], seed=5)
    prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "store")
    with pytest.raises(PrepareError, match="already holds a finished store"):
        prepare_dataset(NTU120, tmp_path / "other", tmp_path / "store")
    # An unfinished store of other inputs is not resumed with these.
    state = tmp_path / "store" / STATE_FILE
    (tmp_path / "store" / "manifest.json").unlink()
    state.write_text(json.dumps({"fingerprint": "something else", "next": 2}))
    with pytest.raises(PrepareError, match="unfinished store of other inputs"):
        prepare_dataset(NTU120, tmp_path / "other", tmp_path / "store")
    summary = prepare_dataset(NTU120, tmp_path / "other", tmp_path / "store", overwrite=True)
    assert summary.prepared == 4 and summary.resumed_from == 0
    assert {n[-4:] for n in PreparedStore.open(tmp_path / "store").names} == {"A008"}
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(PrepareError, match="not empty and is not a store"):
        prepare_dataset(NTU120, tmp_path / "raw", tmp_path / "junk")
    with pytest.raises(PrepareError, match="no \\*.skeleton files"):
        prepare_dataset(NTU120, tmp_path / "junk", tmp_path / "new")


def test_store_from_arrays_and_open_errors(tmp_path: Path) -> None:
    spec = load_spec("nwucla")
    samples = [np.full((n, 1, 20, 3), n, dtype=np.float32) for n in (3, 5)]
    store = PreparedStore.from_arrays(spec, samples, [0, 9])
    assert len(store) == 2 and store.lengths.tolist() == [3, 5] and store.sample(1).max() == 5
    with pytest.raises(StoreError, match="not a prepared store"):
        PreparedStore.open(tmp_path)


@pytest.fixture(scope="module")
def nwucla_store(tmp_path_factory: pytest.TempPathFactory) -> PreparedStore:
    raw = shared_path("data", "nwucla", "all_sqe")
    out = tmp_path_factory.mktemp("nwucla") / "store"
    prepare_dataset(load_spec("nwucla"), raw, out, workers=2)
    return PreparedStore.open(out)


def test_all_of_nwucla_prepares(nwucla_store: PreparedStore) -> None:
    store = nwucla_store
    assert len(store) == 1484 and store.report()["skipped"] == 0
    assert store.frames.shape[1:] == (1, 20, 3)
    assert sorted(set(store.meta["view"].tolist())) == [1, 2, 3]
    i = store.index_of("a12_s09_e04_v03")
    assert store.class_ids[store.labels[i]] == "a12" and store.meta["subject"][i] == 9
    raw = json.loads(shared_path("data", "nwucla", "all_sqe", "a12_s09_e04_v03.json").read_text())
    xyz = np.asarray(raw["skeletons"], dtype=np.float32)
    xyz = xyz[np.any(xyz != 0, axis=(1, 2))]
    np.testing.assert_allclose(store.sample(i)[:, 0], xyz - xyz[0, 1], atol=2e-3)


def test_nwucla_protocols_match_the_official_view3_list(nwucla_store: PreparedStore) -> None:
    import pickle

    from trainer.data.protocol import oneshot_split, standard_split

    val = pickle.loads(shared_path("data", "nwucla", "val_label.pkl").read_bytes())
    split = standard_split(nwucla_store, "xview")
    assert sorted(nwucla_store.names[i] for i in split.test) == sorted(v["file_name"] for v in val)
    one = oneshot_split(nwucla_store)
    names = [nwucla_store.names[i] for i in one.exemplars]
    assert names == ["a01_s01_e00_v01", "a05_s01_e00_v01", "a11_s01_e00_v01"]
    novel_rows = [nwucla_store.class_ids.index(c) for c in one.novel_class_ids]
    assert not np.isin(nwucla_store.labels[np.concatenate([one.train, one.val])], novel_rows).any()
    assert len(one.queries) + len(one.exemplars) + len(one.auxiliary) == len(nwucla_store)


def test_store_can_be_copied_and_reopened(nwucla_store: PreparedStore, tmp_path: Path) -> None:
    assert nwucla_store.path is not None
    copy = tmp_path / "copy"
    shutil.copytree(nwucla_store.path, copy)
    again = PreparedStore.open(copy)
    assert again.names == nwucla_store.names and again.spec.name == "nwucla"

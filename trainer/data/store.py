"""The prepared store: ragged skeleton frames on disk, memory-mapped, plus labels, names and metadata.

Layout of a store directory (written by :mod:`trainer.data.prepare`)::

    frames.f16      float16 [total_frames, persons, joints, 3], C order, no header (np.memmap)
    offsets.npy     int64 [N + 1]: sample i is frames[offsets[i]:offsets[i + 1]]
    labels.npy      int64 [N]: index into the spec's class list
    names.txt       one sample name per line
    meta.npz        int32 columns of length N (setup, camera, performer, replication / subject, episode, view)
    spec.yaml       the dataset spec the store was built with
    manifest.json   dataset, counts, preprocessing parameters, checksums (written last: a store without it
                    is unfinished)
    prepare_report.json   every skipped raw file and why
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from dataspec import DatasetSpec, SpecError, load_spec

FORMAT_VERSION = 1
FRAMES_FILE = "frames.f16"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "prepare_report.json"


class StoreError(ValueError):
    """A store is missing, unfinished or inconsistent; the message says what to do."""


@dataclass
class PreparedStore:
    """A prepared dataset: ``frames[offsets[i]:offsets[i+1]]`` is sample ``i`` ``[T, M, V, 3]``."""

    frames: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    names: list[str]
    meta: dict[str, np.ndarray]
    spec: DatasetSpec
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def open(cls, path: str | Path, spec: DatasetSpec | None = None) -> PreparedStore:
        """Open a finished store (frames memory-mapped, nothing else large is read)."""
        root = Path(path)
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            hint = (
                "it is unfinished: rerun trainer prepare to resume" if (root / FRAMES_FILE).exists() else ""
            )
            raise StoreError(
                f"{root} is not a prepared store (no {MANIFEST_FILE}){'; ' + hint if hint else ''}: "
                "build one with `trainer prepare --dataset D --raw DIR --out DIR`"
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{root} has store format {manifest.get('format_version')}, "
                f"this trainer reads {FORMAT_VERSION}: "
                "rebuild it with trainer prepare --overwrite"
            )
        offsets = np.load(root / "offsets.npy")
        total = int(offsets[-1])
        shape = (total, *manifest["frame_shape"])
        frames = (
            np.memmap(root / FRAMES_FILE, dtype=np.float16, mode="r", shape=shape)
            if total
            else np.zeros(shape, dtype=np.float16)
        )
        with np.load(root / "meta.npz") as npz:
            meta = {k: npz[k] for k in npz.files}
        names = (root / "names.txt").read_text().splitlines()
        labels = np.load(root / "labels.npy")
        if not len(names) == len(labels) == len(offsets) - 1:
            raise StoreError(f"{root}: names, labels and offsets disagree in length; rebuild the store")
        spec = spec or _store_spec(root, manifest)
        if spec.class_ids != manifest["class_ids"]:
            raise StoreError(
                f"{root} was built with other classes than spec {spec.name}: "
                "rebuild the store or pass its spec"
            )
        return cls(frames, offsets, labels, names, meta, spec, manifest, root)

    @classmethod
    def from_arrays(
        cls,
        spec: DatasetSpec,
        samples: list[np.ndarray],
        labels: np.ndarray | list[int],
        names: list[str] | None = None,
        meta: dict[str, np.ndarray] | None = None,
    ) -> PreparedStore:
        """An in-memory store from per-sample arrays ``[T, M, V, 3]`` (tests, benchmarks)."""
        lengths = np.array([len(s) for s in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        frames = np.concatenate(samples).astype(np.float16)
        names = names or [f"sample{i:06d}" for i in range(len(samples))]
        manifest = {"dataset": spec.name, "class_ids": spec.class_ids, "frame_shape": list(frames.shape[1:])}
        return cls(frames, offsets, np.asarray(labels, dtype=np.int64), names, meta or {}, spec, manifest)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        """Frames per sample, int64 ``[N]``."""
        return np.diff(self.offsets)

    @property
    def class_ids(self) -> list[str]:
        """Class ids in spec order; ``labels`` index this list."""
        return self.spec.class_ids

    @property
    def persons(self) -> int:
        return int(self.frames.shape[1])

    @cached_property
    def _index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def index_of(self, name: str) -> int:
        """Position of a sample by name; :class:`KeyError` with a clear message when absent."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"sample '{name}' is not in the store") from None

    def sample(self, i: int) -> np.ndarray:
        """Sample ``i`` as float32 ``[T, M, V, 3]``."""
        return np.asarray(self.frames[self.offsets[i] : self.offsets[i + 1]], dtype=np.float32)

    def report(self) -> dict[str, Any] | None:
        """The prepare report (skipped files and why), when the store is on disk."""
        if self.path is None or not (self.path / REPORT_FILE).is_file():
            return None
        return json.loads((self.path / REPORT_FILE).read_text())


def _store_spec(root: Path, manifest: dict[str, Any]) -> DatasetSpec:
    """The repository's spec of the dataset when its classes match the store, else the store's copy."""
    try:
        spec = load_spec(manifest["dataset"])
        if spec.class_ids == manifest["class_ids"]:
            return spec
    except SpecError:
        pass
    return load_spec(root / "spec.yaml")

"""``trainer prepare``: stream raw skeleton files into a prepared store (see :mod:`trainer.data.store`).

Files are read, denoised and transformed by worker processes and written in name order by this
process, one sample at a time, so memory stays flat whatever the dataset size. Every unusable file
is skipped with its reason (``prepare_report.json``); counts add up: found = prepared + skipped.
A checkpoint every few thousand files lets an interrupted run resume; a run never writes into a
finished store or into an unfinished one of different inputs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dataspec import DatasetSpec
from trainer.data import fastparse, ntu_skeleton
from trainer.data.denoise import DenoiseParams, denoise
from trainer.data.readers import Reader, SkipSample, get_reader
from trainer.data.store import FORMAT_VERSION, FRAMES_FILE, MANIFEST_FILE, REPORT_FILE

STATE_FILE = ".prepare_state.json"
_STORE_FILES = (
    FRAMES_FILE,
    "offsets.npy",
    "labels.npy",
    "names.txt",
    "meta.npz",
    "spec.yaml",
    MANIFEST_FILE,
    REPORT_FILE,
)
# Largest |coordinate| float16 holds with room to spare; beyond it a sample is corrupt, not a skeleton.
_MAX_ABS_COORD = 1000.0


class PrepareError(ValueError):
    """The inputs or the output folder do not allow a run; the message says what to do."""


@dataclass(frozen=True)
class PrepareSummary:
    """What one run did."""

    out: Path
    found: int
    prepared: int
    skipped: int
    skipped_by_reason: dict[str, int]
    frames: int
    seconds: float
    resumed_from: int
    bytes_on_disk: int

    @property
    def files_per_second(self) -> float:
        return (self.found - self.resumed_from) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Job:
    spec: DatasetSpec
    reader: Reader
    params: DenoiseParams
    missing: frozenset[str]


_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _JOB
    _JOB = job


def process_file(path: str, job: _Job | None = None) -> tuple[str, Any, Any, Any, Any]:
    """Read, denoise and transform one raw file.

    Returns ``(name, label, meta, frames f16 bytes, stats)`` or ``(name, None, code, detail, None)``.
    Never raises: every failure becomes a skip with its reason.
    """
    job = job or _JOB
    assert job is not None
    name = Path(path).name.removesuffix(job.reader.suffix)
    try:
        class_id, meta = job.reader.parse_name(name)
        if class_id not in job.spec.class_ids:
            raise SkipSample("unknown_class", f"class {class_id} is not in dataset {job.spec.name}")
        if name in job.missing:
            raise SkipSample("missing_list", "listed in the official samples-with-missing-skeletons file")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SkipSample("read_error", f"cannot read the file ({exc.strerror})") from None
        actors, stats = denoise(job.reader.read(data, job.spec), job.params)
        if np.abs(actors).max() > _MAX_ABS_COORD:
            raise SkipSample("out_of_range", f"coordinates beyond ±{_MAX_ABS_COORD:g} m")
        label = job.spec.class_ids.index(class_id)
        return name, label, meta, actors.astype(np.float16).tobytes(), stats
    except SkipSample as skip:
        return name, None, skip.code, skip.detail, None
    except Exception as exc:  # a reader bug must not stop a 100k-file run; it is reported per file
        return name, None, "error", f"{type(exc).__name__}: {exc}", None


def read_missing_list(path: Path) -> frozenset[str]:
    """Sample names from an official ``*_samples_with_missing_skeletons.txt`` (header lines ignored)."""
    names = set()
    for line in path.read_text(errors="replace").splitlines():
        word = line.strip()
        try:
            ntu_skeleton.parse_ntu_name(word)
        except SkipSample:
            continue
        names.add(word)
    return frozenset(names)


def find_missing_list(raw_dir: Path) -> Path | None:
    """The official missing-skeleton list next to or above the raw folder, if the user put it there."""
    for folder in (raw_dir, raw_dir.parent):
        hits = sorted(folder.glob("*samples_with_missing_skeletons.txt"))
        if hits:
            return hits[-1]
    return None


def list_raw_files(raw_dir: Path, suffix: str) -> list[str]:
    """Raw files of one format in a folder, in name order (the order of the store)."""
    with os.scandir(raw_dir) as entries:
        return sorted(e.path for e in entries if e.name.endswith(suffix) and e.is_file())


def prepare_dataset(
    spec: DatasetSpec,
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    workers: int = 1,
    missing_list: str | Path | None = None,
    align_view: bool = False,
    overwrite: bool = False,
    checkpoint_every: int = 2000,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> PrepareSummary:
    """Prepare every raw file of ``raw_dir`` into a store at ``out_dir`` (resuming an interrupted run).

    ``on_progress(done, total, skipped)`` is called after each file.
    """
    raw = Path(raw_dir)
    out = Path(out_dir)
    if not raw.is_dir():
        raise PrepareError(f"raw folder {raw} does not exist: pass the folder with the raw skeleton files")
    try:
        reader = get_reader(spec.format)
    except SkipSample as exc:
        raise PrepareError(exc.detail) from None
    files = list_raw_files(raw, reader.suffix)
    if not files:
        raise PrepareError(f"no *{reader.suffix} files in {raw}: is this the {spec.title} raw folder?")
    missing_path = Path(missing_list) if missing_list else find_missing_list(raw)
    if missing_path is not None and not missing_path.is_file():
        raise PrepareError(f"missing-skeleton list {missing_path} does not exist")
    missing = read_missing_list(missing_path) if missing_path else frozenset()
    params = DenoiseParams.from_spec(spec, align_view=align_view)
    preprocessing = {
        **params.as_dict(),
        "max_frames": ntu_skeleton.MAX_FRAMES,
        "max_bodies_per_frame": ntu_skeleton.MAX_BODIES_PER_FRAME,
        "max_abs_coordinate": _MAX_ABS_COORD,
        "dtype": "float16",
    }
    fingerprint = _fingerprint(spec, raw, files, preprocessing, missing)
    frame_bytes = spec.persons * spec.num_joints * 3 * 2  # float16
    state = _claim_output(out, fingerprint, overwrite, frame_bytes)
    writer = _StoreWriter(out, spec, reader, state, fingerprint, checkpoint_every)
    job = _Job(spec, reader, params, missing)
    start = time.perf_counter()
    todo = files[writer.next_index :]
    for result in _run(job, todo, workers):
        writer.add(*result)
        if on_progress:
            on_progress(writer.next_index, len(files), len(writer.skipped))
    seconds = time.perf_counter() - start
    source = {
        "raw_dir": str(raw.resolve()),
        "format": spec.format,
        "reader": reader.description,
        "missing_list": str(missing_path) if missing_path else None,
        "missing_listed": len(missing),
    }
    writer.finish(len(files), preprocessing, source, seconds)
    by_reason = Counter(s["code"] for s in writer.skipped)
    return PrepareSummary(
        out=out,
        found=len(files),
        prepared=len(writer.labels),
        skipped=len(writer.skipped),
        skipped_by_reason=dict(by_reason.most_common()),
        frames=writer.frames_written,
        seconds=seconds,
        resumed_from=state["next"] if state else 0,
        bytes_on_disk=sum((out / f).stat().st_size for f in _STORE_FILES if (out / f).exists()),
    )


def _run(job: _Job, files: list[str], workers: int) -> Iterator[tuple[str, Any, Any, Any, Any]]:
    if workers <= 1 or len(files) < 2 * workers:
        for path in files:
            yield process_file(path, job)
        return
    fastparse.warm_up()
    ctx = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        # Ordered results keep the store in name order; small chunks keep memory flat.
        yield from pool.imap(process_file, files, chunksize=16)


def _fingerprint(
    spec: DatasetSpec, raw: Path, files: list[str], preprocessing: dict[str, Any], missing: frozenset[str]
) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([spec.name, spec.sha256, str(raw.resolve()), preprocessing], default=str).encode())
    h.update("\n".join(Path(f).name for f in files).encode())
    h.update("\n".join(sorted(missing)).encode())
    return h.hexdigest()


def _claim_output(out: Path, fingerprint: str, overwrite: bool, frame_bytes: int) -> dict[str, Any] | None:
    """Make ``out`` ready; return the checkpoint state of a run to resume, or None for a fresh start."""
    if out.exists() and not out.is_dir():
        raise PrepareError(f"{out} is a file: choose a folder for the store")
    if overwrite and out.is_dir():
        for name in (*_STORE_FILES, STATE_FILE):
            (out / name).unlink(missing_ok=True)
    if (out / MANIFEST_FILE).exists():
        raise PrepareError(
            f"{out} already holds a finished store: pass --overwrite to rebuild it or choose another --out"
        )
    state_path = out / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") != fingerprint:
            raise PrepareError(
                f"{out} holds an unfinished store of other inputs or parameters: "
                "pass --overwrite to start over"
            )
        frames = out / FRAMES_FILE
        needed = sum(state.get("lengths", [])) * frame_bytes
        if not frames.is_file() or frames.stat().st_size < needed:
            raise PrepareError(
                f"{out} holds an unfinished store whose {FRAMES_FILE} is damaged: pass --overwrite"
            )
        return state
    if out.is_dir() and any(out.iterdir()):
        raise PrepareError(f"{out} is not empty and is not a store: choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    return None


class _StoreWriter:
    """Appends samples in order; checkpoints so that a killed run resumes where it stopped."""

    def __init__(
        self,
        out: Path,
        spec: DatasetSpec,
        reader: Reader,
        state: dict[str, Any] | None,
        fingerprint: str,
        checkpoint_every: int,
    ) -> None:
        self.out, self.spec, self.reader = out, spec, reader
        self.fingerprint = fingerprint
        self.checkpoint_every = checkpoint_every
        self.frame_bytes = spec.persons * spec.num_joints * 3 * 2
        state = state or {}
        self.next_index: int = state.get("next", 0)
        self.lengths: list[int] = state.get("lengths", [])
        self.labels: list[int] = state.get("labels", [])
        self.names: list[str] = state.get("names", [])
        self.meta: dict[str, list[int]] = state.get("meta", {c: [] for c in reader.meta_columns})
        self.skipped: list[dict[str, str]] = state.get("skipped", [])
        self.stats: Counter[str] = Counter(state.get("stats", {}))
        self.frames_written: int = sum(self.lengths)
        self.file = open(out / FRAMES_FILE, "r+b" if state else "wb")  # noqa: SIM115 (closed in finish)
        # Anything written after the last checkpoint belongs to files that will be processed again.
        self.file.truncate(self.frames_written * self.frame_bytes)
        self.file.seek(0, os.SEEK_END)

    def add(self, name: str, label: Any, meta: Any, payload: Any, stats: Any) -> None:
        if label is None:
            self.skipped.append({"file": name + self.reader.suffix, "code": meta, "reason": payload})
        else:
            self.file.write(payload)
            n = len(payload) // self.frame_bytes
            self.lengths.append(n)
            self.frames_written += n
            self.labels.append(label)
            self.names.append(name)
            for col in self.meta:
                self.meta[col].append(meta[col])
            self.stats.update(stats)
        self.next_index += 1
        if self.next_index % self.checkpoint_every == 0:
            self._checkpoint()

    def _checkpoint(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        state = {
            "fingerprint": self.fingerprint,
            "next": self.next_index,
            "lengths": self.lengths,
            "labels": self.labels,
            "names": self.names,
            "meta": self.meta,
            "skipped": self.skipped,
            "stats": dict(self.stats),
        }
        _write_json_atomic(self.out / STATE_FILE, state)

    def finish(
        self, found: int, preprocessing: dict[str, Any], source: dict[str, Any], seconds: float
    ) -> None:
        self.file.close()
        out = self.out
        offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)]).astype(np.int64)
        np.save(out / "offsets.npy", offsets)
        np.save(out / "labels.npy", np.asarray(self.labels, dtype=np.int64))
        (out / "names.txt").write_text("".join(n + "\n" for n in self.names))
        np.savez(out / "meta.npz", **{c: np.asarray(v, dtype=np.int32) for c, v in self.meta.items()})
        (out / "spec.yaml").write_text(self.spec.raw_text)
        by_reason = Counter(s["code"] for s in self.skipped)
        report = {
            "dataset": self.spec.name,
            "files_found": found,
            "prepared": len(self.labels),
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(by_reason.most_common()),
            "skipped_files": self.skipped,
        }
        _write_json_atomic(out / REPORT_FILE, report)
        per_class = Counter(self.spec.class_ids[i] for i in self.labels)
        lengths = np.asarray(self.lengths) if self.lengths else np.zeros(1)
        manifest = {
            "kind": "crossglg-prepared-store",
            "format_version": FORMAT_VERSION,
            "dataset": self.spec.name,
            "spec_sha256": self.spec.sha256,
            "class_ids": self.spec.class_ids,
            "joint_names": self.spec.joint_names,
            "frames_file": FRAMES_FILE,
            "dtype": "float16",
            "layout": "[frames, persons, joints, xyz]",
            "frame_shape": [self.spec.persons, self.spec.num_joints, 3],
            "meta_columns": list(self.meta),
            "counts": {
                "files_found": found,
                "samples": len(self.labels),
                "skipped": len(self.skipped),
                "frames": self.frames_written,
                "length_min": int(lengths.min()),
                "length_mean": round(float(lengths.mean()), 2),
                "length_max": int(lengths.max()),
                "per_class": {c: per_class.get(c, 0) for c in self.spec.class_ids},
            },
            "preprocessing": preprocessing,
            "denoising_totals": dict(self.stats),
            "source": source,
            "checksums": {f: _sha256(out / f) for f in _STORE_FILES[:6]},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tool": f"trainer {_tool_version()}",
            "seconds_last_run": round(seconds, 2),
        }
        _write_json_atomic(out / MANIFEST_FILE, manifest)  # last: its presence marks a finished store
        (out / STATE_FILE).unlink(missing_ok=True)


def _tool_version() -> str:
    try:
        return importlib.metadata.version("crossglg")
    except importlib.metadata.PackageNotFoundError:  # running from a plain checkout (GPU machines)
        return "checkout"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)

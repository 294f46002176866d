"""Generator of synthetic NTU-format ``.skeleton`` corpora for tests, smoke runs and benchmarks.

Each file has 40–300 frames and 1–3 actors moving in a class-dependent rhythm, plus the kinds of
noise the denoiser must remove: short-lived bodies, horizontally spread (non-human) bodies, a body
id that changes mid-clip, empty frames. :func:`write_broken_corpus` writes files that must be
skipped with a reason, never crash ``trainer prepare``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dataspec import DatasetSpec, load_spec

# A rough standing pose in metres, Kinect v2 joint order (x right, y up), centred on the spine middle.
_POSE = np.array(
    [
        [0.0, -0.3, 0.0], [0.0, 0.0, 0.0], [0.0, 0.35, 0.0], [0.0, 0.5, 0.0],
        [0.18, 0.25, 0.0], [0.25, 0.0, 0.0], [0.28, -0.2, 0.0], [0.29, -0.27, 0.0],
        [-0.18, 0.25, 0.0], [-0.25, 0.0, 0.0], [-0.28, -0.2, 0.0], [-0.29, -0.27, 0.0],
        [0.09, -0.32, 0.0], [0.1, -0.75, 0.0], [0.1, -1.15, 0.0], [0.1, -1.2, -0.1],
        [-0.09, -0.32, 0.0], [-0.1, -0.75, 0.0], [-0.1, -1.15, 0.0], [-0.1, -1.2, -0.1],
        [0.0, 0.25, 0.0], [0.3, -0.33, 0.0], [0.27, -0.3, 0.03], [-0.3, -0.33, 0.0], [-0.27, -0.3, 0.03],
    ],
    dtype=np.float64,
)  # fmt: skip
_ARM = np.array([5, 6, 7, 21, 22, 9, 10, 11, 23, 24])
_BODY_INFO = " 0 1 1 1 1 0 0.01234567 0.02345678 2\n25\n"


def ntu_name(setup: int, camera: int, performer: int, replication: int, action: int) -> str:
    """The NTU sample name ``SsssCcccPpppRrrrAaaa``."""
    return f"S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}A{action:03d}"


def _body_motion(rng: np.random.Generator, n: int, action: int, x0: float) -> np.ndarray:
    """A moving body ``[n, 25, 3]``: arms swing at a class-dependent rate, the body drifts."""
    t = np.arange(n)[:, None]
    rate = 0.03 + 0.01 * (action % 9)
    pose = np.repeat(_POSE[None], n, axis=0)
    swing = 0.15 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    pose[:, _ARM, 1] += swing * np.linspace(0.5, 1.0, len(_ARM))
    pose[:, _ARM, 2] -= 0.5 * np.abs(swing)
    drift = np.cumsum(rng.normal(0, 0.003, (n, 1, 3)), axis=0)
    pose += drift + rng.normal(0, 0.004, pose.shape)
    pose += np.array([x0, 0.1, 3.2 + rng.uniform(-0.3, 0.3)])
    return pose


def _tail(rng: np.random.Generator) -> list[str]:
    """The 9 values after x y z of each joint line (depth/colour 2-D, orientation, state)."""
    v = rng.uniform(0, 1, (25, 8)) * [512, 424, 1920, 1080, 1, 1, 1, 1]
    return [" " + " ".join(f"{x:.6g}" for x in row) + " 2" for row in v]


def skeleton_text(n_frames: int, bodies: list[tuple[int, int, np.ndarray]], rng: np.random.Generator) -> str:
    """The ``.skeleton`` text of ``bodies`` = (body id, first frame, joints ``[len, 25, 3]``)."""
    tail = _tail(rng)
    frame_fmt = "".join(f"%.7f %.7f %.7f{tail[j]}\n" for j in range(25))
    per_frame: list[list[str]] = [[] for _ in range(n_frames)]
    for body_id, start, joints in bodies:
        head = f"{body_id}{_BODY_INFO}"
        for k, frame in enumerate(joints.reshape(len(joints), -1)):
            per_frame[start + k].append(head + frame_fmt % tuple(frame))
    parts = [f"{n_frames}\n"]
    for entries in per_frame:
        parts.append(f"{len(entries)}\n")
        parts.extend(entries)
    return "".join(parts)


def synthetic_sample(rng: np.random.Generator, action: int) -> str:
    """One synthetic file: 40–300 frames, 1–3 actors, and noise bodies with some probability."""
    n = int(rng.integers(40, 301))
    n_actors = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    lead = int(rng.integers(1, 6)) if rng.random() < 0.1 else 0  # empty frames before anyone is tracked
    next_id = int(rng.integers(72057594037900000, 72057594037999999))
    bodies = []
    for a in range(n_actors):
        joints = _body_motion(rng, n - lead, action, x0=0.8 * a - 0.4 * (n_actors - 1))
        if a == 0 and rng.random() < 0.1:  # tracking lost once: the same person gets a new body id
            cut = (n - lead) // 2
            bodies += [(next_id, lead, joints[:cut]), (next_id + 7, lead + cut, joints[cut:])]
            next_id += 14
        else:
            bodies.append((next_id, lead, joints))
            next_id += 7
    if rng.random() < 0.3:  # a short-lived false detection
        length = int(rng.integers(2, 12))
        start = int(rng.integers(lead, n - length + 1))
        bodies.append((next_id, start, _body_motion(rng, length, action, x0=1.5)))
        next_id += 7
    if rng.random() < 0.15:  # a long, horizontally spread non-human "body" (furniture seen as a body)
        flat = _body_motion(rng, n - lead, action, x0=-1.5)[:, :, [1, 0, 2]]
        bodies.append((next_id, lead, flat))
    return skeleton_text(n, bodies, rng)


def _write_one(args: tuple[str, str, int, int]) -> None:
    path, name, action, seed = args
    rng = np.random.default_rng(seed)
    Path(path, name + ".skeleton").write_text(synthetic_sample(rng, action))


def corpus_names(
    n_files: int, classes: Sequence[str], rng: np.random.Generator, exemplars: Sequence[str] = ()
) -> list[tuple[str, int]]:
    """Distinct sample names (exemplars first) spread over ``classes``."""
    actions = [int(c.lstrip("Aa")) for c in classes]
    names: dict[str, int] = {}
    for ex in exemplars[:n_files]:
        names[ex] = int(ex[-3:])
    while len(names) < n_files:
        action = actions[len(names) % len(actions)]
        name = ntu_name(
            int(rng.integers(1, 33)),
            int(rng.integers(1, 4)),
            int(rng.integers(1, 107)),
            int(rng.integers(1, 3)),
            action,
        )
        names.setdefault(name, action)
    return list(names.items())


def write_ntu_corpus(
    out_dir: str | Path,
    n_files: int,
    *,
    classes: Sequence[str] | None = None,
    spec: DatasetSpec | str = "ntu120",
    seed: int = 0,
    include_exemplars: bool = True,
    workers: int = 1,
) -> list[Path]:
    """Write ``n_files`` synthetic ``.skeleton`` files; return their paths in name order.

    ``classes`` (default: all of the spec's) are used round-robin. With ``include_exemplars`` the
    spec's one-shot exemplar names of those classes are among the files, so one-shot splits work.
    """
    spec = load_spec(spec) if isinstance(spec, str) else spec
    classes = list(classes or spec.class_ids)
    rng = np.random.default_rng(seed)
    exemplars: list[str] = []
    if include_exemplars and "oneshot" in spec.protocols:
        ex = spec.oneshot().exemplars
        exemplars = [ex[c] for c in spec.oneshot().novel if c in ex and c in classes]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        (str(out), name, action, seed * 1_000_003 + i)
        for i, (name, action) in enumerate(corpus_names(n_files, classes, rng, exemplars))
    ]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, tasks, chunksize=8):
                pass
    else:
        for task in tasks:
            _write_one(task)
    return sorted(out / f"{name}.skeleton" for _, name, _, _ in tasks)


def write_broken_corpus(out_dir: str | Path, seed: int = 0) -> dict[str, str | None]:
    """Write NTU-format files that must be skipped, plus a few good ones.

    Returns file name → the skip code ``trainer prepare`` must report (None: must be prepared).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    good = synthetic_sample(rng, 2)
    expected: dict[str, str | None] = {}

    def put(name: str, content: str | bytes, code: str | None) -> None:
        data = content.encode() if isinstance(content, str) else content
        (out / f"{name}.skeleton").write_bytes(data)
        expected[f"{name}.skeleton"] = code

    put(ntu_name(1, 1, 1, 1, 2), good, None)
    put(ntu_name(1, 1, 1, 2, 2), good.replace("\n", "\r\n"), None)
    put(ntu_name(1, 1, 2, 1, 3), "", "empty")
    put(ntu_name(1, 1, 2, 2, 3), "\n \n", "empty")
    put(ntu_name(1, 1, 3, 1, 4), good[: len(good) // 2], "truncated")
    put(ntu_name(1, 1, 3, 2, 4), b"\x00\xff\x13garbage" + rng.bytes(5000), "not_text")
    lines = good.split("\n")
    coord_line = next(i for i, line in enumerate(lines) if line.count(" ") == 11)
    for rep, (action, word) in enumerate([(5, "nan"), (6, "inf")]):
        bad = lines.copy()
        bad[coord_line] = word + bad[coord_line][bad[coord_line].index(" ") :]
        put(ntu_name(1, 1, 4, rep + 1, action), "\n".join(bad), "non_finite")
    huge = lines.copy()
    huge[coord_line] = "123456789.0" + huge[coord_line][huge[coord_line].index(" ") :]
    put(ntu_name(1, 1, 5, 1, 7), "\n".join(huge), "out_of_range")
    put(ntu_name(1, 1, 5, 2, 8), good.replace("\n25\n", "\n20\n", 1), "bad_joint_count")
    put(ntu_name(1, 1, 6, 1, 9), "50\n" + "0\n" * 50, "no_body")
    put(ntu_name(1, 1, 6, 2, 10), "99999999\n" + good.split("\n", 1)[1], "absurd_frame_count")
    put(ntu_name(1, 1, 7, 1, 11), "3\n1000\n", "absurd_body_count")
    flicker = skeleton_text(
        40,
        [(11, 0, _body_motion(rng, 5, 1, 0.0)), (12, 20, _body_motion(rng, 8, 1, 0.5))],
        rng,
    )
    put(ntu_name(1, 1, 7, 2, 12), flicker, "no_body_after_denoise")
    put(ntu_name(1, 1, 8, 1, 121), good, "unknown_class")
    put("notes", good, "bad_name")
    return expected

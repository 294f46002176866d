"""Reader of NTU RGB+D ``.skeleton`` text files (LF or CRLF).

Layout (NTU RGB+D README): a frame count; per frame a body count; per body one info line
(body id + 9 tracking values), a joint count and one line of 12 values per joint
(x y z, depth x y, colour x y, orientation w x y z, tracking state). We keep x y z only.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from dataspec import DatasetSpec
from trainer.data import fastparse
from trainer.data.readers import RawBodies, Reader, SkipSample, register_reader

# Kinect v2 records at 30 fps; NTU clips are at most 300 frames. A header beyond this is corrupt.
MAX_FRAMES = 10_000
# Kinect v2 tracks at most 6 bodies; allow some slack before calling a count absurd.
MAX_BODIES_PER_FRAME = 16
_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")


def parse_ntu_name(stem: str) -> tuple[str, dict[str, int]]:
    """``S001C002P003R002A013`` → (``A13``, setup/camera/performer/replication)."""
    m = _NAME.match(stem)
    if not m:
        raise SkipSample("bad_name", f"'{stem}' is not an NTU sample name like S001C001P001R001A001")
    setup, camera, performer, replication, action = (int(g) for g in m.groups())
    meta = {"setup": setup, "camera": camera, "performer": performer, "replication": replication}
    return f"A{action}", meta


def read_ntu_skeleton(data: bytes, spec: DatasetSpec) -> RawBodies:
    """Parse one ``.skeleton`` file; raise :class:`SkipSample` with the reason when it is unusable."""
    if not data.strip():
        raise SkipSample("empty", "the file is empty")
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    line_start = np.concatenate([[0], newlines + 1])
    line_end = np.concatenate([newlines, [len(buf)]])
    starts_list, ends_list = line_start.tolist(), line_end.tolist()
    n_lines = len(starts_list)
    n_joints = spec.num_joints

    # The structure is walked line by line in Python, one step per body (int() ignores the CR of
    # CRLF files); the coordinates of all joint lines are converted in one vectorised call below.
    # Error messages are built only on failure: this loop runs ~10^8 times over NTU-120.
    first_joint: list[int] = []
    frames: list[int] = []
    bodies: list[int] = []
    ids: dict[bytes, int] = {}
    valid = empty = f = 0
    q = 1
    what = "frame count"
    try:
        n_frames = int(data[starts_list[0] : ends_list[0]])
        if n_frames < 0 or n_frames > MAX_FRAMES:
            raise SkipSample("absurd_frame_count", f"header says {n_frames} frames (limit {MAX_FRAMES})")
        for f in range(n_frames):  # noqa: B007 (f is read by the error messages below)
            what = "body count"
            n_bodies = int(data[starts_list[q] : ends_list[q]])
            q += 1
            if n_bodies == 0:
                empty += 1
                continue
            if not 0 < n_bodies <= MAX_BODIES_PER_FRAME:
                raise SkipSample("absurd_body_count", f"frame {f + 1} says {n_bodies} bodies")
            what = "joint count"
            for _ in range(n_bodies):
                count = int(data[starts_list[q + 1] : ends_list[q + 1]])
                if count != n_joints:
                    raise SkipSample(
                        "bad_joint_count",
                        f"frame {f + 1} has a body with {count} joints, {spec.name} has {n_joints}",
                    )
                first_joint.append(q + 2)
                frames.append(valid)
                bodies.append(ids.setdefault(data[starts_list[q] : ends_list[q]].split(None, 1)[0], len(ids)))
                q += 2 + n_joints
            valid += 1
    except IndexError:
        raise SkipSample("truncated", f"file ends before the {what} of frame {f + 1}") from None
    except ValueError:
        line = {"frame count": 0, "body count": q, "joint count": q + 1}[what]
        shown = data[starts_list[line] : ends_list[line]][:20].decode("ascii", "replace")
        where = "" if what == "frame count" else f" of frame {f + 1}"
        raise SkipSample("not_text", f"expected the {what}{where}, found '{shown}'") from None
    if q > n_lines:
        raise SkipSample("truncated", f"file ends inside the last body ({n_lines} of {q} lines)")
    if not first_joint:
        raise SkipSample("no_body", f"none of the {n_frames} frames has a body")
    joint_lines = (np.asarray(first_joint)[:, None] + np.arange(n_joints)).ravel()
    values = _joint_xyz(data, buf, line_start[joint_lines], line_end[joint_lines])
    if not np.isfinite(values).all():
        raise SkipSample("non_finite", "joint coordinates contain NaN or infinity")
    return RawBodies(
        n_frames=valid,
        frame=np.asarray(frames, dtype=np.int32),
        body=np.asarray(bodies, dtype=np.int32),
        xyz=values.reshape(len(first_joint), n_joints, 3),
        empty_frames=empty,
    )


def _joint_xyz(data: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The first three numbers of each joint line, float32 ``[n * 3]``.

    Fastest path: the compiled parser of :mod:`trainer.data.fastparse` when numba is installed.
    Otherwise: the official files separate values by single spaces, so the text from a line's
    start to its third space is exactly ``x y z``; those spans are gathered into one buffer and
    parsed by :func:`parse_plain_decimals` (exponents, nan, inf: by NumPy's C parser). Any other
    spacing falls back to splitting each line in Python.
    """
    n = len(starts)
    if fastparse.xyz_from_lines is not None:
        out = np.empty(3 * n)
        if fastparse.xyz_from_lines(buf, starts, out) == n:
            return out.astype(np.float32)
    spaces = np.flatnonzero(buf == 32)
    third = np.minimum(np.searchsorted(spaces, starts) + 2, len(spaces) - 1)
    span_end = np.minimum(spaces[third] if len(spaces) else ends, ends)
    lengths = span_end - starts + 1
    offsets = np.cumsum(lengths)
    gather = np.arange(int(offsets[-1])) + np.repeat(starts - (offsets - lengths), lengths)
    text = buf[np.minimum(gather, len(buf) - 1)].copy()
    text[offsets - 1] = 32  # the separator after each span
    values = parse_plain_decimals(text, 3 * n)
    if values is not None:
        return values.astype(np.float32)
    with warnings.catch_warnings():  # exponents, nan, inf: NumPy's C parser
        warnings.simplefilter("error")
        try:
            values = np.fromstring(text.tobytes(), dtype=np.float32, sep=" ")
        except (ValueError, DeprecationWarning):
            values = np.zeros(0, dtype=np.float32)
    if len(values) == 3 * n:
        return values
    try:
        rows = [data[a:b].split()[:3] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
        if any(len(r) != 3 for r in rows):
            raise SkipSample("truncated", "a joint line has fewer than 3 values")
        return np.array([float(v) for r in rows for v in r], dtype=np.float32)
    except ValueError:
        raise SkipSample("not_text", "a joint coordinate is not a number") from None


_POW10 = 10.0 ** np.arange(32)
# Character classes of the plain-decimal parser: digit 0, dot 1, minus 2, space 3, anything else 4.
_CLASS = np.full(256, 4, dtype=np.uint8)
_CLASS[48:58], _CLASS[46], _CLASS[45], _CLASS[32] = 0, 1, 2, 3
_DIGIT = np.zeros(256)
_DIGIT[48:58] = np.arange(10)


def parse_plain_decimals(text: np.ndarray, count: int) -> np.ndarray | None:
    """Values of ``count`` plain decimals (``-0.2059419``) in ``text``, each followed by one space.

    Vectorised over characters (about twice as fast as ``np.fromstring``): each digit is weighted
    by 10 to the number of digits after it in its number, the sums are divided by 10 to the number
    of decimals. Returns None when the text holds anything else (exponents, nan, double spaces),
    for the caller to parse another way.
    """
    sep = text == 32
    ends = np.flatnonzero(sep)
    if len(ends) != count or count == 0:
        return None
    cls = _CLASS[text]
    if cls.max() > 3:
        return None
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    seen = np.cumsum(cls == 0, dtype=np.int32)
    digits_at_end = seen[ends]
    if (np.diff(digits_at_end, prepend=0) == 0).any():
        return None  # a number without digits ("-", ".", or an empty token)
    token = np.cumsum(sep, dtype=np.int32)
    token -= sep
    after = digits_at_end[token]
    after -= seen
    if int(after.max()) >= len(_POW10):
        return None
    values = np.add.reduceat(_DIGIT[text] * _POW10[after], starts)
    dots = np.flatnonzero(cls == 1)
    if len(dots):
        dot_token = token[dots]
        if (np.diff(dot_token) == 0).any():
            return None  # two dots in one number
        values[dot_token] /= _POW10[after[dots]]
    minus = np.flatnonzero(cls == 2)
    if len(minus):
        if not sep[minus[minus > 0] - 1].all():
            return None  # a minus sign inside a number
        values[token[minus]] *= -1
    return values


NTU_READER = register_reader(
    Reader(
        format="ntu_skeleton",
        suffix=".skeleton",
        meta_columns=("setup", "camera", "performer", "replication"),
        parse_name=parse_ntu_name,
        read=read_ntu_skeleton,
        description="NTU RGB+D .skeleton text files",
    )
)

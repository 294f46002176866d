"""Raw readers and the reference denoising: real NTU/NW-UCLA files, hand-built bodies, broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from dataspec import load_spec
from trainer.data import fastparse
from trainer.data.denoise import DenoiseParams, denoise
from trainer.data.ntu_skeleton import parse_ntu_name, parse_plain_decimals, read_ntu_skeleton
from trainer.data.nwucla import parse_nwucla_name, read_nwucla_json
from trainer.data.prepare import _Job, process_file
from trainer.data.readers import RawBodies, SkipSample, get_reader, list_formats
from trainer.data.synthetic import _POSE, skeleton_text, write_broken_corpus

NTU120 = load_spec("ntu120")
NTU60 = load_spec("ntu60")


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def coordinate_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every reader test runs with the compiled parser (when numba is installed) and the NumPy one."""
    if request.param == "numpy":
        monkeypatch.setattr(fastparse, "xyz_from_lines", None)
    elif fastparse.xyz_from_lines is None:
        pytest.skip("numba is not installed")
    return request.param


def _raw_coordinates(path: Path) -> list[np.ndarray]:
    """Plain-Python parse of a .skeleton file: xyz of every body line, per frame (the test's reference)."""
    lines = path.read_text().split()
    # Token walk: frames, bodies, 10 info tokens, joint count, 12 values per joint.
    out, p = [], 1
    for _ in range(int(lines[0])):
        nb = int(lines[p])
        p += 1
        frame = []
        for _ in range(nb):
            nj = int(lines[p + 10])
            vals = np.array(lines[p + 11 : p + 11 + 12 * nj], dtype=float).reshape(nj, 12)
            frame.append(vals[:, :3])
            p += 11 + 12 * nj
        out.append(frame)
    return out


def test_registry_knows_the_builtin_formats() -> None:
    assert {"ntu_skeleton", "nwucla_json"} <= set(list_formats())
    assert get_reader(NTU120.format).suffix == ".skeleton"
    with pytest.raises(SkipSample, match="no reader for format 'bvh'"):
        get_reader("bvh")


def test_names_parse_to_class_and_meta() -> None:
    assert parse_ntu_name("S017C003P020R002A060") == (
        "A60",
        {"setup": 17, "camera": 3, "performer": 20, "replication": 2},
    )
    assert parse_nwucla_name("a12_s09_e04_v03") == ("a12", {"subject": 9, "episode": 4, "view": 3})
    with pytest.raises(SkipSample, match="not an NTU sample name"):
        parse_ntu_name("S17C3")


@pytest.mark.parametrize("name", ["S001C001P001R001A001", "S004C002P003R001A017"])
def test_real_one_person_file(name: str) -> None:
    path = shared_path("data", "ntu_samples", f"{name}.skeleton")
    raw = read_ntu_skeleton(path.read_bytes(), NTU120)
    reference = _raw_coordinates(path)
    assert raw.n_bodies == 1 and raw.n_frames == sum(1 for f in reference if f)
    np.testing.assert_allclose(raw.xyz[0], reference[0][0], rtol=1e-6)
    np.testing.assert_allclose(raw.xyz[-1], [f for f in reference if f][-1][0], rtol=1e-6)
    actors, stats = denoise(raw, DenoiseParams.from_spec(NTU120))
    assert actors.shape == (raw.n_frames, 2, 25, 3) and stats["actors"] == 1
    np.testing.assert_array_equal(actors[0, 0, 1], 0)  # centred on the spine middle of frame 0
    np.testing.assert_array_equal(actors[:, 1], actors[:, 0])  # NTU-120 duplicates a single actor
    ntu60_actors, _ = denoise(raw, DenoiseParams.from_spec(NTU60))
    assert not ntu60_actors[:, 1].any()  # NTU-60 pads zeros
    np.testing.assert_allclose(actors[:, 0], reference_centred(raw), atol=1e-6)


def reference_centred(raw: RawBodies) -> np.ndarray:
    return raw.xyz - raw.xyz[0, 1]


def test_real_two_person_file() -> None:
    path = shared_path("data", "ntu_samples", "S001C003P008R002A058.skeleton")
    raw = read_ntu_skeleton(path.read_bytes(), NTU120)
    assert raw.n_bodies == 2
    actors, stats = denoise(raw, DenoiseParams.from_spec(NTU120))
    assert stats["actors"] == 2 and stats["dropped_short"] == stats["dropped_spread"] == 0
    assert actors[:, 0].any(axis=(1, 2)).all() and actors[:, 1].any(axis=(1, 2)).all()
    # Actor 1 is the body that moves most.
    motion = [raw.xyz[raw.body == b].reshape(-1, 3).var(axis=0).sum() for b in range(2)]
    first = raw.xyz[raw.body == int(np.argmax(motion))]
    np.testing.assert_allclose(actors[:, 0], first - first[0, 1], atol=1e-6)


def test_crlf_copy_reads_identically() -> None:
    lf = shared_path("data", "ntu_samples", "S001C001P001R001A001.skeleton").read_bytes()
    crlf = shared_path("data", "ntu_samples", "crlf", "S001C001P001R001A001.skeleton").read_bytes()
    assert b"\r\n" in crlf
    a, b = read_ntu_skeleton(lf, NTU120), read_ntu_skeleton(crlf, NTU120)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.frame, b.frame)


def test_irregular_spacing_falls_back_and_agrees() -> None:
    path = shared_path("data", "ntu_samples", "S001C001P001R001A011.skeleton")
    text = path.read_bytes()
    odd = text.replace(b" ", b"  \t")
    np.testing.assert_array_equal(read_ntu_skeleton(odd, NTU120).xyz, read_ntu_skeleton(text, NTU120).xyz)


def test_nwucla_file() -> None:
    folder = shared_path("data", "nwucla", "all_sqe")
    path = folder / "a01_s01_e00_v01.json"
    spec = load_spec("nwucla")
    raw = read_nwucla_json(path.read_bytes(), spec)
    assert raw.xyz.shape[1:] == (20, 3) and raw.n_bodies == 1
    actors, _ = denoise(raw, DenoiseParams.from_spec(spec))
    assert actors.shape == (raw.n_frames, 1, 20, 3)
    np.testing.assert_allclose(actors[0, 0, spec.center_joint], 0, atol=1e-7)


def _bodies(*tracks: tuple[int, int, np.ndarray]) -> RawBodies:
    """RawBodies from (body, first frame, joints [n, 25, 3]) tracks."""
    frames, bodies, xyz = [], [], []
    for body, start, joints in tracks:
        frames += list(range(start, start + len(joints)))
        bodies += [body] * len(joints)
        xyz.append(joints)
    order = np.argsort(frames, kind="stable")
    return RawBodies(
        n_frames=max(frames) + 1,
        frame=np.asarray(frames)[order],
        body=np.asarray(bodies)[order],
        xyz=np.concatenate(xyz)[order].astype(np.float32),
    )


def _track(n: int, shift: float, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    pose = np.repeat(_POSE[None], n, axis=0) + [shift, 0, 3]
    return pose + rng.normal(0, amplitude, pose.shape)


def test_denoise_drops_short_and_spread_bodies_and_ranks_by_motion() -> None:
    rng = np.random.default_rng(0)
    calm = _track(60, -0.5, 0.001, rng)
    lively = _track(60, 0.5, 0.05, rng)
    blip = _track(11, 1.5, 0.0, rng)  # seen in 11 frames: noise
    table = _track(60, 2.0, 0.001, rng)[:, :, [1, 0, 2]]  # wide in x, flat in y: noisy in every frame
    raw = _bodies((0, 0, calm), (1, 0, lively), (2, 10, blip), (3, 0, table))
    actors, stats = denoise(raw, DenoiseParams.from_spec(NTU120))
    assert stats["dropped_short"] == 1 and stats["dropped_spread"] == 1 and stats["actors"] == 2
    origin = lively[0, 1]
    np.testing.assert_allclose(actors[:, 0], lively - origin, atol=1e-5)  # most motion → actor 1
    np.testing.assert_allclose(actors[:, 1], calm - origin, atol=1e-5)


def test_denoise_keeps_a_lone_short_body_and_fills_gaps_of_actor_one() -> None:
    rng = np.random.default_rng(1)
    lone = _bodies((0, 0, _track(5, 0, 0.01, rng)))
    assert denoise(lone, DenoiseParams.from_spec(NTU120))[0].shape[0] == 5  # one body: no denoising
    # A person whose tracking id changes mid-clip: the second id continues actor 1, not actor 2.
    a, b = _track(40, 0, 0.05, rng), _track(40, 0, 0.05, rng)
    raw = _bodies((0, 0, a), (1, 40, b))
    actors, stats = denoise(raw, DenoiseParams.from_spec(NTU60))
    assert stats["actors"] == 2 and actors.shape[0] == 80
    assert actors[:, 0].any(axis=(1, 2)).all() and not actors[:, 1].any()
    # Sharing one boundary frame is not an overlap (the reference's rule); two frames are.
    for shared, second_slot_used in ((1, False), (2, True)):
        raw = _bodies((0, 0, a), (1, 40 - shared, b))
        actors, _ = denoise(raw, DenoiseParams.from_spec(NTU60))
        assert actors[:, 1].any() == second_slot_used


def test_denoise_drops_frames_without_actors_and_overlapping_third_body() -> None:
    rng = np.random.default_rng(2)
    a, b, c = (_track(30, s, 0.02 * (3 - i), rng) for i, s in enumerate((-1, 0, 1)))
    raw = _bodies((0, 0, a), (1, 0, b), (2, 0, c))
    actors, stats = denoise(raw, DenoiseParams.from_spec(NTU120))
    assert stats["dropped_overlap"] == 1 and actors.shape == (30, 2, 25, 3)
    gap = RawBodies(n_frames=5, frame=np.array([0, 4]), body=np.array([0, 0]), xyz=a[:2].astype(np.float32))
    assert denoise(gap, DenoiseParams.from_spec(NTU120))[0].shape[0] == 2


def test_view_alignment_puts_spine_on_z_and_hips_on_x() -> None:
    rng = np.random.default_rng(3)
    track = _track(20, 0.3, 0.01, rng)
    angle = 0.7
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    raw = _bodies((0, 0, track @ rot.T))
    params = DenoiseParams.from_spec(NTU120, align_view=True)
    actors, _ = denoise(raw, params)
    pose = actors[0, 0]
    spine = pose[1] - pose[0]
    hips = pose[16] - pose[12]
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 0, 1], atol=1e-5)
    assert abs(hips[1]) < 1e-5 and hips[0] > 0
    # A rotation keeps distances.
    plain, _ = denoise(raw, DenoiseParams.from_spec(NTU120))
    np.testing.assert_allclose(np.linalg.norm(actors, axis=-1), np.linalg.norm(plain, axis=-1), atol=1e-5)


def test_broken_files_are_skipped_with_their_reason(tmp_path: Path) -> None:
    expected = write_broken_corpus(tmp_path)
    reader = get_reader("ntu_skeleton")
    job = _Job(NTU120, reader, DenoiseParams.from_spec(NTU120), frozenset())
    for file, code in expected.items():
        name, label, got, detail, _ = process_file(str(tmp_path / file), job)
        if code is None:
            assert label is not None, f"{file}: {detail}"
        else:
            assert label is None and got == code, f"{file}: expected {code}, got {got} ({detail})"
            assert "\n" not in detail and detail


def test_synthetic_text_round_trips() -> None:
    rng = np.random.default_rng(4)
    joints = _track(3, 0, 0.01, rng)
    text = skeleton_text(4, [(7, 1, joints)], rng)
    raw = read_ntu_skeleton(text.encode(), NTU120)
    assert raw.empty_frames == 1 and raw.n_frames == 3
    np.testing.assert_allclose(raw.xyz, joints, atol=1e-6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"0.2181153 -3.785547 1036.233 ", [0.2181153, -3.785547, 1036.233]),
        (b"12 .5 7. -0 ", [12.0, 0.5, 7.0, 0.0]),
        (b"1.2.3 ", None),
        (b"1-2 ", None),
        (b"--1 ", None),
        (b"- ", None),
        (b"1  2 ", None),
        (b"1e5 ", None),
        (b"nan ", None),
    ],
)
def test_plain_decimal_parser(text: bytes, expected: list[float] | None) -> None:
    got = parse_plain_decimals(np.frombuffer(text, dtype=np.uint8), text.count(b" "))
    if expected is None:
        assert got is None
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_exponents_and_nan_take_the_slower_paths() -> None:
    path = shared_path("data", "ntu_samples", "S001C001P001R001A011.skeleton")
    text = path.read_bytes().decode()
    lines = text.split("\n")
    i = next(k for k, line in enumerate(lines) if line.count(" ") == 11)
    x = float(lines[i].split()[0])
    lines[i] = f"{x:.6e}" + lines[i][lines[i].index(" ") :]
    raw = read_ntu_skeleton("\n".join(lines).encode(), NTU120)
    assert raw.xyz[0, 0, 0] == pytest.approx(x, rel=1e-6)
    lines[i] = "nan" + lines[i][lines[i].index(" ") :]
    with pytest.raises(SkipSample, match="NaN or infinity"):
        read_ntu_skeleton("\n".join(lines).encode(), NTU120)

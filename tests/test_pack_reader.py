"""The trainer's pack reader: label-order rows, and one clear error for every kind of mismatch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from dataspec import load_spec
from trainer.knowledge.pack import PACK_FORMAT, PACK_FORMAT_VERSION, PackError, load_pack, read_pack_file

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, *, dataset: str = "ntu120", dim: int = 6, **overrides: object) -> Path:
    """A valid pack of three NTU-120 classes whose values encode (row, joint), with metadata overrides."""
    spec = load_spec(dataset)
    class_ids = ["A3", "A1", "A2"]
    c, j = len(class_ids), spec.num_joints
    joint_text = np.zeros((c, j, dim), dtype=np.float16)
    joint_text[:, :, 0] = np.arange(c)[:, None]
    joint_text[:, :, 1] = np.arange(j)[None, :]
    global_text = np.repeat(np.arange(c, dtype=np.float16)[:, None], dim, axis=1)
    key_joints = np.full((c, j), 1.0 / j, dtype=np.float32)
    key_joints[:, 0] += 0.5
    key_joints /= key_joints.sum(axis=1, keepdims=True)
    arrays = {"joint_text": joint_text, "global_text": global_text, "key_joints": key_joints}
    arrays.update({k: v for k, v in overrides.items() if isinstance(v, np.ndarray)})
    meta = {
        "format": PACK_FORMAT,
        "format_version": str(PACK_FORMAT_VERSION),
        "dataset": dataset,
        "class_ids": json.dumps(class_ids),
        "joint_names": json.dumps(spec.joint_names),
        "encoder": "test",
        "dim": str(dim),
        "kb_revision": "0" * 64,
    }
    meta.update({k: str(v) for k, v in overrides.items() if not isinstance(v, np.ndarray)})
    save_file(arrays, str(path), metadata=meta)
    return path


def test_rows_follow_the_trainers_label_order_and_accept_padded_ids(tmp_path: Path) -> None:
    spec = load_spec("ntu120")
    pack = load_pack(_write(tmp_path / "p.kpack.safetensors"), spec, ["A001", "A2", "A3"])
    assert pack.class_ids == ["A1", "A2", "A3"] and pack.dim == 6 and pack.num_classes == 3
    # Stored rows are A3, A1, A2 (values 0, 1, 2): label order A1, A2, A3 reads rows 1, 2, 0.
    assert pack.global_text[:, 0].tolist() == [1.0, 2.0, 0.0]
    assert pack.joint_text[0, :, 0].unique().tolist() == [1.0]
    assert pack.joint_text[2, 24, 1].item() == 24.0  # joint axis untouched
    assert pack.key_joints.shape == (3, 25) and pack.joint_names == spec.joint_names


def test_missing_class_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.kpack.safetensors")
    with pytest.raises(PackError, match=r"no knowledge for class\(es\) A4, A120"):
        load_pack(path, load_spec("ntu120"), ["A1", "A4", "A120"])


def test_other_joint_list_or_dataset_is_refused(tmp_path: Path) -> None:
    spec = load_spec("ntu120")
    names = list(spec.joint_names)
    names[3], names[4] = names[4], names[3]
    swapped = _write(tmp_path / "swapped.kpack.safetensors", joint_names=json.dumps(names))
    with pytest.raises(
        PackError, match=r"joint list differs .*joint 3 is 'left shoulder' here, 'head' in the spec"
    ):
        load_pack(swapped, spec, ["A1"])
    ntu60 = _write(tmp_path / "ntu60.kpack.safetensors", dataset="ntu60")
    with pytest.raises(PackError, match="written for dataset 'ntu60', not 'ntu120'"):
        load_pack(ntu60, spec, ["A1"])
    # An NTU pack relabelled as NW-UCLA still has NTU's 25 joints.
    relabelled = _write(tmp_path / "relabelled.kpack.safetensors")
    data, meta = read_pack_file(relabelled)
    save_file(
        {k: v.numpy() for k, v in data.items()}, str(relabelled), metadata={**meta, "dataset": "nwucla"}
    )
    with pytest.raises(PackError, match="25 joints, the spec has 20"):
        load_pack(relabelled, load_spec("nwucla"), ["a01"])


def test_corrupt_truncated_or_foreign_files_are_refused(tmp_path: Path) -> None:
    spec = load_spec("ntu120")
    with pytest.raises(PackError, match="does not exist: write it with `kbgen embed"):
        load_pack(tmp_path / "absent.kpack.safetensors", spec, ["A1"])
    good = _write(tmp_path / "good.kpack.safetensors").read_bytes()
    truncated = tmp_path / "truncated.kpack.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(PackError, match="corrupt or truncated"):
        load_pack(truncated, spec, ["A1"])
    garbage = tmp_path / "garbage.kpack.safetensors"
    garbage.write_bytes(b"\xff" * 100)
    with pytest.raises(PackError, match="not a readable safetensors file"):
        load_pack(garbage, spec, ["A1"])
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(foreign))
    with pytest.raises(PackError, match="not a CrossGLG knowledge pack"):
        load_pack(foreign, spec, ["A1"])


def test_wrong_format_version_shapes_and_values_are_refused(tmp_path: Path) -> None:
    spec = load_spec("ntu120")
    cases = {
        "version.kpack.safetensors": (
            {"format_version": "99"},
            "format version 99, this trainer reads version 1",
        ),
        "shape.kpack.safetensors": (
            {"global_text": np.zeros((3, 5), dtype=np.float16)},
            r"global_text has shape \(3, 5\), expected \[3, 6\]",
        ),
        "sums.kpack.safetensors": (
            {"key_joints": np.full((3, 25), 0.5, dtype=np.float32)},
            "key_joints rows must be distributions",
        ),
        "nan.kpack.safetensors": (
            {"global_text": np.full((3, 6), np.nan, dtype=np.float16)},
            "NaN or infinite",
        ),
        "ids.kpack.safetensors": ({"class_ids": "not json"}, "'class_ids' is not valid JSON"),
        "missing.kpack.safetensors": ({"joint_names": "{}"}, "'joint_names' must be a JSON list"),
    }
    for name, (overrides, message) in cases.items():
        path = _write(tmp_path / name, **overrides)
        with pytest.raises(PackError, match=message):
            load_pack(path, spec, ["A1"])


def test_reader_imports_no_kbgen_database_or_llm_stack() -> None:
    code = (
        "import sys, trainer.knowledge.pack; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('kbgen', 'sqlalchemy', 'pydantic', 'openai', 'alembic')); print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

"""The dataset-spec contract: shipped specs load, and malformed ones give one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dataspec import SpecError, load_spec, normalize_class_id


def test_ntu120_spec_facts() -> None:
    spec = load_spec("ntu120")
    assert spec.num_joints == 25 and spec.num_classes == 120
    assert spec.get_class("A001").name == "drink water"
    assert spec.joints[spec.center_joint].name == "middle of the spine"
    assert len(spec.edges) == 24 and spec.parents()[1] is None
    proto = spec.oneshot()
    assert proto.novel[:3] == ("A1", "A7", "A13") and len(proto.novel) == 20
    assert proto.exemplars["A115"] == "S018C003P008R001A115"
    assert sorted(proto.train_class_subsets) == [20, 40, 60, 80, 100]
    assert len(set(proto.train_class_subsets[100])) == 100
    assert not set(proto.novel) & set(proto.train_class_subsets[100])
    assert spec.single_actor_fill == "duplicate"


def test_ntu60_and_nwucla() -> None:
    ntu60 = load_spec("ntu60")
    assert ntu60.num_classes == 60 and ntu60.single_actor_fill == "zeros"
    assert len(ntu60.oneshot().novel) == 10
    ucla = load_spec("nwucla")
    assert ucla.num_joints == 20 and ucla.num_classes == 10
    assert ucla.get_class("a8").name == "donning"
    assert ucla.joint_index("right hand") == 11


def test_joint_aliases() -> None:
    spec = load_spec("ntu120")
    assert spec.joint_index("SpineBase") == 0
    assert spec.canonical_joint("Right_Hand") == "right hand"
    with pytest.raises(SpecError, match="unknown joint 'tail'"):
        spec.joint_index("tail")


@pytest.mark.parametrize(
    ("raw", "expected"), [("A001", "A1"), ("a1", "a01"), ("A120", "A120"), (" A7 ", "A7")]
)
def test_normalize_class_id(raw: str, expected: str) -> None:
    assert normalize_class_id(raw) == expected


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(load_spec("nwucla").raw_text)
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["joints"].append(dict(r["joints"][0], index=20)), "used twice"),
        (lambda r: r["edges"].append([3, 99]), "names joint 99"),
        (lambda r: r["classes"].append(dict(r["classes"][0])), "listed twice"),
        (lambda r: r.pop("joints"), "missing required key 'joints'"),
        (lambda r: r["protocols"]["oneshot"]["novel"].append("a77"), "not in the spec: a77"),
    ],
)
def test_malformed_spec_is_one_clear_error(tmp_path: Path, mutate, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, mutate))


def test_unknown_dataset_lists_known() -> None:
    with pytest.raises(SpecError, match="known datasets: .*ntu120"):
        load_spec("kinetics")

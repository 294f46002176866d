"""The run config: strict keys, inheritance, --set overrides with type coercion, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import ConfigError, config_from_dict, list_configs, load_config


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*lr"):
        load_config(cfg)


def test_unknown_override_is_an_error(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", "seed: 3\n")
    with pytest.raises(ConfigError, match=r"model\.crossglg\.gl2"):
        load_config(cfg, ["model.crossglg.gl2=true"])


def test_overrides_are_coerced_to_field_types(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", "seed: 3\n")
    c = load_config(cfg, ["optim.lr=1", "model.crossglg.l2g=true", "optim.milestones=[10, 20]", "name=7"])
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
    assert c.model.crossglg.l2g is True
    assert c.optim.milestones == [10, 20]
    assert c.name == "7"
    # YAML 1.1 would read off/on/yes/no as booleans; config strings keep them.
    assert load_config(cfg, ["run.compile=off"]).run.compile == "off"
    with pytest.raises(ConfigError, match=r"'optim\.epochs' must be an integer"):
        load_config(cfg, ["optim.epochs=ten"])
    with pytest.raises(ConfigError, match="true or false"):
        load_config(cfg, ["model.crossglg.g2l=maybe"])
    with pytest.raises(ConfigError, match="precision"):
        load_config(cfg, ["run.precision=fp8"])


def test_base_inheritance_deep_merges(tmp_path: Path) -> None:
    _write(tmp_path / "parent.yaml", "optim: {lr: 0.5, epochs: 3}\ndata: {batch_size: 8}\n")
    child = _write(tmp_path / "child.yaml", "base: parent.yaml\noptim: {epochs: 9}\n")
    c = load_config(child)
    assert (c.optim.lr, c.optim.epochs, c.data.batch_size) == (0.5, 9, 8)


def test_round_trip_through_dict() -> None:
    c = load_config("nwucla_oneshot", ["seed=5"])
    again = config_from_dict(c.to_dict())
    assert again == c
    assert again.uses_knowledge


@pytest.mark.parametrize("name", list_configs())
def test_every_shipped_config_loads(name: str) -> None:
    c = load_config(name)
    assert c.name == name
    assert c.uses_knowledge == (not name.endswith("_baseline"))
    if c.uses_knowledge:
        assert c.knowledge.pack


def test_shipped_set_covers_the_protocols() -> None:
    names = set(list_configs())
    for n in (20, 40, 60, 80, 100):
        assert {f"ntu120_oneshot_{n}", f"ntu120_oneshot_{n}_baseline"} <= names
        assert load_config(f"ntu120_oneshot_{n}").data.train_classes == n
    for n in (10, 20, 30, 40, 50):
        assert {f"ntu60_oneshot_{n}", f"ntu60_oneshot_{n}_baseline"} <= names
    assert {"nwucla_oneshot", "nwucla_oneshot_baseline"} <= names

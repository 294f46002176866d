"""Run configuration: typed dataclasses loaded strictly from YAML, with ``--set a.b=v`` overrides.

A config file may name a ``base:`` file (relative to itself); the two are deep-merged, the child
winning. Every key must be a field of the dataclasses below: an unknown key is an error that
names it and lists the known ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from trainer.evaluation.calibration_params import CalibrationParams

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so ``run.compile=off`` stays the string "off"."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _ConfigLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and what to do."""


@dataclass
class DataConfig:
    """Which prepared store to read and how to sample it."""

    dataset: str = "nwucla"
    store: str = "stores/nwucla"
    # Number of auxiliary training classes (a key of the spec's train_class_subsets); null = all.
    train_classes: int | None = None
    window: int = 64
    batch_size: int = 64
    eval_batch_size: int = 256
    rotation: float = 0.3
    modalities: list[str] = field(default_factory=lambda: ["joint"])


@dataclass
class CrossGLGConfig:
    """The two CrossGLG modules; both off is the plain encoder (the baseline)."""

    g2l: bool = False
    l2g: bool = False
    n_pre: int = 5


@dataclass
class ModelConfig:
    """Encoder name from the model registry and its options."""

    encoder: str = "infogcn"
    crossglg: CrossGLGConfig = field(default_factory=CrossGLGConfig)
    # Passed as keyword arguments to the model constructor (width, heads, layers, ...).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class KnowledgeConfig:
    """The knowledge pack (needed when either CrossGLG module is on)."""

    pack: str | None = None


@dataclass
class OptimConfig:
    """InfoGCN's recipe by default: SGD Nesterov, linear warm-up, step decay."""

    epochs: int = 65
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: int = 5
    milestones: list[int] = field(default_factory=lambda: [35, 55])
    gamma: float = 0.1
    # lr multiplier of CrossGLG's L2G interaction module (attention + MLP): at the full SGD lr 0.1
    # it diverged in every NW-UCLA run (trainer.engine.step.parameter_groups).
    interaction_lr_scale: float = 0.1


@dataclass
class LossConfig:
    """Weights of L = L_s + w_calibrate·L_calibrate + w_c·L_c (+ the encoder's own terms)."""

    label_smoothing: float = 0.1
    w_calibrate: float = 0.5
    w_c: float = 0.2
    # Extra keyword arguments for the models' crossglg_loss (e.g. InfoGCN's MMD weight).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """One-shot evaluation on the novel classes."""

    methods: list[str] = field(default_factory=lambda: ["nn", "dc"])
    exemplar_draws: int = 0
    calibration: CalibrationParams = field(default_factory=CalibrationParams)


@dataclass
class RunConfig:
    """Run-level settings: device, precision, logging and checkpoint cadence."""

    device: str = "auto"
    # bf16 autocast on CUDA (the default), fp16 with a gradient scaler, or fp32; CPU runs are fp32.
    precision: str = "bf16"
    log_interval: int = 20
    # Save last.pt every this many optimizer steps as well as at each epoch end (mid-epoch resume).
    checkpoint_interval: int = 200
    val_interval: int = 1
    deterministic: bool = False
    # torch.compile mode of the training step on CUDA ("off": eager; "auto": CUDA graphs on one GPU,
    # plain Inductor under DDP); CPU runs are always eager.
    compile: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ConfigError(f"run.precision must be bf16, fp16 or fp32, not '{self.precision}'")
        modes = ("auto", "off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
        if self.compile not in modes:
            raise ConfigError(f"run.compile must be one of {', '.join(modes)}, not '{self.compile}'")
        for key in ("log_interval", "checkpoint_interval", "val_interval"):
            if getattr(self, key) < 1:
                raise ConfigError(f"run.{key} must be at least 1")


@dataclass
class Config:
    """The full, resolved configuration of one run."""

    name: str = "run"
    seed: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON/torch weights_only safe)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved config as YAML, as saved in the run directory."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def uses_knowledge(self) -> bool:
        return self.model.crossglg.g2l or self.model.crossglg.l2g


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)) and len(args) == 1:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow int→float and scalar strings for str."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}' cannot be null")
    tp = inner
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {', '.join(_field_names(tp))}")
        return _build(tp, value, key)
    origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item_tp,) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML reads 5e-4 (no dot) as a string
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    return value


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = _field_names(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{dotted}': known keys here are {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself through 'base'")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: give a path or a name from {CONFIG_DIR}")
    try:
        raw = _load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config {path} is not valid YAML ({exc.__class__.__name__}): fix the syntax"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a YAML mapping")
    base = raw.pop("base", None)
    if base is None:
        return raw
    return _deep_merge(_read_yaml_chain(path.parent / str(base), (*seen, path)), raw)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config path as given, or a shipped config by name (``nwucla_oneshot_crossglg``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"config '{name_or_path}' not found: give a YAML path or one of {', '.join(list_configs())}"
    )


def list_configs() -> list[str]:
    """Names of the shipped configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=v`` into (["a", "b"], value); the value is read as YAML (``false``, ``[1, 2]``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key before '='")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``a.b=v`` in a nested dict (before validation, so errors name the full key)."""
    out = _deep_merge({}, data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for part in keys[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node[part] = child = dict(child)
            node = child
        node[keys[-1]] = value
    return out


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Validate a nested dict (e.g. from a checkpoint) into a :class:`Config`."""
    return _build(Config, apply_overrides(data, overrides or []))


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a config file (following ``base:``), apply ``--set`` overrides, validate strictly."""
    return config_from_dict(_read_yaml_chain(resolve_config_path(name_or_path)), overrides)

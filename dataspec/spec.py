"""Loading and validating dataset specs (see ``data/datasets/*.yaml``)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from dataspec.resources import resource_dir

SIDES = ("left", "right", "center")
# libyaml's loader is ~10x faster than the pure-Python one; both are safe loaders.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CLASS_ID = re.compile(r"^([A-Za-z]+)0*(\d+)$")


class SpecError(ValueError):
    """A dataset spec is malformed or a name does not resolve; the message says what to fix."""


def data_dir() -> Path:
    """The folder with ``datasets/`` and ``lexicon/``: ``$CROSSGLG_DATA`` or the toolkit's ``data/``
    (the checkout's, or the installed copy: :func:`dataspec.resources.resource_dir`)."""
    env = os.environ.get("CROSSGLG_DATA")
    return Path(env) if env else resource_dir("data")


def normalize_class_id(raw: str) -> str:
    """Canonical class id: ``A001``/``a1``/``A1`` → ``A1``; NW-UCLA style ``a01`` keeps its zero padding.

    NTU ids are upper-case ``A`` + number without padding. Ids of other prefixes keep their case
    and a two-digit number (``a1`` → ``a01``), the NW-UCLA convention.
    """
    text = str(raw).strip()
    m = _CLASS_ID.match(text)
    if not m:
        raise SpecError(f"'{raw}' is not a class id: expected a letter prefix and a number, like A1 or a01")
    prefix, number = m.group(1), int(m.group(2))
    if prefix == "A":
        return f"A{number}"
    if prefix == "a":
        return f"a{number:02d}"
    return f"{prefix}{number}"


@dataclass(frozen=True)
class Joint:
    """One skeleton joint: 0-based index, the name prompts use, aliases, side and body part."""

    index: int
    name: str
    aliases: tuple[str, ...] = ()
    side: str = "center"
    part: str = ""


@dataclass(frozen=True)
class ActionClass:
    """One action class: canonical id (``A1``, ``a01``) and official name."""

    id: str
    name: str


@dataclass(frozen=True)
class OneShotProtocol:
    """One-shot protocol: novel classes, their exemplar sample names, and auxiliary training subsets."""

    novel: tuple[str, ...]
    exemplars: dict[str, str]
    train_class_subsets: dict[int, tuple[str, ...]]
    subset_rule: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A validated dataset spec. Build with :func:`load_spec`."""

    name: str
    title: str
    format: str
    persons: int
    joints: tuple[Joint, ...]
    edges: tuple[tuple[int, int], ...]
    classes: tuple[ActionClass, ...]
    center_joint: int
    single_actor_fill: str = "zeros"
    protocols: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    raw_text: str = ""

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def class_ids(self) -> list[str]:
        return [c.id for c in self.classes]

    @cached_property
    def sha256(self) -> str:
        """Content hash of the spec file, for manifests and provenance."""
        return hashlib.sha256(self.raw_text.encode()).hexdigest()

    @cached_property
    def _joint_lookup(self) -> dict[str, int]:
        table: dict[str, int] = {}
        for j in self.joints:
            for key in (j.name, *j.aliases):
                table[_norm(key)] = j.index
        return table

    @cached_property
    def _class_lookup(self) -> dict[str, ActionClass]:
        return {c.id: c for c in self.classes}

    def joint_index(self, name: str) -> int:
        """Index of a joint by name or alias (case and spacing insensitive)."""
        try:
            return self._joint_lookup[_norm(name)]
        except KeyError:
            raise SpecError(
                f"unknown joint '{name}' for dataset {self.name}: "
                f"known joints are {', '.join(self.joint_names)}"
            ) from None

    def canonical_joint(self, name: str) -> str:
        """The spec's name for a joint given by name or alias."""
        return self.joints[self.joint_index(name)].name

    def get_class(self, class_id: str) -> ActionClass:
        """A class by id in any accepted spelling (``A001`` is ``A1``)."""
        cid = normalize_class_id(class_id)
        try:
            return self._class_lookup[cid]
        except KeyError:
            raise SpecError(
                f"class '{class_id}' is not in dataset {self.name} "
                f"(ids run {self.classes[0].id}…{self.classes[-1].id})"
            ) from None

    def class_index(self, class_id: str) -> int:
        """Row (label) index of a class in the spec's class order."""
        return self.class_ids.index(self.get_class(class_id).id)

    def parents(self) -> list[int | None]:
        """Parent of each joint from the child→parent edges (None for the root)."""
        par: list[int | None] = [None] * self.num_joints
        for child, parent in self.edges:
            par[child] = parent
        return par

    def oneshot(self) -> OneShotProtocol:
        """The one-shot protocol of this dataset."""
        raw = self.protocols.get("oneshot")
        if raw is None:
            raise SpecError(
                f"dataset {self.name} has no one-shot protocol: add protocols.oneshot to {self.path}"
            )
        known = {"novel", "exemplars", "train_class_subsets", "subset_rule"}
        return OneShotProtocol(
            novel=tuple(normalize_class_id(c) for c in raw.get("novel", [])),
            exemplars={normalize_class_id(k): str(v) for k, v in (raw.get("exemplars") or {}).items()},
            train_class_subsets={
                int(k): tuple(normalize_class_id(c) for c in v)
                for k, v in (raw.get("train_class_subsets") or {}).items()
            },
            subset_rule=str(raw.get("subset_rule", "")),
            extra={k: v for k, v in raw.items() if k not in known},
        )


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace("_", " ").replace("-", " ").split())


def list_specs() -> list[str]:
    """Names of the dataset specs shipped in ``data/datasets``."""
    return sorted(p.stem for p in (data_dir() / "datasets").glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """Load and validate a spec by dataset name (``ntu120``) or YAML path.

    Raises :class:`SpecError` with one line naming the problem and the file.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = data_dir() / "datasets" / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(list_specs()) or "none"
        raise SpecError(f"no dataset spec '{name_or_path}' ({path}); known datasets: {known}")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc.__class__.__name__}): fix the syntax") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping with name, joints, edges and classes")
    try:
        return _build(raw, path, text)
    except SpecError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # A value of the wrong shape (a name where an index belongs, a mapping where a list does).
        raise SpecError(
            f"{path}: malformed spec ({exc.__class__.__name__}: {exc}): "
            "compare it with data/datasets/ntu120.yaml"
        ) from None


def _build(raw: dict[str, Any], path: Path, text: str) -> DatasetSpec:
    where = str(path)
    for key in ("name", "joints", "edges", "classes"):
        if key not in raw:
            raise SpecError(f"{where}: missing required key '{key}'")
    joints: list[Joint] = []
    seen_names: dict[str, int] = {}
    for pos, item in enumerate(raw["joints"]):
        if not isinstance(item, dict) or "name" not in item:
            raise SpecError(f"{where}: joint #{pos} must be a mapping with at least 'name'")
        index = int(item.get("index", pos))
        if index != pos:
            raise SpecError(
                f"{where}: joint '{item['name']}' has index {index} but is listed at position {pos}"
            )
        side = str(item.get("side", "center"))
        if side not in SIDES:
            raise SpecError(
                f"{where}: joint '{item['name']}' has side '{side}'; use one of {', '.join(SIDES)}"
            )
        joint = Joint(
            index=index,
            name=str(item["name"]),
            aliases=tuple(str(a) for a in item.get("aliases", []) or []),
            side=side,
            part=str(item.get("part", "")),
        )
        for key in (joint.name, *joint.aliases):
            k = _norm(key)
            if k in seen_names and seen_names[k] != index:
                raise SpecError(
                    f"{where}: joint name or alias '{key}' is used twice (joints {seen_names[k]} and {index})"
                )
            seen_names[k] = index
        joints.append(joint)
    if not joints:
        raise SpecError(f"{where}: a spec needs at least one joint")
    n = len(joints)
    edges: list[tuple[int, int]] = []
    children: set[int] = set()
    for edge in raw["edges"]:
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise SpecError(f"{where}: edge {edge!r} must be a pair [child, parent]")
        a, b = (int(x) for x in edge)
        for x in (a, b):
            if not 0 <= x < n:
                raise SpecError(f"{where}: edge [{a}, {b}] names joint {x}, but joints run 0..{n - 1}")
        if a == b:
            raise SpecError(f"{where}: edge [{a}, {b}] joins a joint to itself")
        if a in children:
            raise SpecError(f"{where}: joint {a} has two parents; edges are [child, parent] pairs of a tree")
        children.add(a)
        edges.append((a, b))
    classes: list[ActionClass] = []
    seen_ids: set[str] = set()
    for item in raw["classes"]:
        if not isinstance(item, dict) or "id" not in item or "name" not in item:
            raise SpecError(f"{where}: class entry {item!r} must have 'id' and 'name'")
        cid = normalize_class_id(item["id"])
        if cid in seen_ids:
            raise SpecError(f"{where}: class {cid} is listed twice")
        seen_ids.add(cid)
        classes.append(ActionClass(id=cid, name=str(item["name"]).strip()))
    if not classes:
        raise SpecError(f"{where}: a spec needs at least one class")
    lookup = {_norm(k): j.index for j in joints for k in (j.name, *j.aliases)}
    center = raw.get("center_joint", 0)
    if isinstance(center, str):
        if _norm(center) not in lookup:
            raise SpecError(f"{where}: center_joint '{center}' is not a joint of this spec")
        center = lookup[_norm(center)]
    fill = str(raw.get("single_actor_fill", "zeros"))
    if fill not in ("zeros", "duplicate"):
        raise SpecError(f"{where}: single_actor_fill must be 'zeros' or 'duplicate', not '{fill}'")
    protocols = raw.get("protocols") or {}
    spec = DatasetSpec(
        name=str(raw["name"]),
        title=str(raw.get("title", raw["name"])),
        format=str(raw.get("format", "")),
        persons=int(raw.get("persons", 1)),
        joints=tuple(joints),
        edges=tuple(edges),
        classes=tuple(classes),
        center_joint=int(center),
        single_actor_fill=fill,
        protocols=protocols,
        path=path,
        raw_text=text,
    )
    if "oneshot" in protocols:
        proto = spec.oneshot()
        referenced = set(proto.novel) | set(proto.exemplars)
        for subset in proto.train_class_subsets.values():
            referenced |= set(subset)
        unknown = sorted(referenced - seen_ids)
        if unknown:
            raise SpecError(
                f"{where}: the one-shot protocol names classes not in the spec: {', '.join(unknown)}"
            )
        clash = sorted(set(proto.novel) & {c for s in proto.train_class_subsets.values() for c in s})
        if clash:
            raise SpecError(f"{where}: novel classes {', '.join(clash)} also appear in a training subset")
    return spec

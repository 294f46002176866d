"""k_gt: the key-joint distribution of one class, from its global description.

Weighting (method ``np-lexicon-v2``, "mention count per joint"):

1. Noun phrases of the global text (spaCy or stanza) are matched against the body-part lexicon. Every
   body-part mention that is not negated ("hips remain stationary", "without moving the feet") adds its
   term weight (1, or less for appearance words such as "hair", "eyes", see the lexicon) to EACH joint
   it covers: "hand" on NTU adds 1 to both hands' 6 joints, "left elbow" 1 to one joint. A joint's
   mass is thus the number of mentions that cover it, so the part named most often wins and a group
   ("upper body") raises many joints a little relative to the rest of the row.
2. Each listed key body part of the description adds ``key_part_weight`` (default 1) the same way.
3. The row is normalised to sum 1, then optionally smoothed towards uniform:
   ``k = (1 - s) * k + s / J``.
4. When no mention maps to a joint, the row is uniform and flagged ``is_uniform``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dataspec import DatasetSpec
from kbgen.keyjoints.lexicon import Lexicon, load_lexicon
from kbgen.keyjoints.negation import clauses, negated_at
from kbgen.keyjoints.phrases import PhraseExtractor

METHOD = "np-lexicon-v2"


@dataclass(frozen=True)
class PhraseRecord:
    """A noun phrase and what it contributed: the joints it hit, negation, and its mass."""

    phrase: str
    joints: list[str]
    negated: bool
    weight: float
    source: str = "text"  # "text" (a noun phrase of the description) or "key_body_parts"


@dataclass
class KeyJoints:
    """A computed k_gt row with everything needed to reproduce and explain it."""

    weights: list[float]
    is_uniform: bool
    method: str
    backend: str
    backend_version: str
    lexicon_sha256: str
    phrases: list[PhraseRecord] = field(default_factory=list)

    def by_joint(self, spec: DatasetSpec) -> dict[str, float]:
        """``{joint name: weight}`` in spec order."""
        return dict(zip(spec.joint_names, self.weights, strict=True))

    def phrases_json(self) -> list[dict]:
        """The phrases as plain dicts, for the database's JSON column."""
        return [asdict(p) for p in self.phrases]


def method_string(key_part_weight: float, smoothing: float) -> str:
    """The stored method label: the weighting scheme and its parameters."""
    return f"{METHOD}; key_part_weight={key_part_weight:g}; smoothing={smoothing:g}"


def _add_mentions(
    spec: DatasetSpec,
    lexicon: Lexicon,
    text: str,
    negated: bool,
    unit: float,
    mass: list[float],
) -> tuple[list[str], float]:
    """Add one phrase's mentions to ``mass``; return (joint names hit, largest per-joint weight added)."""
    names: list[str] = []
    added = 0.0
    for hit in lexicon.hits(spec, text):
        if not hit.joints:
            continue
        names.extend(spec.joints[j].name for j in hit.joints if spec.joints[j].name not in names)
        if negated:
            continue
        for j in hit.joints:
            mass[j] += unit * hit.weight
        added = max(added, unit * hit.weight)
    return names, added


def compute_keyjoints(
    spec: DatasetSpec,
    text: str,
    key_body_parts: list[str] | None,
    extractor: PhraseExtractor,
    *,
    lexicon: Lexicon | None = None,
    key_part_weight: float = 1.0,
    smoothing: float = 0.0,
) -> KeyJoints:
    """k_gt for one class from its global ``text`` and listed ``key_body_parts`` (see module docstring)."""
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be between 0 and 1, got {smoothing}")
    lexicon = lexicon or load_lexicon()
    mass = [0.0] * spec.num_joints
    records: list[PhraseRecord] = []
    clause_list = clauses(text, lexicon)
    for np_ in extractor.extract(text):
        negated = negated_at(clause_list, np_.start)
        names, added = _add_mentions(spec, lexicon, np_.text, negated, 1.0, mass)
        records.append(PhraseRecord(np_.text, names, negated and bool(names), added))
    for part in key_body_parts or []:
        negated = any(c.negated or c.after is not None for c in clauses(part, lexicon))
        names, added = _add_mentions(spec, lexicon, part, negated, key_part_weight, mass)
        records.append(PhraseRecord(part, names, negated and bool(names), added, source="key_body_parts"))
    total = sum(mass)
    n = spec.num_joints
    if total <= 0:
        weights = [1.0 / n] * n
        uniform = True
    else:
        weights = [(1.0 - smoothing) * m / total + smoothing / n for m in mass]
        uniform = False
    return KeyJoints(
        weights=weights,
        is_uniform=uniform,
        method=method_string(key_part_weight, smoothing),
        backend=extractor.name,
        backend_version=extractor.version,
        lexicon_sha256=lexicon.sha256,
        phrases=records,
    )


def top_joints(spec: DatasetSpec, weights: list[float], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` heaviest joints as (name, weight), heaviest first."""
    order = sorted(range(len(weights)), key=lambda j: (-weights[j], j))
    return [(spec.joints[j].name, weights[j]) for j in order[:k]]

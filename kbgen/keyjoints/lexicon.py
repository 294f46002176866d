"""The body-part lexicon: words of a description → body-part concepts → joints of any dataset spec.

The lexicon lives in ``data/lexicon/body_parts.yaml`` (its header documents every rule). Joints are
chosen through the spec's own ``part``/``side`` fields and joint names, never by index, so one lexicon
serves NTU's 25 joints and NW-UCLA's 20.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from dataspec import DatasetSpec
from dataspec.spec import data_dir

SIDE_WORDS = ("left", "right")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
# Longest multi-word term we try at one position ("shoulder blade", "whole body").
_MAX_TERM_WORDS = 3


class LexiconError(ValueError):
    """The lexicon file is malformed; the message names the entry to fix."""


@dataclass(frozen=True)
class Concept:
    """How one body-part concept selects joints of a spec (see the YAML header)."""

    name: str
    parts: tuple[str, ...] = ()
    joints: tuple[str, ...] = ()
    all: bool = False
    fallback: str | None = None
    sided: bool = True


@dataclass(frozen=True)
class TermMatch:
    """One body-part term found in a word sequence: word span, concept and the side words before it."""

    start: int
    end: int
    term: str
    concept: str
    side_words: tuple[str, ...]
    weight: float = 1.0


@dataclass(frozen=True)
class Hit:
    """A body-part mention resolved against a spec: the term, its concept and the joint indices it covers."""

    term: str
    concept: str
    sides: tuple[str, ...] | None
    joints: tuple[int, ...]
    weight: float = 1.0


def words_of(text: str) -> list[tuple[str, int, int]]:
    """Lower-case words of ``text`` with their character spans (possessive ``'s`` dropped)."""
    lowered = text.lower().replace("’", "'")
    return [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(lowered)]


def _norm_name(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


def _strip_sides(name: str) -> str:
    return " ".join(w for w in _norm_name(name).split() if w not in SIDE_WORDS)


@dataclass
class Lexicon:
    """A loaded body-part lexicon. Build with :func:`load_lexicon`."""

    path: Path
    sha256: str
    concepts: dict[str, Concept]
    terms: dict[tuple[str, ...], str]
    term_weights: dict[tuple[str, ...], float]
    plurals: dict[str, str]
    sides: dict[str, tuple[str, ...]]
    clause_negations: tuple[re.Pattern[str], ...]
    after_negations: tuple[re.Pattern[str], ...]
    _term_words: set[str] = field(default_factory=set)
    _joint_cache: dict[tuple[str, str, str, tuple[str, ...] | None], tuple[int, ...]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self._term_words = {w for term in self.terms for w in term}

    def fold(self, word: str) -> str | None:
        """The lexicon word a surface word stands for (plural/possessive folded), or None."""
        word = word.lower().removesuffix("'s").rstrip("'")
        candidates = [self.plurals.get(word, word), word]
        if word.endswith("ies"):
            candidates.append(word[:-3] + "y")
        if word.endswith("es"):
            candidates.append(word[:-2])
        if word.endswith("s"):
            candidates.append(word[:-1])
        return next((c for c in candidates if c in self._term_words), None)

    def is_side_word(self, word: str) -> bool:
        """True for words that say which side(s) a part is on ("left", "both", "dominant"...)."""
        return word in self.sides

    def find_terms(self, words: list[str]) -> list[TermMatch]:
        """Body-part terms in a word sequence, longest match first, with the side words before each."""
        folded = [self.fold(w) for w in words]
        found: list[TermMatch] = []
        i = 0
        last_end = 0
        while i < len(words):
            match = None
            for n in range(min(_MAX_TERM_WORDS, len(words) - i), 0, -1):
                key = tuple(folded[i : i + n])
                if None not in key and key in self.terms:
                    match = (n, key)
                    break
            if match is None:
                i += 1
                continue
            n, key = match
            sides = tuple(w for w in words[last_end:i] if w in self.sides)
            found.append(
                TermMatch(i, i + n, " ".join(key), self.terms[key], sides, self.term_weights.get(key, 1.0))
            )
            i += n
            last_end = i
        return found

    def resolve_sides(self, side_words: tuple[str, ...]) -> tuple[str, ...] | None:
        """Joint sides named by side words; None when the phrase names no side (both are kept)."""
        if not side_words:
            return None
        return tuple(sorted({s for w in side_words for s in self.sides[w]}))

    def joints_for(
        self, spec: DatasetSpec, concept: str, sides: tuple[str, ...] | None = None
    ) -> tuple[int, ...]:
        """Joint indices of ``spec`` a concept covers, restricted to ``sides`` when the concept is sided."""
        key = (spec.name, spec.sha256, concept, sides)
        if key not in self._joint_cache:
            self._joint_cache[key] = self._select(spec, concept, sides, depth=0)
        return self._joint_cache[key]

    def _select(
        self, spec: DatasetSpec, name: str, sides: tuple[str, ...] | None, depth: int
    ) -> tuple[int, ...]:
        concept = self.concepts[name]
        wanted = {_norm_name(j) for j in concept.joints}
        chosen = [
            j.index
            for j in spec.joints
            if concept.all
            or j.part in concept.parts
            or any(_strip_sides(n) in wanted for n in (j.name, *j.aliases))
        ]
        if not chosen:
            if concept.fallback and depth < len(self.concepts):
                return self._select(spec, concept.fallback, sides, depth + 1)
            return ()
        if concept.sided and sides is not None:
            on_side = [i for i in chosen if spec.joints[i].side in sides]
            # A side word on a part that has no such side ("left neck") keeps the whole selection.
            chosen = on_side or chosen
        return tuple(sorted(chosen))

    def hits(self, spec: DatasetSpec, text: str) -> list[Hit]:
        """Every body-part mention in ``text`` resolved to joints of ``spec``."""
        words = [w for w, _, _ in words_of(text)]
        out = []
        for m in self.find_terms(words):
            sides = self.resolve_sides(m.side_words)
            out.append(Hit(m.term, m.concept, sides, self.joints_for(spec, m.concept, sides), m.weight))
        return out


def default_lexicon_path() -> Path:
    """``data/lexicon/body_parts.yaml`` (under ``$CROSSGLG_DATA`` when set)."""
    return data_dir() / "lexicon" / "body_parts.yaml"


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Load and validate a lexicon file (default: the shipped one); cached until the file changes."""
    path = Path(path) if path else default_lexicon_path()
    if not path.is_file():
        raise LexiconError(f"no body-part lexicon at {path}: restore data/lexicon/body_parts.yaml")
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load_cached(path_text: str, _mtime_ns: int) -> Lexicon:
    path = Path(path_text)
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LexiconError(f"{path}: not valid YAML ({exc.__class__.__name__}): fix the syntax") from None
    if not isinstance(raw, dict):
        raise LexiconError(
            f"{path}: the lexicon must be a YAML mapping with concepts, terms, sides, negation"
        )
    return _build(raw, path, hashlib.sha256(text.encode()).hexdigest())


def _build(raw: dict[str, Any], path: Path, sha: str) -> Lexicon:
    concepts: dict[str, Concept] = {}
    for name, body in (raw.get("concepts") or {}).items():
        body = body or {}
        if not isinstance(body, dict):
            raise LexiconError(f"{path}: concept '{name}' must be a mapping like {{parts: [hand]}}")
        unknown = set(body) - {"parts", "joints", "all", "fallback", "sided"}
        if unknown:
            raise LexiconError(f"{path}: concept '{name}' has unknown keys {sorted(unknown)}")
        concepts[name] = Concept(
            name=name,
            parts=tuple(body.get("parts", ())),
            joints=tuple(body.get("joints", ())),
            all=bool(body.get("all", False)),
            fallback=body.get("fallback"),
            sided=bool(body.get("sided", True)),
        )
    for c in concepts.values():
        if c.fallback and c.fallback not in concepts:
            raise LexiconError(f"{path}: concept '{c.name}' falls back to unknown concept '{c.fallback}'")
    terms: dict[tuple[str, ...], str] = {}
    term_weights: dict[tuple[str, ...], float] = {}
    for term, value in (raw.get("terms") or {}).items():
        # A term maps to a concept name, or to {concept: ..., weight: ...} for a lighter mention.
        concept = value.get("concept") if isinstance(value, dict) else value
        if concept not in concepts:
            raise LexiconError(f"{path}: term '{term}' names unknown concept '{concept}'")
        key = tuple(str(term).lower().split())
        if len(key) > _MAX_TERM_WORDS:
            raise LexiconError(f"{path}: term '{term}' is longer than {_MAX_TERM_WORDS} words")
        terms[key] = concept
        if isinstance(value, dict) and "weight" in value:
            term_weights[key] = float(value["weight"])
    negation = raw.get("negation") or {}
    try:
        clause = tuple(re.compile(p) for p in negation.get("clause", ()))
        after = tuple(re.compile(p) for p in negation.get("after", ()))
    except re.error as exc:
        raise LexiconError(f"{path}: a negation pattern is not a valid regular expression: {exc}") from None
    return Lexicon(
        path=path,
        sha256=sha,
        concepts=concepts,
        terms=terms,
        term_weights=term_weights,
        plurals={str(k).lower(): str(v).lower() for k, v in (raw.get("plurals") or {}).items()},
        sides={str(k).lower(): tuple(v) for k, v in (raw.get("sides") or {}).items()},
        clause_negations=clause,
        after_negations=after,
    )

"""Which body-part mentions a description says do NOT move ("hips remain stationary").

Works on the raw text with character spans, so both noun-phrase backends get the same answer. The text
is cut into clauses (punctuation and clause-joining conjunctions); a clause that matches one of the
lexicon's ``negation.clause`` patterns negates every body part in it, a match of a
``negation.after`` pattern ("without moving") negates the body parts after it in its clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kbgen.keyjoints.lexicon import Lexicon, words_of

_BOUNDARY = re.compile(
    r"[.;:!?,()]|\b(?:and|but|while|whilst|whereas|as|then|yet|although|though|when|so|because)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.;:!?]")
# Words that may sit in a bare list of body parts ("the head, arms and legs remain still").
_LIST_WORDS = {"the", "a", "an", "his", "her", "their", "its", "my", "your", "and", "or", "nor", "s"}


@dataclass(frozen=True)
class Clause:
    """A span of the text and how negation applies inside it."""

    start: int
    end: int
    negated: bool  # the whole clause describes parts that stay still
    after: int | None  # char offset after which parts are excluded ("without moving ...")

    def negates(self, start: int) -> bool:
        """Whether a mention starting at ``start`` (inside this clause) is negated."""
        return self.negated or (self.after is not None and start >= self.after)


def split_clauses(text: str) -> list[tuple[int, int]]:
    """Clause spans of ``text``: cut at punctuation and clause conjunctions."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _BOUNDARY.finditer(text):
        if m.start() > pos:
            spans.append((pos, m.start()))
        pos = m.end()
    if pos < len(text):
        spans.append((pos, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _is_bare_list(text: str, lexicon: Lexicon) -> bool:
    words = [w for w, _, _ in words_of(text)]
    return bool(words) and all(w in _LIST_WORDS or lexicon.is_side_word(w) or lexicon.fold(w) for w in words)


def clauses(text: str, lexicon: Lexicon) -> list[Clause]:
    """Clauses of ``text`` with their negation, bare body-part lists joined to the clause they belong to."""
    spans = split_clauses(text)
    merged: list[list[int]] = []
    pending: list[int] | None = None  # a bare list waiting for its predicate
    for a, b in spans:
        if pending is not None:
            same_sentence = not _SENTENCE_END.search(text[pending[1] : a])
            if same_sentence:
                a = pending[0]
            else:
                merged.append(pending)
            pending = None
        if _is_bare_list(text[a:b], lexicon):
            prev = merged[-1] if merged else None
            # "without moving the feet or the hips": the list continues the previous clause's scope.
            if (
                prev
                and _after_match(text[prev[0] : prev[1]], lexicon) is not None
                and not _SENTENCE_END.search(text[prev[1] : a])
            ):
                prev[1] = b
                continue
            pending = [a, b]
            continue
        merged.append([a, b])
    if pending is not None:
        merged.append(pending)
    out = []
    for a, b in merged:
        chunk = text[a:b].lower()
        negated = any(p.search(chunk) for p in lexicon.clause_negations)
        after = _after_match(chunk, lexicon)
        out.append(Clause(a, b, negated, None if after is None else a + after))
    return out


def _after_match(chunk: str, lexicon: Lexicon) -> int | None:
    ends = [m.end() for p in lexicon.after_negations for m in [p.search(chunk.lower())] if m]
    return min(ends) if ends else None


def negated_at(clause_list: list[Clause], start: int) -> bool:
    """Whether a mention starting at char ``start`` is negated, given the text's clauses."""
    for c in clause_list:
        if c.start <= start < c.end:
            return c.negates(start)
    return False

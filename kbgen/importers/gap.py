"""Importer for the published GAP text descriptions (Xiang et al., ICCV 2023, github.com/MartinXM/GAP).

The GAP ``text/`` folder holds, per dataset (NTU files unprefixed, NW-UCLA files prefixed ``ucla_``):

- ``sentence_openai_t01.txt``: ``label name,paragraph`` per line  -> the class's global description
- ``pasta_openai_t01.txt``: ``label name;head text;hand text;arm text;hip text;leg text;foot text``
  -> each joint's text (by the joint's body part) and the key body parts (parts that are not still)
- ``synonym_openai_t01.txt``: ``label name,synonym, synonym, ...`` -> kept in the provenance
- ``ntu120_label_map.txt``: label names in NTU label order (line i is class ``A{i+1}``)

Everything is stored with source ``import`` and provenance ``{format, file, line}``. Formats: facts
about the file layout come from reading the files themselves; no GAP code is used.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from dataspec import DatasetSpec
from kbgen.keyjoints.lexicon import Lexicon, load_lexicon
from kbgen.keyjoints.negation import clauses
from kbgen.store import repo
from kbgen.store.errors import StoreError

GAP_PARTS = ("head", "hand", "arm", "hip", "leg", "foot")
FILE_PREFIXES = ("", "ucla_")
SENTENCE_FILE = "sentence_openai_t01.txt"
PASTA_FILE = "pasta_openai_t01.txt"
SYNONYM_FILE = "synonym_openai_t01.txt"
LABEL_MAP_FILE = "ntu120_label_map.txt"
# A GAP label that differs from the spec's name is accepted when this similar (difflib ratio).
FUZZY_CUTOFF = 0.75
_LABEL_END = re.compile(r"[,;]")
_PART_PREFIX = re.compile(r"^\s*(head|hands?|arms?|hips?|legs?|feet|foot)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class GapEntry:
    """One line of a GAP file: the label, its text fields and where it was read."""

    label: str
    fields: tuple[str, ...]
    file: str
    line: int


@dataclass
class GapImportReport:
    """What an import did: classes written, texts stored/unchanged, how labels matched, what did not."""

    dataset: str
    prefix: str
    classes: int = 0
    stored: int = 0
    unchanged: int = 0
    matched_by: dict[str, int] = field(default_factory=dict)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # (label, class id, spec name)
    unmatched_labels: list[str] = field(default_factory=list)
    classes_without_text: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def _norm_label(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9/ ]+", " ", text.lower()).split())


def _split_label(line: str) -> tuple[str, str]:
    """Label and rest of a line: the NTU files put a comma after the label, the NW-UCLA ones a semicolon."""
    cut = _LABEL_END.search(line)
    if cut is None:
        return line.strip(), ""
    return line[: cut.start()].strip(), line[cut.end() :]


def read_sentences(path: Path) -> list[GapEntry]:
    """``label,paragraph`` (or ``label;paragraph``) lines."""
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, text = _split_label(line)
        entries.append(GapEntry(label.strip(), (text.strip(),), path.name, n))
    return entries


def read_synonyms(path: Path) -> list[GapEntry]:
    """``label,syn, syn, ...`` lines."""
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, rest = _split_label(line)
        synonyms = tuple(dict.fromkeys(s.strip() for s in rest.split(",") if s.strip()))
        entries.append(GapEntry(label.strip(), synonyms, path.name, n))
    return entries


def read_pasta(path: Path) -> tuple[list[GapEntry], list[str]]:
    """``label;head;hand;arm;hip;leg;foot`` lines → entries with the six part texts in GAP_PARTS order.

    Returns (entries, problems): a line without exactly six part texts is reported, not guessed.
    """
    entries, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, *rest = line.split(";")
        parts = [_PART_PREFIX.sub("", p).strip().rstrip(".").strip() for p in rest if p.strip()]
        if len(parts) != len(GAP_PARTS):
            problems.append(f"{path.name}:{n}: expected {len(GAP_PARTS)} body-part texts, found {len(parts)}")
            continue
        entries.append(GapEntry(label.strip(), tuple(parts), path.name, n))
    return entries, problems


def read_label_map(path: Path) -> list[str]:
    """Label names in label order (blank lines kept out)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gap_part_of_joint(spec: DatasetSpec, index: int) -> str:
    """Which GAP body part describes a joint: by the spec's ``part`` field and the joint's name.

    The spec's parts are head/torso/arm/hand/leg/foot; GAP's are head/hand/arm/hip/leg/foot. Hip
    joints take the hip text, and so do the torso joints (the spine's motion is the pelvis's in GAP's
    six-part split; the torso has no text of its own).
    """
    joint = spec.joints[index]
    names = [joint.name, *joint.aliases]
    if joint.part == "torso" or any(re.search(r"\bhip\b", n.lower()) for n in names):
        return "hip"
    return joint.part if joint.part in GAP_PARTS else "head"


def key_body_parts(parts: tuple[str, ...], lexicon: Lexicon) -> list[str]:
    """The GAP parts whose text does not say they stay still ("hip remains stationary" is not key)."""
    keep = []
    for name, text in zip(GAP_PARTS, parts, strict=True):
        first = clauses(f"{name} {text}", lexicon)
        if not (first and (first[0].negated or first[0].after is not None)):
            keep.append(name)
    return keep


def choose_prefix(directory: Path, spec: DatasetSpec) -> str:
    """The file prefix ("" for NTU, "ucla_" for NW-UCLA) whose labels match most of the spec's classes."""
    names = {_norm_label(c.name) for c in spec.classes}
    best, best_hits = None, -1
    for prefix in FILE_PREFIXES:
        path = directory / f"{prefix}{SENTENCE_FILE}"
        if not path.is_file():
            continue
        hits = sum(_norm_label(e.label) in names for e in read_sentences(path))
        if hits > best_hits:
            best, best_hits = prefix, hits
    if best is None:
        raise StoreError(f"no GAP files in {directory}: expected {SENTENCE_FILE} (and {PASTA_FILE}) there")
    return best


def match_labels(
    labels: list[str], spec: DatasetSpec, label_map: list[str] | None
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Map GAP labels to class ids: exact name, then NTU label order, then a close name.

    Returns ({label: (class id, how)}, unmatched labels).
    """
    by_name = {_norm_label(c.name): c.id for c in spec.classes}
    ids = set(spec.class_ids)
    order = {_norm_label(name): i for i, name in enumerate(label_map or [])}
    matched: dict[str, tuple[str, str]] = {}
    unmatched: list[str] = []
    for label in labels:
        key = _norm_label(label)
        if key in by_name:
            matched[label] = (by_name[key], "name")
        elif key in order and f"A{order[key] + 1}" in ids:
            matched[label] = (f"A{order[key] + 1}", "label map")
        else:
            unmatched.append(label)
    taken = {cid for cid, _ in matched.values()}
    free = {name: cid for name, cid in by_name.items() if cid not in taken}
    still: list[str] = []
    for label in unmatched:
        close = difflib.get_close_matches(_norm_label(label), list(free), n=1, cutoff=FUZZY_CUTOFF)
        if close:
            matched[label] = (free.pop(close[0]), "similar name")
        else:
            still.append(label)
    return matched, still


def import_gap(session: Session, spec: DatasetSpec, directory: str | Path) -> GapImportReport:
    """Import the GAP descriptions in ``directory`` for ``spec`` (see module docstring)."""
    try:
        return _import_gap(session, spec, Path(directory))
    except (UnicodeDecodeError, OSError) as exc:
        raise StoreError(
            f"cannot read the GAP files in {directory}: {exc}: give the GAP text/ folder"
        ) from None


def _import_gap(session: Session, spec: DatasetSpec, directory: Path) -> GapImportReport:
    if not directory.is_dir():
        raise StoreError(f"{directory} is not a folder: give the GAP text/ folder with {SENTENCE_FILE}")
    prefix = choose_prefix(directory, spec)
    report = GapImportReport(dataset=spec.name, prefix=prefix)
    sentences = read_sentences(directory / f"{prefix}{SENTENCE_FILE}")
    pasta_path = directory / f"{prefix}{PASTA_FILE}"
    pasta, problems = read_pasta(pasta_path) if pasta_path.is_file() else ([], [])
    report.malformed.extend(problems)
    synonym_path = directory / f"{prefix}{SYNONYM_FILE}"
    synonyms = {e.label: e for e in read_synonyms(synonym_path)} if synonym_path.is_file() else {}
    label_map_path = directory / LABEL_MAP_FILE
    label_map = read_label_map(label_map_path) if prefix == "" and label_map_path.is_file() else None
    labels = list(dict.fromkeys([e.label for e in sentences] + [e.label for e in pasta]))
    matched, report.unmatched_labels = match_labels(labels, spec, label_map)
    for label, (cid, how) in matched.items():
        report.matched_by[how] = report.matched_by.get(how, 0) + 1
        if how != "name":
            report.renamed.append((label, cid, spec.get_class(cid).name))

    lexicon = load_lexicon()
    pasta_by_label = {e.label: e for e in pasta}
    repo.ensure_dataset(session, spec)
    written: set[str] = set()
    for entry in sentences:
        if entry.label not in matched:
            continue
        cid = matched[entry.label][0]
        class_row = repo.get_class(session, spec.name, cid)
        part_entry = pasta_by_label.get(entry.label)
        provenance: dict = {"format": "gap", "file": entry.file, "line": entry.line}
        parts = None
        if part_entry is not None:
            parts = key_body_parts(part_entry.fields, lexicon)
            provenance["key_body_parts_from"] = {"file": part_entry.file, "line": part_entry.line}
        if entry.label in synonyms:
            provenance["synonyms"] = list(synonyms[entry.label].fields)
        saved = repo.save_description(
            session,
            class_row,
            "global",
            None,
            entry.fields[0],
            "import",
            provenance=provenance,
            key_body_parts=parts,
        )
        _count(report, saved)
        written.add(cid)
        if part_entry is not None:
            for joint in spec.joints:
                part = gap_part_of_joint(spec, joint.index)
                text = part_entry.fields[GAP_PARTS.index(part)]
                where = {"format": "gap", "file": part_entry.file, "line": part_entry.line, "part": part}
                saved = repo.save_description(
                    session, class_row, "joint", joint.index, text, "import", provenance=where
                )
                _count(report, saved)
    report.classes = len(written)
    report.classes_without_text = [c for c in spec.class_ids if c not in written]
    return report


def _count(report: GapImportReport, row: object | None) -> None:
    if row is None:
        report.unchanged += 1
    else:
        report.stored += 1

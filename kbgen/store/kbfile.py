"""The knowledge-base JSON file of ``kbgen export`` / ``kbgen import``.

One file per dataset: the current texts only (no timestamps, sources or ids), classes in spec
order and joints in spec order, so export → import → export gives the same bytes. Import
validates the whole file (schema, size bounds, class ids, joint names) before it stores
anything, and stores it in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy.orm import Session

from dataspec import DatasetSpec, SpecError
from kbgen.store import repo
from kbgen.store.errors import StoreError

FORMAT = "kbgen-knowledge-base"
FORMAT_VERSION = 1
# Bounds that no real knowledge base comes near (NTU-120: ~0.5 MB); they stop a wrong file early.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_TEXT_CHARS = 8000
MAX_CLASSES = 10_000
MAX_JOINTS = 256
MAX_KEY_PARTS = 50

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)]
ShortName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ClassEntry(BaseModel):
    """The current texts of one class. ``global: null`` or a missing joint means "no text given"."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
    name: ShortName | None = None
    global_text: Text | None = Field(default=None, alias="global")
    key_body_parts: list[ShortName] = Field(default_factory=list, max_length=MAX_KEY_PARTS)
    joints: dict[ShortName, Text] = Field(default_factory=dict, max_length=MAX_JOINTS)


class KnowledgeBaseFile(BaseModel):
    """A whole exported knowledge base."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["kbgen-knowledge-base"]
    version: Literal[1]
    dataset: ShortName
    joints: list[ShortName] | None = Field(default=None, max_length=MAX_JOINTS)
    classes: list[ClassEntry] = Field(max_length=MAX_CLASSES)


@dataclass
class ImportReport:
    """What an import did."""

    classes: int = 0
    saved: int = 0
    unchanged: int = 0


def export_kb(session: Session, spec: DatasetSpec) -> dict[str, Any]:
    """The current knowledge base of a dataset as the export document (classes with any text)."""
    dataset = repo.get_dataset(session, spec.name)
    names = repo.joint_names(session, dataset)
    classes = []
    for class_row in repo.list_classes(session, dataset):
        kb = repo.current_kb(session, class_row, names)
        if kb.status != "missing":
            classes.append(kb.to_json())
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dataset": spec.name,
        "joints": names,
        "classes": classes,
    }


def dumps(document: dict[str, Any]) -> str:
    """Stable text of an export document."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the file"


def read_kb_file(path: Path) -> KnowledgeBaseFile:
    """Read and schema-check a knowledge-base file; every problem is a one-line :class:`StoreError`."""
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise StoreError(
            f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES} byte limit of a knowledge base"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise StoreError(f"{path}: not UTF-8 text; export files are UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise StoreError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    try:
        return KnowledgeBaseFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise StoreError(
            f"{path}: {_location(first['loc'])}: {first['msg']}{more}; nothing imported"
        ) from None


def _resolve(
    document: KnowledgeBaseFile, spec: DatasetSpec, where: str
) -> list[tuple[str, ClassEntry, dict[int, str]]]:
    """Check ids and joint names against the spec; (class id, entry, position → text) per class."""
    if document.dataset != spec.name:
        raise StoreError(
            f"{where}: the file is for dataset '{document.dataset}', not '{spec.name}': "
            f"pass --dataset {document.dataset}"
        )
    for name in document.joints or []:
        try:
            spec.joint_index(name)
        except SpecError as exc:
            raise StoreError(f"{where}: joints: {exc}; nothing imported") from None
    resolved = []
    seen: set[str] = set()
    for i, entry in enumerate(document.classes):
        try:
            cid = spec.get_class(entry.class_id).id
        except SpecError as exc:
            raise StoreError(f"{where}: classes[{i}]: {exc}; nothing imported") from None
        if cid in seen:
            raise StoreError(f"{where}: classes[{i}]: class {cid} appears twice; nothing imported")
        seen.add(cid)
        texts: dict[int, str] = {}
        for joint, text in entry.joints.items():
            try:
                position = spec.joint_index(joint)
            except SpecError as exc:
                raise StoreError(f"{where}: classes[{i}] ({cid}): {exc}; nothing imported") from None
            if position in texts:
                raise StoreError(
                    f"{where}: classes[{i}] ({cid}): joint '{joint}' is given twice; nothing imported"
                )
            texts[position] = text
        resolved.append((cid, entry, texts))
    return resolved


def import_kb(session: Session, spec: DatasetSpec, path: Path) -> ImportReport:
    """Validate a knowledge-base file completely, then store each changed text as a new version.

    Texts equal to the current ones are skipped, so importing twice changes nothing. The caller's
    transaction covers the whole import: an error stores nothing.
    """
    document = read_kb_file(path)
    resolved = _resolve(document, spec, str(path))
    report = ImportReport(classes=len(resolved))
    for cid, entry, texts in resolved:
        class_row = repo.get_class(session, spec.name, cid)
        provenance = {"file": path.name, "class_id": cid}
        items: list[repo.NewText] = []
        if entry.global_text is not None:
            items.append(repo.NewText("global", None, entry.global_text, list(entry.key_body_parts)))
        items.extend(repo.NewText("joint", position, text) for position, text in sorted(texts.items()))
        saved = repo.save_descriptions(session, class_row, items, "import", provenance=provenance)
        report.saved += sum(row is not None for row in saved)
        report.unchanged += sum(row is None for row in saved)
    return report

"""The functions every kbgen module uses to read and write the knowledge base.

Transactions: these functions ``flush`` but never ``commit``; the caller owns the transaction.
Open one short :func:`kbgen.store.db.session_scope` per unit of work (one good LLM answer, one
edit) so a killed run loses nothing already answered::

    from kbgen.store import db, repo

    with db.session_scope(url) as s:
        dataset = repo.ensure_dataset(s, spec)
    with db.session_scope(url) as s:
        cls = repo.get_class(s, "ntu120", "A1")
        call = repo.record_call(s, class_row=cls, kind="global", rendered_prompt=p, status="ok", ...)
        repo.save_description(s, cls, "global", None, text, "llm", call=call, key_body_parts=parts)

Secrets: :func:`record_call` and :func:`start_run` keep only the host of an endpoint and drop
parameters whose names look like credentials, so an API key never reaches the database.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, case, false, func, or_, select
from sqlalchemy.orm import Session, selectinload

from dataspec import DatasetSpec, SpecError, normalize_class_id
from kbgen.llm.endpoint import endpoint_host
from kbgen.store.db import lock_for_write
from kbgen.store.errors import StoreError
from kbgen.store.models import (
    CALL_KINDS,
    CALL_STATUSES,
    DESCRIPTION_KINDS,
    DESCRIPTION_SOURCES,
    ClassRow,
    Dataset,
    Description,
    JointRow,
    KeyjointDistribution,
    LlmCall,
    Run,
    Template,
    utcnow,
)
from kbgen.store.owner import owner_is_gone, this_host

# Parameter names that may carry a credential; their values are never stored.
_SECRET_PARAM = re.compile(r"(api[_-]?key|secret|password|passwd|authorization|auth[_-]?token|bearer)", re.I)


# --------------------------------------------------------------------------- datasets, classes


def ensure_dataset(session: Session, spec: DatasetSpec) -> Dataset:
    """The dataset row of ``spec``, created (with its classes and joints) or updated to match it.

    A changed spec updates the title, class names and joint names and adds new classes; a
    different number of joints is refused because stored joint texts are keyed by position.
    """
    dataset = session.scalar(select(Dataset).where(Dataset.name == spec.name))
    if dataset is not None and dataset.spec_sha256 == spec.sha256:
        return dataset
    # Creating or updating: under the write lock, look again (another process may have done it).
    lock_for_write(session)
    dataset = session.scalar(
        select(Dataset).where(Dataset.name == spec.name).execution_options(populate_existing=True)
    )
    if dataset is not None and dataset.spec_sha256 == spec.sha256:
        return dataset
    if dataset is None:
        dataset = Dataset(
            name=spec.name, title=spec.title, spec_sha256=spec.sha256, num_joints=spec.num_joints
        )
        session.add(dataset)
    elif dataset.num_joints != spec.num_joints:
        raise StoreError(
            f"dataset {spec.name} is stored with {dataset.num_joints} joints but its spec now has "
            f"{spec.num_joints}: use another database (--db) or a new dataset name"
        )
    dataset.title = spec.title
    dataset.spec_sha256 = spec.sha256
    classes = {c.class_id: c for c in dataset.classes}
    for position, action in enumerate(spec.classes):
        row = classes.get(action.id)
        if row is None:
            dataset.classes.append(ClassRow(class_id=action.id, name=action.name, position=position))
        else:
            row.name, row.position = action.name, position
    joints = {j.position: j for j in dataset.joints}
    for joint in spec.joints:
        row = joints.get(joint.index)
        if row is None:
            dataset.joints.append(JointRow(position=joint.index, name=joint.name))
        else:
            row.name = joint.name
    session.flush()
    return dataset


def get_dataset(session: Session, name: str) -> Dataset:
    """A stored dataset by name."""
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise StoreError(
            f"dataset '{name}' is not in the database yet: run `kbgen generate --dataset {name}` first"
        )
    return dataset


def get_class(session: Session, dataset_name: str, class_id: str) -> ClassRow:
    """A class of a stored dataset by id in any accepted spelling (``A001`` is ``A1``)."""
    try:
        cid = normalize_class_id(class_id)
    except SpecError as exc:
        raise StoreError(str(exc)) from None
    dataset = get_dataset(session, dataset_name)
    row = session.scalar(select(ClassRow).where(ClassRow.dataset_id == dataset.id, ClassRow.class_id == cid))
    if row is None:
        raise StoreError(
            f"class '{class_id}' is not in dataset {dataset_name}: see `kbgen list --dataset {dataset_name}`"
        )
    return row


def list_classes(session: Session, dataset: Dataset) -> list[ClassRow]:
    """The classes of a dataset in spec order."""
    return list(
        session.scalars(select(ClassRow).where(ClassRow.dataset_id == dataset.id).order_by(ClassRow.position))
    )


def joint_names(session: Session, dataset: Dataset) -> list[str]:
    """The joint names of a dataset, index = position."""
    rows = session.scalars(
        select(JointRow).where(JointRow.dataset_id == dataset.id).order_by(JointRow.position)
    )
    return [j.name for j in rows]


# --------------------------------------------------------------------------- templates, runs, calls


def ensure_template(session: Session, name: str, content: str) -> Template:
    """The template row for this exact content (stored once per content hash)."""
    sha = hashlib.sha256(content.encode()).hexdigest()
    row = session.scalar(select(Template).where(Template.sha256 == sha))
    if row is None:
        row = Template(name=name, sha256=sha, content=content)
        session.add(row)
        session.flush()
    return row


def scrub_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of request parameters without anything that looks like a credential (recursively)."""
    clean: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if _SECRET_PARAM.search(str(key)):
            continue
        clean[str(key)] = scrub_params(value) if isinstance(value, Mapping) else value
    return clean


def start_run(
    session: Session,
    dataset: Dataset | None,
    kind: str,
    *,
    model: str | None = None,
    endpoint: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> Run:
    """A new run row (status ``running``), owned by this process (pid and host name).

    ``endpoint`` may be a full URL, only its host is kept. Runs left ``running`` by dead
    processes of this host are marked ``interrupted`` first (:func:`mark_dead_runs`).
    """
    mark_dead_runs(session)
    run = Run(
        dataset_id=dataset.id if dataset is not None else None,
        kind=kind,
        model=model,
        endpoint_host=endpoint_host(endpoint),
        params=scrub_params(params),
        status="running",
        pid=os.getpid(),
        hostname=this_host(),
    )
    session.add(run)
    session.flush()
    return run


def finish_run(session: Session, run: Run, status: str, summary: Mapping[str, Any] | None = None) -> Run:
    """Mark a run finished (``ok``, ``failed``, ``interrupted``...) with its summary."""
    run.status = status
    run.summary = dict(summary or {})
    run.finished_at = utcnow()
    session.flush()
    return run


def mark_dead_runs(session: Session) -> list[Run]:
    """Mark ``interrupted`` the ``running`` runs whose owner process on this host is gone; returns them.

    One query of the running rows of this host. ``finished_at`` stays NULL (nobody saw the end)
    and ``summary["reason"]`` says why. Rows of other hosts, whose processes cannot be checked,
    and rows from before migration 0002 (no pid) are left as they are.
    """
    host = this_host()
    running = session.scalars(
        select(Run).where(Run.status == "running", Run.hostname == host, Run.pid.is_not(None))
    )
    dead = [run for run in running if run.pid is not None and owner_is_gone(run.pid, run.started_at)]
    for run in dead:
        run.status = "interrupted"
        run.summary = {**(run.summary or {}), "reason": f"process {run.pid} on {host} is gone"}
    if dead:
        session.flush()
    return dead


def list_runs(session: Session, *, dataset: Dataset | None = None, limit: int | None = 10) -> list[Run]:
    """The most recent runs first, optionally of one dataset; ``limit=None`` is all."""
    query = select(Run).options(selectinload(Run.dataset)).order_by(Run.id.desc())
    if dataset is not None:
        query = query.where(Run.dataset_id == dataset.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


class CallCounts(NamedTuple):
    """LLM calls stored for one run: all attempts, and the good ones."""

    calls: int
    ok: int


def run_call_counts(session: Session, run_ids: Sequence[int]) -> dict[int, CallCounts]:
    """Calls stored per run (one grouped query); runs without calls are absent."""
    if not run_ids:
        return {}
    rows = session.execute(
        select(LlmCall.run_id, func.count(), func.sum(case((LlmCall.status == "ok", 1), else_=0)))
        .where(LlmCall.run_id.in_(run_ids))
        .group_by(LlmCall.run_id)
    )
    return {run_id: CallCounts(calls, ok or 0) for run_id, calls, ok in rows if run_id is not None}


def record_call(
    session: Session,
    *,
    class_row: ClassRow,
    kind: str,
    rendered_prompt: str,
    status: str,
    template: Template | None = None,
    run: Run | None = None,
    model: str | None = None,
    endpoint: str | None = None,
    params: Mapping[str, Any] | None = None,
    raw_answer: str | None = None,
    error: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    latency_s: float | None = None,
    attempt: int = 1,
) -> LlmCall:
    """Log one LLM attempt, good or bad.

    ``kind`` is ``global`` or ``joints``; ``status`` is ``ok``, ``invalid`` or ``error``.
    ``endpoint`` may be the full base URL: only its host is stored; credential-like ``params``
    are dropped.
    """
    if kind not in CALL_KINDS:
        raise ValueError(f"call kind must be one of {CALL_KINDS}, not {kind!r}")
    if status not in CALL_STATUSES:
        raise ValueError(f"call status must be one of {CALL_STATUSES}, not {status!r}")
    call = LlmCall(
        run_id=run.id if run is not None else None,
        class_pk=class_row.id,
        kind=kind,
        template_id=template.id if template is not None else None,
        rendered_prompt=rendered_prompt,
        model=model,
        endpoint_host=endpoint_host(endpoint),
        params=scrub_params(params),
        raw_answer=raw_answer,
        status=status,
        error=error,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_s=latency_s,
        attempt=attempt,
    )
    session.add(call)
    session.flush()
    return call


def list_calls(
    session: Session,
    *,
    dataset: Dataset | None = None,
    class_row: ClassRow | None = None,
    class_id: str | None = None,
    failed_only: bool = False,
    limit: int | None = 10,
) -> list[LlmCall]:
    """The most recent LLM calls first, optionally of one dataset or class, or only the failed ones.

    ``class_id`` filters by id across datasets (``A1`` of ntu60 and of ntu120); ``limit=None`` is all.
    """
    query = select(LlmCall).join(ClassRow, LlmCall.class_pk == ClassRow.id)
    if dataset is not None:
        query = query.where(ClassRow.dataset_id == dataset.id)
    if class_row is not None:
        query = query.where(LlmCall.class_pk == class_row.id)
    if class_id is not None:
        try:
            query = query.where(ClassRow.class_id == normalize_class_id(class_id))
        except SpecError as exc:
            raise StoreError(str(exc)) from None
    if failed_only:
        query = query.where(LlmCall.status != "ok")
    query = query.order_by(LlmCall.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


# --------------------------------------------------------------------------- descriptions


def current_description(
    session: Session, class_row: ClassRow, kind: str, joint_position: int | None = None
) -> Description | None:
    """The current version of one text, or None when it was never written."""
    query = select(Description).where(
        Description.class_pk == class_row.id, Description.kind == kind, Description.is_current.is_(True)
    )
    if kind == "joint":
        query = query.where(Description.joint_position == joint_position)
    return session.scalar(query)


@dataclass(frozen=True)
class NewText:
    """One text to save with :func:`save_descriptions`.

    ``kind`` is ``global`` (``joint_position`` None) or ``joint``; ``key_body_parts`` only for a
    global text, None meaning "keep the current key parts".
    """

    kind: str
    joint_position: int | None
    text: str
    key_body_parts: Sequence[str] | None = None


def save_description(
    session: Session,
    class_row: ClassRow,
    kind: str,
    joint_position: int | None,
    text: str,
    source: str,
    *,
    call: LlmCall | None = None,
    provenance: Mapping[str, Any] | None = None,
    key_body_parts: Sequence[str] | None = None,
) -> Description | None:
    """Store a new version of a text and make it current; the previous version stays, not current.

    ``kind`` is ``global`` (``joint_position`` None) or ``joint``. For a global text,
    ``key_body_parts=None`` keeps the current key parts. Returns None and stores nothing when
    the text (and key parts) equal the current ones. A new global text marks the class's
    current key-joint distribution stale. To save many texts of one class, use
    :func:`save_descriptions` (a few queries in all instead of a few per text).
    """
    item = NewText(kind, joint_position, text, key_body_parts)
    return save_descriptions(session, class_row, [item], source, call=call, provenance=provenance)[0]


def _checked(item: NewText, num_joints: int) -> tuple[tuple[str, int | None], str]:
    if item.kind not in DESCRIPTION_KINDS:
        raise ValueError(f"description kind must be one of {DESCRIPTION_KINDS}, not {item.kind!r}")
    if (item.kind == "global") != (item.joint_position is None):
        raise ValueError("a global description has no joint position; a joint description needs one")
    if item.joint_position is not None and not 0 <= item.joint_position < num_joints:
        raise StoreError(f"joint position {item.joint_position} is outside 0..{num_joints - 1}")
    text = item.text.strip()
    if not text:
        raise StoreError("a description cannot be empty")
    return (item.kind, item.joint_position), text


def save_descriptions(
    session: Session,
    class_row: ClassRow,
    items: Sequence[NewText],
    source: str,
    *,
    call: LlmCall | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> list[Description | None]:
    """Save several texts of one class at once (e.g. one LLM answer with 25 joint texts).

    Same rules as :func:`save_description` for each text; returns, for each item, the new row
    or None when the text was unchanged. Every item is checked before anything is written.
    """
    if source not in DESCRIPTION_SOURCES:
        raise ValueError(f"description source must be one of {DESCRIPTION_SOURCES}, not {source!r}")
    num_joints = class_row.dataset.num_joints
    checked = [_checked(item, num_joints) for item in items]
    keys = [key for key, _ in checked]
    if len(set(keys)) != len(keys):
        raise ValueError("the same text (kind, joint) is given twice in one save")
    if not items:
        return []
    # The current rows and versions must not change between reading them and writing.
    lock_for_write(session)
    # Two queries for the whole batch, about these texts only: the current rows and the highest
    # version of each text.
    positions = [position for kind, position in keys if kind == "joint"]
    wanted = or_(
        Description.kind == "global" if ("global", None) in keys else false(),
        and_(Description.kind == "joint", Description.joint_position.in_(positions))
        if positions
        else false(),
    )
    current = {
        (d.kind, d.joint_position): d
        for d in session.scalars(
            select(Description).where(
                Description.class_pk == class_row.id, Description.is_current.is_(True), wanted
            )
        )
    }
    versions = {
        (kind, position): version
        for kind, position, version in session.execute(
            select(Description.kind, Description.joint_position, func.max(Description.version))
            .where(Description.class_pk == class_row.id, wanted)
            .group_by(Description.kind, Description.joint_position)
        )
    }
    results: list[Description | None] = []
    retired: list[Description] = []
    for item, (key, text) in zip(items, checked, strict=True):
        previous = current.get(key)
        parts: list[str] | None = None
        if item.kind == "global":
            if item.key_body_parts is not None:
                parts = [str(p).strip() for p in item.key_body_parts if str(p).strip()]
            else:
                parts = list(previous.key_body_parts or []) if previous is not None else []
        if previous is not None and previous.text == text and previous.key_body_parts == parts:
            results.append(None)
            continue
        if previous is not None:
            previous.is_current = False
            retired.append(previous)
        results.append(
            Description(
                class_pk=class_row.id,
                kind=item.kind,
                joint_position=item.joint_position,
                text=text,
                key_body_parts=parts,
                version=versions.get(key, 0) + 1,
                source=source,
                call_id=call.id if call is not None else None,
                provenance=dict(provenance) if provenance else None,
                is_current=True,
            )
        )
    if retired:
        # The partial unique indexes allow one current row: retire the old ones before inserting.
        session.flush()
    new_rows = [row for row in results if row is not None]
    session.add_all(new_rows)
    if any(row.kind == "global" for row in new_rows):
        keyjoints = current_keyjoints(session, class_row)
        if keyjoints is not None:
            keyjoints.stale = True
    session.flush()
    return results


def history(
    session: Session, class_row: ClassRow, *, kind: str | None = None, joint_position: int | None = None
) -> list[Description]:
    """Every version of a class's texts, oldest first (global first, then joints by position)."""
    query = select(Description).where(Description.class_pk == class_row.id)
    if kind is not None:
        query = query.where(Description.kind == kind)
    if joint_position is not None:
        query = query.where(Description.joint_position == joint_position)
    query = query.order_by(
        Description.kind,  # 'global' sorts before 'joint'
        Description.joint_position,
        Description.version,
    )
    return list(session.scalars(query))


@dataclass
class ClassKnowledge:
    """The current knowledge of one class, as ``show``/``export``/packs read it."""

    class_id: str
    name: str
    num_joints: int
    global_text: str | None = None
    key_body_parts: list[str] = field(default_factory=list)
    joints: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    updated_at: datetime | None = None

    @property
    def complete(self) -> bool:
        """A global text and a text for every joint."""
        return self.global_text is not None and len(self.joints) == self.num_joints

    @property
    def status(self) -> str:
        """``complete``, ``partial`` or ``missing``."""
        if self.complete:
            return "complete"
        return "partial" if self.global_text is not None or self.joints else "missing"

    def to_json(self) -> dict[str, Any]:
        """The ``show --json`` / export shape: class_id, name, global, key_body_parts, joints."""
        return {
            "class_id": self.class_id,
            "name": self.name,
            "global": self.global_text,
            "key_body_parts": list(self.key_body_parts),
            "joints": dict(self.joints),
        }


def current_kb(session: Session, class_row: ClassRow, names: Sequence[str] | None = None) -> ClassKnowledge:
    """The current texts of a class. ``names`` (joint names by position) saves a query in loops."""
    dataset = class_row.dataset
    names = list(names) if names is not None else joint_names(session, dataset)
    rows = session.scalars(
        select(Description)
        .where(Description.class_pk == class_row.id, Description.is_current.is_(True))
        .order_by(Description.joint_position)
    )
    kb = ClassKnowledge(class_id=class_row.class_id, name=class_row.name, num_joints=dataset.num_joints)
    sources: set[str] = set()
    for row in rows:
        sources.add(row.source)
        kb.updated_at = row.created_at if kb.updated_at is None else max(kb.updated_at, row.created_at)
        if row.kind == "global":
            kb.global_text = row.text
            kb.key_body_parts = list(row.key_body_parts or [])
        elif row.joint_position is not None:
            kb.joints[names[row.joint_position]] = row.text
    kb.sources = sorted(sources)
    return kb


# --------------------------------------------------------------------------- key joints


def current_keyjoints(session: Session, class_row: ClassRow) -> KeyjointDistribution | None:
    """The current key-joint distribution of a class, or None."""
    return session.scalar(
        select(KeyjointDistribution).where(
            KeyjointDistribution.class_pk == class_row.id, KeyjointDistribution.is_current.is_(True)
        )
    )


def keyjoint_flag(distribution: KeyjointDistribution | None) -> str:
    """The ``list`` column: ``none``, ``stale``, ``uniform`` or ``ok``."""
    if distribution is None:
        return "none"
    if distribution.stale:
        return "stale"
    return "uniform" if distribution.is_uniform else "ok"

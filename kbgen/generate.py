"""The generation job: ask the two prompts for each selected class and store the answers.

Work is split into one task per (class, prompt), run by ``concurrency`` worker threads that share
one :class:`~kbgen.llm.client.LlmClient`. Each good answer is committed, together with the call
that produced it, in its own short transaction as it arrives; failed attempts are committed as
they happen. A killed run therefore loses at most the answers in flight, and a rerun skips what
is already stored: complete classes entirely (unless ``force``), and the finished half of a
partial class. ``save_description`` stores nothing when a text equals the current one, so a
rerun never duplicates texts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from dataspec import DatasetSpec
from kbgen.llm.client import CallAttempt, LlmClient, LlmError
from kbgen.llm.schemas import global_json_schema, joint_json_schema, parse_global_answer, parse_joint_answer
from kbgen.llm.templates import GLOBAL_TEMPLATE, JOINTS_TEMPLATE, load_template, prompt_variables
from kbgen.store import db as store_db
from kbgen.store import repo
from kbgen.store.models import ClassRow, LlmCall, Run, Template

KINDS = ("global", "joints")
GLOBAL_MAX_TOKENS = 512
# Room for one sentence (<= 240 characters, ~60 tokens) per joint, plus JSON punctuation.
JOINT_TOKENS_PER_JOINT = 80


@dataclass
class TaskResult:
    """The outcome of one (class, prompt) task."""

    class_id: str
    kind: str
    ok: bool
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class ClassOutcome:
    """What happened to one class in a run: done, failed or skipped (already complete)."""

    class_id: str
    name: str
    status: str
    tasks: list[TaskResult] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return sum(t.attempts for t in self.tasks)

    @property
    def tokens(self) -> int:
        return sum(t.prompt_tokens + t.completion_tokens for t in self.tasks)

    @property
    def error(self) -> str | None:
        return next((t.error for t in self.tasks if t.error), None)


@dataclass
class GenerateSummary:
    """Totals of a run, stored as the run's summary and printed as the final table."""

    run_id: int
    outcomes: list[ClassOutcome]
    wall_s: float
    fatal_error: str | None = None

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def calls(self) -> int:
        return sum(o.attempts for o in self.outcomes)

    @property
    def retried(self) -> int:
        """Attempts beyond the first of each task: transport retries plus re-asks."""
        return sum(max(0, t.attempts - 1) for o in self.outcomes for t in o.tasks)

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.count("done"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "calls": self.calls,
            "retried": self.retried,
            "tokens": self.tokens,
            "wall_s": round(self.wall_s, 3),
            "failures": {o.class_id: o.error for o in self.outcomes if o.status == "failed"},
            **({"fatal_error": self.fatal_error} if self.fatal_error else {}),
        }


class GenerateListener:
    """Hooks for progress display; called from worker threads. The default does nothing."""

    def planned(self, classes: int, tasks: int) -> None:
        """Called once before the work starts."""

    def attempt(self, attempt: CallAttempt) -> None:
        """Called after every request to the endpoint (ok, invalid or error)."""

    def task_done(self, result: TaskResult) -> None:
        """Called when one (class, prompt) task finished, well or not."""


@dataclass
class _Task:
    class_pk: int
    class_id: str
    kind: str


def generate(
    spec: DatasetSpec,
    client: LlmClient,
    *,
    class_ids: list[str] | None = None,
    force: bool = False,
    concurrency: int = 4,
    db: str | None = None,
    listener: GenerateListener | None = None,
    run_params: dict[str, Any] | None = None,
) -> GenerateSummary:
    """Generate (or complete) the knowledge base of ``spec``'s classes; returns the run's summary.

    Args:
        class_ids: the classes to consider, any accepted spelling; default: all of the spec.
        force: ask again even for classes whose current texts are complete.
        concurrency: requests in flight at once.
        db: database URL (default: ``$KBGEN_DB`` or ``$KBGEN_HOME/kbgen.db``).
        run_params: extra parameters stored on the run row (never credentials).
    """
    listener = listener or GenerateListener()
    started = time.perf_counter()
    wanted = [spec.get_class(c).id for c in class_ids] if class_ids else spec.class_ids
    templates = {"global": load_template(GLOBAL_TEMPLATE), "joints": load_template(JOINTS_TEMPLATE)}
    with store_db.session_scope(db) as session:
        dataset = repo.ensure_dataset(session, spec)
        template_ids = {k: repo.ensure_template(session, t.name, t.content).id for k, t in templates.items()}
        run = repo.start_run(
            session,
            dataset,
            "generate",
            model=client.settings.model,
            endpoint=client.settings.base_url,
            params={
                "classes": wanted,
                "force": force,
                "concurrency": concurrency,
                "response_format": client.response_mode,
                "temperature": client.settings.temperature,
                "max_retries": client.settings.max_retries,
                "max_invalid": client.settings.max_invalid,
                **(run_params or {}),
            },
        )
        run_id = run.id
        names = repo.joint_names(session, dataset)
        outcomes: dict[str, ClassOutcome] = {}
        tasks: list[_Task] = []
        for row in repo.list_classes(session, dataset):
            if row.class_id not in wanted:
                continue
            kb = repo.current_kb(session, row, names)
            has_global = kb.global_text is not None
            todo = list(KINDS) if force else _missing_kinds(has_global, len(kb.joints), kb.num_joints)
            outcomes[row.class_id] = ClassOutcome(
                row.class_id, row.name, "skipped" if not todo else "pending"
            )
            tasks.extend(_Task(row.id, row.class_id, kind) for kind in todo)
    listener.planned(sum(o.status == "pending" for o in outcomes.values()), len(tasks))

    job = _Job(spec, client, templates, template_ids, run_id, db, listener)
    status = "ok"
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="kbgen")
    try:
        futures = [pool.submit(job.run_task, task) for task in tasks]
        for future in as_completed(futures):
            result = future.result()
            outcomes[result.class_id].tasks.append(result)
        pool.shutdown()
    except BaseException as exc:
        # Ctrl-C: drop the queued tasks and return at once; answers in flight are still saved
        # when they arrive (or fail when the caller stops the embedded server).
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        job.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        for outcome in outcomes.values():
            if outcome.status == "pending":
                ok = len(outcome.tasks) > 0 and all(t.ok for t in outcome.tasks)
                outcome.status = "done" if ok else "failed"
        summary = GenerateSummary(
            run_id, list(outcomes.values()), time.perf_counter() - started, job.fatal_error
        )
        if status == "ok" and (summary.count("failed") or job.fatal_error):
            status = "failed"
        with store_db.session_scope(db) as session:
            run_row = session.get(Run, run_id)
            if run_row is not None:
                repo.finish_run(session, run_row, status, summary.to_json())
    return summary


def _missing_kinds(has_global: bool, joints_done: int, num_joints: int) -> list[str]:
    todo = []
    if not has_global:
        todo.append("global")
    if joints_done < num_joints:
        todo.append("joints")
    return todo


class _Job:
    """State shared by the worker threads of one run."""

    def __init__(
        self,
        spec: DatasetSpec,
        client: LlmClient,
        templates: dict[str, Any],
        template_ids: dict[str, int],
        run_id: int,
        db: str | None,
        listener: GenerateListener,
    ) -> None:
        self.spec = spec
        self.client = client
        self.templates = templates
        self.template_ids = template_ids
        self.run_id = run_id
        self.db = db
        self.listener = listener
        self.stop = threading.Event()
        self.fatal_error: str | None = None

    def run_task(self, task: _Task) -> TaskResult:
        if self.stop.is_set():
            return TaskResult(task.class_id, task.kind, ok=False, error=self.fatal_error or "run stopped")
        action = self.spec.get_class(task.class_id)
        prompt = self.templates[task.kind].render(**prompt_variables(self.spec, action))
        record = self._recorder(task, prompt)
        try:
            if task.kind == "global":
                answer: Any = self.client.ask(
                    kind="global",
                    prompt=prompt,
                    schema_name="global_answer",
                    schema=global_json_schema(self.spec),
                    parse=parse_global_answer,
                    recorder=record,
                    max_tokens=GLOBAL_MAX_TOKENS,
                )
                self._save(task, answer.call_ref, global_answer=answer.value)
            else:
                answer = self.client.ask(
                    kind="joints",
                    prompt=prompt,
                    schema_name="joint_answer",
                    schema=joint_json_schema(self.spec),
                    parse=lambda raw: parse_joint_answer(raw, self.spec),
                    recorder=record,
                    max_tokens=JOINT_TOKENS_PER_JOINT * self.spec.num_joints + 64,
                )
                self._save(task, answer.call_ref, joint_texts=answer.value.joints)
        except LlmError as exc:
            if exc.fatal:
                self.fatal_error = str(exc)
                self.stop.set()
            result = TaskResult(task.class_id, task.kind, ok=False, attempts=exc.attempts, error=str(exc))
        else:
            result = TaskResult(
                task.class_id,
                task.kind,
                True,
                answer.attempts,
                answer.prompt_tokens,
                answer.completion_tokens,
            )
        self.listener.task_done(result)
        return result

    def _recorder(self, task: _Task, prompt: str) -> Callable[[CallAttempt], Any]:
        """Failed attempts are committed at once; a good one is returned to be saved with its texts."""

        def record(attempt: CallAttempt) -> CallAttempt | None:
            self.listener.attempt(attempt)
            if attempt.status == "ok":
                return attempt
            with store_db.session_scope(self.db) as session:
                self._insert_call(session, task, attempt)
            return None

        return record

    def _insert_call(self, session: Any, task: _Task, attempt: CallAttempt) -> LlmCall:
        class_row = session.get(ClassRow, task.class_pk)
        return repo.record_call(
            session,
            class_row=class_row,
            kind=attempt.kind,
            rendered_prompt=attempt.rendered_prompt,
            status=attempt.status,
            template=session.get(Template, self.template_ids[task.kind]),
            run=session.get(Run, self.run_id),
            model=attempt.model,
            endpoint=self.client.settings.base_url,
            params=attempt.params,
            raw_answer=attempt.raw_answer,
            error=attempt.error,
            prompt_tokens=attempt.prompt_tokens,
            completion_tokens=attempt.completion_tokens,
            latency_s=attempt.latency_s,
            attempt=attempt.attempt,
        )

    def _save(
        self,
        task: _Task,
        attempt: CallAttempt,
        *,
        global_answer: Any = None,
        joint_texts: dict[str, str] | None = None,
    ) -> None:
        """One transaction: the good call and the texts it produced."""
        with store_db.session_scope(self.db) as session:
            call = self._insert_call(session, task, attempt)
            class_row = call.class_row
            if global_answer is not None:
                repo.save_description(
                    session,
                    class_row,
                    "global",
                    None,
                    global_answer.description,
                    "llm",
                    call=call,
                    key_body_parts=global_answer.key_body_parts,
                )
            if joint_texts:
                # One batch for the whole answer: per-joint saves were most of a run's CPU time.
                items = [
                    repo.NewText("joint", self.spec.joint_index(name), text)
                    for name, text in joint_texts.items()
                ]
                repo.save_descriptions(session, class_row, items, "llm", call=call)

"""``kbgen runs``: the jobs that wrote to the knowledge base (``generate``...), newest first."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kbgen.cli.app import app
from kbgen.cli.options import (
    DbOption,
    JsonOption,
    OptionalDatasetOption,
    console,
    load_dataset_spec,
    user_errors,
)
from kbgen.store import db as store_db
from kbgen.store import repo
from kbgen.store.models import Run, utcnow
from kbgen.store.owner import this_host

# Failed classes named in the one-line outcome before "..."; the rest are in --json.
MAX_NAMED_FAILURES = 3
OUTCOME_MAX_CHARS = 120
STATUS_COLOURS = {"ok": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}


def _run_json(run: Run, counts: repo.CallCounts | None) -> dict[str, Any]:
    """A run as ``kbgen runs --json`` prints it (times are naive UTC, like ``kbgen logs``)."""
    duration = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
    return {
        "id": run.id,
        "kind": run.kind,
        "dataset": run.dataset.name if run.dataset else None,
        "status": run.status,
        "started_at": run.started_at.isoformat(timespec="seconds"),
        "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
        "duration_s": round(duration, 3) if duration is not None else None,
        "model": run.model,
        "endpoint_host": run.endpoint_host,
        "pid": run.pid,
        "hostname": run.hostname,
        "calls": counts.calls if counts else 0,
        "ok_calls": counts.ok if counts else 0,
        "params": run.params,
        "summary": run.summary,
    }


def format_duration(seconds: float) -> str:
    """``4.2s``, ``12m05s``, ``3h07m``: short, for a table cell."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def local_time(utc_iso: str) -> str:
    """A naive-UTC ISO time as local ``MM-DD HH:MM``."""
    return datetime.fromisoformat(utc_iso).replace(tzinfo=UTC).astimezone().strftime("%m-%d %H:%M")


def shown_status(row: dict[str, Any], host: str) -> str:
    """The status cell: a ``running`` row of another host may be dead without anyone knowing it."""
    if row["status"] == "running" and row["hostname"] and row["hostname"] != host:
        return f"running? (host {row['hostname']})"
    return row["status"]


def shown_duration(row: dict[str, Any], now: datetime) -> str:
    """Finished: its duration; running: time so far with a ``+``; interrupted: unknown."""
    if row["duration_s"] is not None:
        return format_duration(row["duration_s"])
    if row["status"] == "running":
        return format_duration((now - datetime.fromisoformat(row["started_at"])).total_seconds()) + "+"
    return "-"


def _generate_outcome(summary: dict[str, Any]) -> list[str]:
    done, failed, skipped = (int(summary.get(k) or 0) for k in ("done", "failed", "skipped"))
    parts = [f"{done + skipped}/{done + failed + skipped} classes ok"]
    if skipped:
        parts[0] += f" ({skipped} already complete)"
    if failed:
        names = list(summary.get("failures") or {})
        more = ", ..." if len(names) > MAX_NAMED_FAILURES else ""
        parts.append(f"{failed} failed ({', '.join(names[:MAX_NAMED_FAILURES])}{more})")
    parts.append(f"{summary.get('calls', 0)} calls")
    if summary.get("retried"):
        parts.append(f"{summary['retried']} retried")
    if summary.get("fatal_error"):
        parts.append(f"fatal: {summary['fatal_error']}")
    return parts


def outcome_line(row: dict[str, Any]) -> str:
    """One line about what a run did: class and call counts, or why it stopped."""
    summary = row["summary"] or {}
    # Kinds that make no LLM calls (keyjoints...) get no "0 answers".
    answers = f"{row['ok_calls']} answers" if row["kind"] == "generate" or row["calls"] else None
    if "reason" in summary:
        parts = [str(summary["reason"]), *([f"{answers} stored"] if answers else [])]
    elif row["kind"] == "generate" and "done" in summary:
        parts = _generate_outcome(summary)
    elif row["status"] == "running":
        parts = [f"{answers} so far"] if answers else []
    else:
        parts = [f"{key} {value}" for key, value in summary.items() if isinstance(value, str | int | float)]
    line = ", ".join(parts) or "-"
    return line if len(line) <= OUTCOME_MAX_CHARS else line[: OUTCOME_MAX_CHARS - 3] + "..."


@app.command("runs")
def runs_command(
    count: Annotated[
        int, typer.Option("-n", "--count", help="How many of the latest runs; 0 for all.", min=0)
    ] = 10,
    dataset: OptionalDatasetOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The latest runs (kbgen generate...), newest first: status, duration, model, endpoint, outcome.

    A run left `running` by a process of this host that no longer exists (killed, power cut) is
    marked `interrupted` here; one from another host is shown as `running?`.
    """
    spec = load_dataset_spec(dataset) if dataset else None
    with user_errors(), store_db.session_scope(db) as s:
        stored = repo.get_dataset(s, spec.name) if spec else None
        repo.mark_dead_runs(s)
        runs = repo.list_runs(s, dataset=stored, limit=count or None)
        counts = repo.run_call_counts(s, [r.id for r in runs])
        rows = [_run_json(r, counts.get(r.id)) for r in runs]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    _print_table(rows)


def _print_table(rows: list[dict[str, Any]]) -> None:
    host, now = this_host(), utcnow()
    table = Table(title=f"{len(rows)} runs (newest first)", title_justify="left")
    for column in ("ID", "Kind", "Dataset", "Status", "Started (local)", "Duration", "Model", "Endpoint"):
        table.add_column(column, no_wrap=True)
    table.add_column("Outcome")
    for row in rows:
        status = shown_status(row, host)
        colour = STATUS_COLOURS.get(row["status"], "default") if status == row["status"] else "yellow"
        table.add_row(
            str(row["id"]),
            row["kind"],
            row["dataset"] or "-",
            f"[{colour}]{escape(status)}[/]",
            local_time(row["started_at"]),
            shown_duration(row, now),
            escape(row["model"] or "-"),
            escape(row["endpoint_host"] or "-"),
            escape(outcome_line(row)),
        )
    console.print(table)

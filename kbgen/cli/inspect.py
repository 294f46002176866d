"""``kbgen list|show|edit|set|history|logs``: read and fix the knowledge base by hand."""

from __future__ import annotations

import json
from typing import Annotated, Any

import click
import typer
from rich.markup import escape
from rich.table import Table

from dataspec import DatasetSpec
from kbgen.cli.app import app
from kbgen.cli.options import (
    DatasetOption,
    DbOption,
    JsonOption,
    OptionalDatasetOption,
    console,
    fail,
    load_dataset_spec,
    open_dataset,
    user_errors,
)
from kbgen.keyjoints.storage import key_joints_json
from kbgen.store import db as store_db
from kbgen.store import repo
from kbgen.store.models import Description, LlmCall

ClassArgument = Annotated[
    str, typer.Argument(help="Class id, e.g. A1 (A001 works too) or a01.", show_default=False)
]
JointOption = Annotated[
    str | None,
    typer.Option("--joint", "-j", help="Joint name or alias, e.g. 'right hand'.", show_default=False),
]

STATUSES = ("complete", "partial", "missing")
# Lines starting with this are dropped from an edited text, as `git commit` does.
_COMMENT = "#"


def _joint_position(spec: DatasetSpec, joint: str) -> int:
    with user_errors():
        return spec.joint_index(joint)


@app.command("list")
def list_classes(
    dataset: DatasetOption,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Only classes with this status: complete, partial or missing.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the classes of a dataset: status, joints described, source, last change, key-joint flag."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(
            f"'{status}' is not a status: use {', '.join(STATUSES)}", param_hint="--status"
        )
    spec = open_dataset(dataset, db)
    rows: list[dict[str, Any]] = []
    with user_errors(), store_db.session_scope(db) as s:
        stored = repo.get_dataset(s, spec.name)
        names = repo.joint_names(s, stored)
        for class_row in repo.list_classes(s, stored):
            kb = repo.current_kb(s, class_row, names)
            rows.append(
                {
                    "class_id": kb.class_id,
                    "name": kb.name,
                    "status": kb.status,
                    "joints_described": len(kb.joints),
                    "num_joints": kb.num_joints,
                    "sources": kb.sources,
                    "last_change": kb.updated_at.isoformat(timespec="seconds") if kb.updated_at else None,
                    "key_joints": repo.keyjoint_flag(repo.current_keyjoints(s, class_row)),
                }
            )
    counts = {name: sum(r["status"] == name for r in rows) for name in STATUSES}
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    shown = f"{len(rows)} {status} classes" if status else f"{len(rows)} classes"
    table = Table(title=f"{spec.title}: {shown}", title_justify="left")
    for column in ("Class", "Name", "Status", "Joints", "Source", "Last change", "Key joints"):
        table.add_column(column, no_wrap=column != "Name")
    colours = {"complete": "green", "partial": "yellow", "missing": "red"}
    for row in rows:
        table.add_row(
            row["class_id"],
            escape(row["name"]),
            f"[{colours[row['status']]}]{row['status']}[/]",
            f"{row['joints_described']}/{row['num_joints']}",
            "+".join(row["sources"]) or "-",
            (row["last_change"] or "-").replace("T", " ")[:16],
            row["key_joints"],
        )
    console.print(table)
    console.print(f"{counts['complete']} complete, {counts['partial']} partial, {counts['missing']} missing")


@app.command()
def show(
    class_id: ClassArgument, dataset: DatasetOption, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Show the current texts of a class: global description, key body parts and every joint's motion."""
    spec = open_dataset(dataset, db)
    with user_errors(), store_db.session_scope(db) as s:
        class_row = repo.get_class(s, spec.name, class_id)
        kb = repo.current_kb(s, class_row)
        distribution = repo.current_keyjoints(s, class_row)
        flag = repo.keyjoint_flag(distribution)
        key_joints = key_joints_json(spec, distribution)
    if as_json:
        # "key_joints": {joint name: k_gt weight}, null until `kbgen keyjoints` has run.
        typer.echo(json.dumps({**kb.to_json(), "key_joints": key_joints}, indent=2, ensure_ascii=False))
        return
    console.print(f"[bold]{kb.class_id}[/] {escape(kb.name)}  ({spec.name}, {kb.status}, key joints: {flag})")
    console.print("\n[bold]Global[/]")
    console.print(escape(kb.global_text) if kb.global_text else "[red](missing)[/]")
    console.print(f"[bold]Key body parts:[/] {escape(', '.join(kb.key_body_parts)) or '-'}\n")
    table = Table(show_header=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("Joint", no_wrap=True)
    table.add_column("Motion")
    for joint in spec.joints:
        text = kb.joints.get(joint.name)
        table.add_row(str(joint.index), joint.name, escape(text) if text else "[red](missing)[/]")
    console.print(table)


def _editor_text(current: str, what: str) -> str:
    return (
        f"{current}\n\n"
        f"{_COMMENT} Editing {what}.\n"
        f"{_COMMENT} Lines starting with '{_COMMENT}' are ignored.\n"
        f"{_COMMENT} An empty or unchanged text saves nothing.\n"
    )


def _strip_comments(edited: str) -> str:
    kept = [line for line in edited.splitlines() if not line.lstrip().startswith(_COMMENT)]
    return "\n".join(kept).strip()


@app.command()
def edit(
    class_id: ClassArgument,
    dataset: DatasetOption,
    joint: JointOption = None,
    db: DbOption = None,
) -> None:
    """Edit the global text (or one joint's text with --joint) in $EDITOR; saves a new version.

    Like `git commit`: closing the editor with an empty or unchanged text saves nothing.
    """
    spec = open_dataset(dataset, db)
    position = _joint_position(spec, joint) if joint else None
    kind = "joint" if position is not None else "global"
    with user_errors(), store_db.session_scope(db) as s:
        class_row = repo.get_class(s, spec.name, class_id)
        current = repo.current_description(s, class_row, kind, position)
        label = f"{class_row.class_id} ({class_row.name}), dataset {spec.name}"
    what = (
        f"the motion of the {spec.joints[position].name} in {label}"
        if position is not None
        else f"the global description of {label}"
    )
    before = current.text if current is not None else ""
    try:
        edited = click.edit(_editor_text(before, what), extension=".txt", require_save=True)
    except click.ClickException as exc:
        fail(f"{exc.format_message()}: set $EDITOR to your editor, or use `kbgen set`")
    text = _strip_comments(edited) if edited is not None else ""
    if not text:
        console.print("Empty text: nothing saved.")
        return
    if text == before:
        console.print("Unchanged: nothing saved.")
        return
    _save(spec, class_id, kind, position, text, db, key_body_parts=None, provenance={"via": "kbgen edit"})


def _save(
    spec: DatasetSpec,
    class_id: str,
    kind: str,
    position: int | None,
    text: str,
    db: str | None,
    *,
    key_body_parts: list[str] | None,
    provenance: dict[str, Any],
) -> None:
    with user_errors(), store_db.session_scope(db) as s:
        class_row = repo.get_class(s, spec.name, class_id)
        row = repo.save_description(
            s, class_row, kind, position, text, "edit", provenance=provenance, key_body_parts=key_body_parts
        )
        target = "global text" if position is None else f"'{spec.joints[position].name}' text"
        if row is None:
            console.print(f"{class_row.class_id}: the {target} is unchanged; nothing saved.")
        else:
            console.print(f"{class_row.class_id}: saved the {target} as version {row.version}.")


@app.command("set")
def set_text(
    class_id: ClassArgument,
    dataset: DatasetOption,
    global_text: Annotated[
        str | None, typer.Option("--global", help="New global description of the class.", show_default=False)
    ] = None,
    joint: JointOption = None,
    text: Annotated[
        str | None, typer.Option("--text", help="New text for --joint.", show_default=False)
    ] = None,
    key_parts: Annotated[
        str | None,
        typer.Option(
            "--key-parts", help="Comma-separated key body parts (with --global).", show_default=False
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Set a text without an editor: --global TEXT, or --joint NAME --text TEXT. Saves a new version."""
    if (global_text is None) == (joint is None):
        raise typer.BadParameter("give either --global TEXT or --joint NAME --text TEXT")
    if joint is not None and text is None:
        raise typer.BadParameter("--joint needs --text TEXT")
    if joint is None and text is not None:
        raise typer.BadParameter("--text goes with --joint NAME; for the global text use --global TEXT")
    if key_parts is not None and global_text is None:
        raise typer.BadParameter("--key-parts goes with --global")
    spec = open_dataset(dataset, db)
    position = _joint_position(spec, joint) if joint else None
    new_text = (global_text if position is None else text) or ""
    parts = [p.strip() for p in key_parts.split(",") if p.strip()] if key_parts is not None else None
    kind = "global" if position is None else "joint"
    _save(spec, class_id, kind, position, new_text, db, key_body_parts=parts, provenance={"via": "kbgen set"})


def _description_json(row: Description, joint_names: list[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "joint": joint_names[row.joint_position] if row.joint_position is not None else None,
        "version": row.version,
        "current": row.is_current,
        "source": row.source,
        "call_id": row.call_id,
        "provenance": row.provenance,
        "created_at": row.created_at.isoformat(timespec="seconds"),
        "text": row.text,
        "key_body_parts": row.key_body_parts,
    }


@app.command()
def history(
    class_id: ClassArgument,
    dataset: DatasetOption,
    joint: JointOption = None,
    global_only: Annotated[bool, typer.Option("--global", help="Only the global text.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every version of a class's texts: source (llm/edit/import), producing call, which one is current."""
    spec = open_dataset(dataset, db)
    position = _joint_position(spec, joint) if joint else None
    kind = "joint" if position is not None else ("global" if global_only else None)
    with user_errors(), store_db.session_scope(db) as s:
        class_row = repo.get_class(s, spec.name, class_id)
        rows = [
            _description_json(r, spec.joint_names)
            for r in repo.history(s, class_row, kind=kind, joint_position=position)
        ]
        title = f"{class_row.class_id} {class_row.name}: {len(rows)} versions"
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=escape(title), title_justify="left", expand=True)
    for column in ("Text of", "v", "Now", "Source", "Call", "Created"):
        table.add_column(column, no_wrap=True)
    table.add_column("Text")
    for row in rows:
        table.add_row(
            row["joint"] or "global",
            str(row["version"]),
            "[green]*[/]" if row["current"] else "",
            row["source"],
            str(row["call_id"] or "-"),
            row["created_at"].replace("T", " ")[:16],
            escape(row["text"]),
        )
    console.print(table)


def _call_json(call: LlmCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "created_at": call.created_at.isoformat(timespec="seconds"),
        "dataset": call.class_row.dataset.name,
        "class_id": call.class_row.class_id,
        "kind": call.kind,
        "status": call.status,
        "attempt": call.attempt,
        "run_id": call.run_id,
        "model": call.model,
        "endpoint_host": call.endpoint_host,
        "template": call.template.name if call.template else None,
        "template_sha256": call.template.sha256 if call.template else None,
        "params": call.params,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "latency_s": call.latency_s,
        "error": call.error,
        "rendered_prompt": call.rendered_prompt,
        "raw_answer": call.raw_answer,
    }


@app.command()
def logs(
    count: Annotated[
        int, typer.Option("-n", "--count", help="How many of the latest calls; 0 for all.", min=0)
    ] = 10,
    dataset: OptionalDatasetOption = None,
    class_id: Annotated[
        str | None, typer.Option("--class", "-c", help="Only calls about this class id.", show_default=False)
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only failed calls (invalid answer or error).")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The latest LLM calls, newest first: prompt template, model, status, tokens, latency, errors.

    --json prints every field, with the rendered prompt and the raw answer.
    """
    spec = load_dataset_spec(dataset) if dataset else None
    with user_errors(), store_db.session_scope(db) as s:
        stored = repo.get_dataset(s, spec.name) if spec else None
        calls = repo.list_calls(s, dataset=stored, class_id=class_id, failed_only=failed, limit=count or None)
        rows = [_call_json(c) for c in calls]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{len(rows)} LLM calls (newest first)", title_justify="left")
    for column in ("ID", "Time (UTC)", "Class", "Kind", "Model", "Status", "Try", "Tokens", "Latency"):
        table.add_column(column, overflow="fold")
    colours = {"ok": "green", "invalid": "yellow", "error": "red"}
    for row in rows:
        tokens = f"{row['prompt_tokens'] or 0}+{row['completion_tokens'] or 0}"
        latency = f"{row['latency_s']:.2f}s" if row["latency_s"] is not None else "-"
        table.add_row(
            str(row["id"]),
            row["created_at"].replace("T", " ")[5:16],
            f"{row['dataset']}/{row['class_id']}",
            row["kind"],
            escape(row["model"] or "-"),
            f"[{colours[row['status']]}]{row['status']}[/]",
            str(row["attempt"]),
            tokens,
            latency,
        )
    console.print(table)
    # Errors go below the table, whole lines: they are what people read logs for.
    for row in rows:
        if row["error"]:
            console.print(f"[bold]#{row['id']}[/] {escape(row['error'][:500])}", soft_wrap=True)

"""``kbgen export`` / ``kbgen import``: the knowledge base as a JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbgen.cli.app import app
from kbgen.cli.options import DatasetOption, DbOption, console, fail, open_dataset, user_errors
from kbgen.store import db as store_db
from kbgen.store import kbfile


@app.command("export")
def export_command(
    dataset: DatasetOption,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.", show_default=False)
    ] = None,
    db: DbOption = None,
) -> None:
    """Export the current texts of a dataset as JSON (classes with any text; no API keys, no logs)."""
    spec = open_dataset(dataset, db)
    with user_errors(), store_db.session_scope(db) as s:
        document = kbfile.export_kb(s, spec)
    text = kbfile.dumps(document)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output} ({exc.strerror or exc.__class__.__name__}): choose a writable --output")
    console.print(f"Exported {len(document['classes'])} classes of {spec.name} to {output}")


@app.command("import")
def import_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="A file written by `kbgen export` (a folder for --format gap).", show_default=False
        ),
    ],
    dataset: DatasetOption,
    db: DbOption = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="json (a `kbgen export` file) or gap (the GAP paper's text/ folder)."),
    ] = "json",
) -> None:
    """Import texts from a JSON file: checks it all first, then saves changed texts as new versions.

    Texts equal to the current ones are skipped; an invalid file stores nothing.
    """
    if fmt not in ("json", "gap"):
        raise typer.BadParameter(f"unknown format '{fmt}': use json or gap", param_hint="--format")
    spec = open_dataset(dataset, db)
    if fmt == "gap":
        from kbgen.cli.gap import import_gap_folder

        import_gap_folder(spec, path, db)
        return
    with user_errors(), store_db.session_scope(db) as s:
        report = kbfile.import_kb(s, spec, path)
    console.print(
        f"Imported {path}: {report.classes} classes, {report.saved} texts saved, {report.unchanged} unchanged"
    )

"""The ``gap`` format of ``kbgen import``: the GAP paper's published texts (see kbgen.importers.gap)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from dataspec import DatasetSpec
from kbgen.cli.options import console, err_console, user_errors
from kbgen.store import db as store_db


def import_gap_folder(spec: DatasetSpec, directory: Path, db: str | None) -> None:
    """Import a GAP ``text/`` folder into ``spec``'s dataset in one transaction and print the report."""
    from kbgen.importers.gap import import_gap

    status = console.status(f"importing GAP texts from {directory}")
    with status, user_errors(), store_db.session_scope(db) as s:
        report = import_gap(s, spec, directory)
    how = ", ".join(f"{n} by {k}" for k, n in sorted(report.matched_by.items())) or "none"
    files = f"{report.prefix}*" if report.prefix else "unprefixed files"
    console.print(
        f"Imported GAP texts ({files}) into {spec.name}: {report.classes} classes, "
        f"{report.stored} texts saved, {report.unchanged} unchanged; labels matched {how}",
        soft_wrap=True,
    )
    for label, cid, name in report.renamed:
        console.print(f"  GAP label '{escape(label)}' -> {cid} '{escape(name)}'", highlight=False)
    for problem in report.malformed:
        err_console.print(f"[yellow]skipped:[/] {escape(problem)}", highlight=False)
    if report.unmatched_labels:
        err_console.print(
            f"[yellow]{len(report.unmatched_labels)} GAP labels match no class of {spec.name}:[/] "
            + escape(", ".join(report.unmatched_labels)),
            highlight=False,
        )
    if report.classes_without_text:
        err_console.print(
            f"[yellow]{len(report.classes_without_text)} classes got no text:[/] "
            + ", ".join(report.classes_without_text),
            highlight=False,
        )

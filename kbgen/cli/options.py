"""Options and helpers shared by every kbgen command module.

Usage in a command module::

    from kbgen.cli.app import app
    from kbgen.cli.options import DatasetOption, DbOption, fail, open_dataset, user_errors

    @app.command()
    def mycommand(dataset: DatasetOption, db: DbOption = None) -> None:
        \"\"\"One-line help.\"\"\"
        with user_errors():
            spec = open_dataset(dataset, db)          # loads the spec, migrates once, ensures rows
            with session_scope(db) as s: ...

:func:`user_errors` turns :class:`~dataspec.SpecError` and
:class:`~kbgen.store.StoreError` into one red line and exit status 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dataspec import DatasetSpec, SpecError, load_spec

DatasetOption = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        envvar="KBGEN_DATASET",
        help="Dataset spec name (data/datasets/NAME.yaml) or path to a spec YAML. Env: KBGEN_DATASET.",
        show_default=False,
    ),
]
OptionalDatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        envvar="KBGEN_DATASET",
        help="Only this dataset (spec name or path). Env: KBGEN_DATASET.",
        show_default=False,
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="KBGEN_DB",
        help="Database: a SQLAlchemy URL or a SQLite file. Default: $KBGEN_HOME/kbgen.db. Env: KBGEN_DB.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

console = Console()
err_console = Console(stderr=True)


def counted_progress(on: Console) -> Progress:
    """A transient bar for a job of known size: description, bar, done/total, time remaining."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=on,
        transient=True,
    )


def fail(message: str) -> NoReturn:
    """Print one red line on stderr and exit with status 1."""
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors users can fix (bad spec, missing class, database problem) into :func:`fail`."""
    from kbgen.store.errors import StoreError

    try:
        yield
    except (SpecError, StoreError) as exc:
        fail(str(exc))


def load_dataset_spec(name: str) -> DatasetSpec:
    """The spec named by ``--dataset``; a missing or malformed spec ends the command with one line."""
    try:
        return load_spec(name)
    except SpecError as exc:
        fail(str(exc))


def open_dataset(name: str, db: str | None) -> DatasetSpec:
    """Load the spec, open (and migrate once) the database, and make sure the dataset rows exist."""
    from kbgen.store import db as store_db
    from kbgen.store import repo

    spec = load_dataset_spec(name)
    with user_errors(), store_db.session_scope(db) as session:
        repo.ensure_dataset(session, spec)
    return spec

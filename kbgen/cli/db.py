"""``kbgen db upgrade|current|path``: where the database is and which schema revision it has."""

from __future__ import annotations

import typer
from sqlalchemy.engine import make_url

from kbgen.cli.app import app
from kbgen.cli.options import DbOption, user_errors
from kbgen.home import database_url
from kbgen.store import db as store_db
from kbgen.store.migrate import current_revision, head_revision, known_revision

db_app = typer.Typer(
    name="db", help="The kbgen database: location and schema migrations.", no_args_is_help=True
)
app.add_typer(db_app)


@db_app.command()
def path(db: DbOption = None) -> None:
    """Print the database location (a file path for SQLite, else the URL without password)."""
    url = make_url(database_url(db))
    typer.echo(
        url.database if url.get_backend_name() == "sqlite" and url.database else url.render_as_string()
    )


@db_app.command()
def current(db: DbOption = None) -> None:
    """Print the schema revision of the database and the newest one this kbgen knows (no changes)."""
    with user_errors():
        engine = store_db.get_engine(db, upgrade=False)
        try:
            revision = current_revision(engine)
        finally:
            engine.dispose()
        head = head_revision()
    if revision is None:
        typer.echo(f"blank (no schema yet; newest is {head}): `kbgen db upgrade` or any command creates it")
    elif revision == head:
        typer.echo(f"{revision} (head)")
    elif not known_revision(revision):
        typer.echo(f"{revision} (unknown to this kbgen, whose newest is {head}: upgrade kbgen)")
    else:
        typer.echo(f"{revision} (newest is {head}: run `kbgen db upgrade`)")


@db_app.command()
def upgrade(db: DbOption = None) -> None:
    """Upgrade the schema to the newest revision (every command also does this once at start)."""
    with user_errors():
        engine = store_db.get_engine(db)
        revision = current_revision(engine)
    typer.echo(f"{make_url(database_url(db))}: at revision {revision} (head)")

"""Helpers shared by the store and CLI tests: a fresh dataset in the per-test database, kbgen in process."""

from __future__ import annotations

from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from dataspec import load_spec
from kbgen.cli.app import _load_commands, app
from kbgen.store import db, repo
from kbgen.store.models import Description

_runner = CliRunner()


def kbgen(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``kbgen args...`` in this process with every command registered; 200 columns, so no line wraps."""
    _load_commands()
    return _runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def count_descriptions(url: str | None = None) -> int:
    """How many description rows (all versions) the database holds."""
    with db.session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(Description))


def seed_dataset(name: str = "ntu120") -> None:
    """Create the dataset rows of a shipped spec in the current (per-test) database."""
    with db.session_scope() as s:
        repo.ensure_dataset(s, load_spec(name))


def fill_class(dataset: str, class_id: str, *, prefix: str = "", source: str = "llm") -> None:
    """Give a class a global text and a text for every joint."""
    spec = load_spec(dataset)
    with db.session_scope() as s:
        row = repo.get_class(s, dataset, class_id)
        texts = [repo.NewText("global", None, f"{prefix}global of {class_id}", ["arm", "hand"])]
        texts += [
            repo.NewText("joint", j.index, f"{prefix}{j.name} moves in {class_id}") for j in spec.joints
        ]
        repo.save_descriptions(s, row, texts, source)

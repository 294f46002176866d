"""The Typer application object and the entry point of ``trainer``.

Command modules import :data:`app` (or add a sub-Typer) and register their commands; :func:`main`
imports them. Heavy imports (torch) stay inside command bodies so ``trainer --help`` is fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="trainer",
    help="Prepare skeleton datasets, train encoders with CrossGLG guidance, evaluate one-shot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that register commands on `app`. Add a module here when you add a command group.
COMMAND_MODULES: list[str] = ["trainer.cli.run", "trainer.cli.models", "trainer.cli.data"]


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def main() -> None:
    """Console-script entry point."""
    _load_commands()
    app()

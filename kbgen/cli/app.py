"""The Typer application object and the entry point.

Command modules import :data:`app` and register their commands; :func:`main` imports them all
(heavy imports stay inside command bodies, so ``kbgen --help`` stays fast). Commands turn user
errors into one red line with :func:`kbgen.cli.options.fail` and :func:`kbgen.cli.options.user_errors`.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="kbgen",
    help="Build, inspect and fix LLM knowledge bases about action classes; write knowledge packs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that register commands on `app`. Add a module here when you add a command group.
COMMAND_MODULES: list[str] = [
    "kbgen.cli.embed",
    "kbgen.cli.generate",
    "kbgen.cli.inspect",
    "kbgen.cli.transfer",
    "kbgen.cli.db",
    "kbgen.cli.keyjoints",
    "kbgen.cli.runs",
]


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def main() -> None:
    """Console-script entry point."""
    _load_commands()
    app()

"""One-line user errors of the ``trainer`` commands: a red line on stderr, exit status 1."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

err_console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` in red on stderr (never wrapped, so tests can match it) and exit 1."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)

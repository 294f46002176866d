"""Every command of ``kbgen`` and ``trainer``, found by walking the apps: help text, options, README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kbgen.cli.app import _load_commands as load_kbgen_commands
from kbgen.cli.app import app as kbgen_app
from trainer.cli.app import _load_commands as load_trainer_commands
from trainer.cli.app import app as trainer_app

load_kbgen_commands()
load_trainer_commands()
README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
APPS = {"kbgen": kbgen_app, "trainer": trainer_app}


def _commands(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """``(path, command)`` of every command below ``command`` (groups included), depth first."""
    found = []
    for name, sub in getattr(command, "commands", {}).items():
        found.append(([*path, name], sub))
        found += _commands(sub, [*path, name])
    return found


ALL = [
    (program, path, cmd)
    for program, app in APPS.items()
    for path, cmd in _commands(typer.main.get_command(app), [])
]


def test_the_walk_finds_the_known_commands() -> None:
    names = {f"{program} {' '.join(path)}" for program, path, _ in ALL}
    assert {"kbgen generate", "kbgen db upgrade", "trainer run", "trainer data split"} <= names


@pytest.mark.parametrize(("program", "path", "command"), ALL, ids=[f"{p} {' '.join(c)}" for p, c, _ in ALL])
def test_every_command_has_help_text_and_help_on_each_parameter(
    program: str, path: list[str], command: Any
) -> None:
    assert (command.help or "").strip(), f"`{program} {' '.join(path)}` has no help text: give it a docstring"
    for param in command.params:
        if param.name != "help":
            assert (getattr(param, "help", None) or "").strip(), (
                f"`{program} {' '.join(path)}`: {param.name} has no help"
            )
    result = CliRunner().invoke(APPS[program], [*path, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output, result.output


@pytest.mark.parametrize("program", list(APPS))
def test_every_top_level_command_is_in_the_readme(program: str) -> None:
    top = [path[0] for p, path, _ in ALL if p == program and len(path) == 1]
    missing = [name for name in top if f"{program} {name}" not in README]
    assert not missing, f"README.md does not mention: {', '.join(f'{program} {n}' for n in missing)}"

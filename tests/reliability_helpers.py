"""Helpers shared by the reliability tests: run the real CLIs as child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The console scripts, started through this interpreter (works without the venv's bin/ on PATH).
KBGEN = [sys.executable, "-c", "from kbgen.cli import main; main()"]
TRAINER = [sys.executable, "-c", "from trainer.cli import main; main()"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a child CLI: this one (KBGEN_HOME of the test) plus ``extra``, wide output."""
    return {**os.environ, "COLUMNS": "200", **extra}


def run_cli(
    command: list[str], *args: str | Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``command args...`` to completion and capture its text output."""
    return subprocess.run(
        [*command, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(**env),
    )


def start_cli(command: list[str], *args: str | Path, **env: str) -> subprocess.Popen[str]:
    """Start ``command args...`` as a child process with text pipes (collect it with :func:`finish_all`)."""
    return subprocess.Popen(
        [*command, *(str(a) for a in args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**env),
    )


def finish_all(procs: list[subprocess.Popen[str]], timeout: float = 300) -> list[tuple[int, str, str]]:
    """Wait for every child: ``(return code, stdout, stderr)`` each, in order."""
    outputs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]

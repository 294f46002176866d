"""Helpers shared by the reliability tests: run the real CLIs as child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dataspec import load_spec

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


def write_pack(path: Path, dataset: str = "nwucla", dim: int = 8, **changes: Any) -> Path:
    """A valid knowledge pack with random embeddings; ``tensors=`` and metadata keywords alter it."""
    from safetensors.numpy import save_file

    from trainer.knowledge.pack import PACK_FORMAT, PACK_FORMAT_VERSION

    spec = load_spec(dataset)
    rng = np.random.default_rng(0)
    c, j = spec.num_classes, spec.num_joints
    key_joints = rng.random((c, j)).astype(np.float32)
    key_joints /= key_joints.sum(1, keepdims=True)
    tensors = {
        "joint_text": rng.standard_normal((c, j, dim)).astype(np.float16),
        "global_text": rng.standard_normal((c, dim)).astype(np.float16),
        "key_joints": key_joints,
        **changes.pop("tensors", {}),
    }
    metadata = {
        "format": PACK_FORMAT,
        "format_version": str(PACK_FORMAT_VERSION),
        "dataset": spec.name,
        "class_ids": json.dumps(spec.class_ids),
        "joint_names": json.dumps(spec.joint_names),
        "encoder": "random",
        "dim": str(dim),
        "kb_revision": "test",
        **changes,
    }
    save_file(tensors, str(path), metadata=metadata)
    return path

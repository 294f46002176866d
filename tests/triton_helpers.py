"""Running code in Triton's interpreter (kernels on the CPU) from a test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

HAS_TRITON = importlib.util.find_spec("triton") is not None
NO_TRITON_REASON = "triton not installed (it comes with CUDA builds of torch)"


def run_in_interpreter(code: str) -> Any:
    """Run ``code`` in a fresh Python with ``TRITON_INTERPRET=1``; its last stdout line, parsed as JSON.

    A fresh process because the interpreter must be on before the kernels are defined.
    """
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

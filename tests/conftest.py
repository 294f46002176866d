"""Shared fixtures. Every test gets its own KBGEN_HOME so nothing touches the user's database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CROSSGLG_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared (or $CROSSGLG_SHARED); tests skip when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path} (set CROSSGLG_SHARED to the shared/ folder)")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("kbgen_home")
    monkeypatch.setenv("KBGEN_HOME", str(home))
    monkeypatch.delenv("KBGEN_DB", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return home


@pytest.fixture(autouse=True)
def _triton_interpret_unchanged() -> Iterator[None]:
    """Undo a test's change of ``TRITON_INTERPRET`` (an import that sets it would otherwise run every
    later test's subprocesses through Triton's interpreter: 2026-12-07, two bench tests took 245 and
    340 s instead of ~15 s each)."""
    before = os.environ.get("TRITON_INTERPRET")
    yield
    if before is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = before

"""Where kbgen keeps its files: ``$KBGEN_HOME`` (default ``~/.kbgen``) and the database URL.

Like ``llm``'s ``user_dir()``: one home directory, overridable by an environment variable, so
tests and parallel users each point it somewhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

DB_FILENAME = "kbgen.db"


def kbgen_home() -> Path:
    """The kbgen home directory (``$KBGEN_HOME`` or ``~/.kbgen``); created on first use."""
    env = os.environ.get("KBGEN_HOME")
    home = Path(env).expanduser() if env else Path.home() / ".kbgen"
    home.mkdir(parents=True, exist_ok=True)
    return home


def database_url(override: str | None = None) -> str:
    """The SQLAlchemy URL of the knowledge-base database.

    Precedence: an explicit URL (``--db``), then ``$KBGEN_DB``, then the SQLite file
    ``$KBGEN_HOME/kbgen.db``. A bare file path is accepted as a SQLite database.
    """
    url = override or os.environ.get("KBGEN_DB")
    if not url:
        return f"sqlite:///{kbgen_home() / DB_FILENAME}"
    if "://" not in url:
        # A plain path is the most common thing people type: treat it as a SQLite file.
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    return url

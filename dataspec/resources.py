"""Where the toolkit's top-level resource folders are: in the checkout, or where a wheel put them.

``data/`` (dataset specs, body-part lexicon), ``prompts/`` and ``migrations/`` sit at the top of the
repository (the layout of DESIGN.md). A checkout or an editable install (``make setup``) reads them in
place. A regular install (``pip install .``, a built wheel) has no checkout beside its packages, so the
wheel carries copies as data files (``[tool.setuptools] data-files`` in pyproject.toml), installed
under ``<prefix>/share/crossglg/``; they are read from there.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

SHARE_SUBDIR = Path("share") / "crossglg"
"""Where pyproject.toml's data-files put the folders, relative to the install prefix."""


def checkout_root() -> Path | None:
    """The repository these packages run from (it has ``pyproject.toml``), or None when installed."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def resource_dir(name: str) -> Path:
    """The folder ``name`` (``data``, ``prompts``, ``migrations``): the checkout's, else the installed
    copy under the environment's prefix or the user base (``pip install --user``). When none exists,
    the environment's path, so an error message names where it was looked for."""
    root = checkout_root()
    if root is not None:
        return root / name
    candidates = [Path(sys.prefix) / SHARE_SUBDIR / name, Path(site.getuserbase()) / SHARE_SUBDIR / name]
    return next((path for path in candidates if path.is_dir()), candidates[0])

"""The reader registry: one reader per raw format, keyed by the spec's ``format``.

A reader turns one raw file into :class:`RawBodies` (every body observation of every frame) and a
sample name into its class id and metadata columns. Denoising and the transformation into actors
are shared (:mod:`trainer.data.denoise`), so a new dataset is a YAML spec plus, if its format is new,
one reader registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dataspec import DatasetSpec


class SkipSample(Exception):
    """A raw file that cannot become a sample; ``code`` groups reasons, ``detail`` is one line."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class RawBodies:
    """All body observations of one file, frames with no body already dropped.

    ``frame[k]`` is the index (among frames that have a body) of observation ``k``, ``body[k]``
    the body number in order of first appearance, ``xyz[k]`` its joints ``[V, 3]``.
    """

    n_frames: int
    frame: np.ndarray
    body: np.ndarray
    xyz: np.ndarray
    empty_frames: int = 0

    @property
    def n_bodies(self) -> int:
        return int(self.body.max()) + 1 if self.body.size else 0


@dataclass(frozen=True)
class Reader:
    """How to list, name and read the raw files of one format."""

    format: str
    suffix: str
    meta_columns: tuple[str, ...]
    parse_name: Callable[[str], tuple[str, dict[str, int]]]
    read: Callable[[bytes, DatasetSpec], RawBodies]
    description: str = ""


_READERS: dict[str, Reader] = {}


def register_reader(reader: Reader) -> Reader:
    """Add a reader to the registry under ``reader.format`` (the spec's ``format`` value)."""
    _READERS[reader.format] = reader
    return reader


def get_reader(fmt: str) -> Reader:
    """The reader for a spec ``format``; one clear error when none is registered."""
    _load_builtin_readers()
    try:
        return _READERS[fmt]
    except KeyError:
        known = ", ".join(sorted(_READERS)) or "none"
        raise SkipSample(
            "no_reader",
            f"no reader for format '{fmt}' (known formats: {known}); register one in trainer/data",
        ) from None


def list_formats() -> list[str]:
    """Formats with a registered reader."""
    _load_builtin_readers()
    return sorted(_READERS)


def _load_builtin_readers() -> None:
    # Imported for their registration side effect; late to avoid an import cycle.
    from trainer.data import ntu_skeleton, nwucla  # noqa: F401

"""Reader of NW-UCLA ``all_sqe`` json files: ``{"file_name": ..., "skeletons": [T][20][3]}``.

One tracked body per file; class, subject, episode and view come from the name ``a01_s02_e03_v01``.
"""

from __future__ import annotations

import json
import re

import numpy as np

from dataspec import DatasetSpec
from trainer.data.readers import RawBodies, Reader, SkipSample, register_reader

_NAME = re.compile(r"^a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})$")


def parse_nwucla_name(stem: str) -> tuple[str, dict[str, int]]:
    """``a05_s02_e01_v03`` → (``a05``, subject/episode/view)."""
    m = _NAME.match(stem)
    if not m:
        raise SkipSample("bad_name", f"'{stem}' is not an NW-UCLA sample name like a01_s01_e00_v01")
    action, subject, episode, view = (int(g) for g in m.groups())
    return f"a{action:02d}", {"subject": subject, "episode": episode, "view": view}


def read_nwucla_json(data: bytes, spec: DatasetSpec) -> RawBodies:
    """Parse one json sample; frames whose joints are all zero count as frames without a body."""
    if not data.strip():
        raise SkipSample("empty", "the file is empty")
    try:
        doc = json.loads(data)
        xyz = np.asarray(doc["skeletons"], dtype=np.float32)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SkipSample("not_json", "not a json object with a 'skeletons' [T][joints][3] array") from None
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise SkipSample("bad_shape", f"'skeletons' has shape {xyz.shape}, expected [T][joints][3]")
    if xyz.shape[1] != spec.num_joints:
        raise SkipSample(
            "bad_joint_count", f"{xyz.shape[1]} joints per frame, {spec.name} has {spec.num_joints}"
        )
    if not np.isfinite(xyz).all():
        raise SkipSample("non_finite", "joint coordinates contain NaN or infinity")
    present = np.any(xyz != 0, axis=(1, 2))
    if not present.any():
        raise SkipSample("no_body", f"none of the {len(xyz)} frames has a body")
    kept = xyz[present]
    return RawBodies(
        n_frames=len(kept),
        frame=np.arange(len(kept), dtype=np.int32),
        body=np.zeros(len(kept), dtype=np.int32),
        xyz=kept,
        empty_frames=int((~present).sum()),
    )


NWUCLA_READER = register_reader(
    Reader(
        format="nwucla_json",
        suffix=".json",
        meta_columns=("subject", "episode", "view"),
        parse_name=parse_nwucla_name,
        read=read_nwucla_json,
        description="NW-UCLA all_sqe json files",
    )
)

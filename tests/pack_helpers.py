"""A knowledge pack with random embeddings, written straight to safetensors for trainer tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dataspec import load_spec


def write_random_pack(
    path: Path, dataset: str = "nwucla", dim: int = 8, seed: int = 0, **changes: Any
) -> Path:
    """A valid pack of ``dataset`` (random joint/global embeddings and k_gt rows) at ``path``.

    ``tensors=`` replaces or adds tensors; every other keyword replaces a metadata entry, so a test
    can write a pack that is wrong in exactly one way.
    """
    from safetensors.numpy import save_file

    from trainer.knowledge.pack import PACK_FORMAT, PACK_FORMAT_VERSION

    spec = load_spec(dataset)
    rng = np.random.default_rng(seed)
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

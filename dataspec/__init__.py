"""Dataset specs: the one joint/class/protocol table shared by kbgen and the trainer.

A spec is a YAML file in ``data/datasets/<name>.yaml`` (or any path). This module depends on
PyYAML only (no torch, pydantic or sqlalchemy) so that both packages, and the GPU machines,
can read it.
"""

from dataspec.spec import (
    ActionClass,
    DatasetSpec,
    Joint,
    OneShotProtocol,
    SpecError,
    data_dir,
    list_specs,
    load_spec,
    normalize_class_id,
)

__all__ = [
    "ActionClass",
    "DatasetSpec",
    "Joint",
    "OneShotProtocol",
    "SpecError",
    "data_dir",
    "list_specs",
    "load_spec",
    "normalize_class_id",
]

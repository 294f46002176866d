"""Build what a run needs from its config: the store and split, the model, the knowledge tables, feeders.

This is the one place where the engine meets the data, models and pack modules, so training and
evaluation build the same model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import Config


class RunSetupError(ValueError):
    """A run cannot start (missing store or pack, bad subset); the message says what to do."""


@dataclass
class RunData:
    """The prepared store, the one-shot split and the map from store labels to training labels."""

    store: Any
    split: Any
    train_class_ids: list[str]
    novel_class_ids: list[str]
    # store label -> training label 0..K-1 (-1 for classes not trained on)
    train_label_of: torch.Tensor


def open_run_data(config: Config) -> RunData:
    """Open the prepared store named by the config and take the one-shot split."""
    from trainer.data.protocol import oneshot_split
    from trainer.data.store import PreparedStore

    path = Path(config.data.store)
    if not path.exists():
        raise RunSetupError(
            f"prepared store {path} does not exist: run `trainer prepare` for {config.data.dataset} "
            "or pass --set data.store=PATH"
        )
    store = PreparedStore.open(path)
    if store.spec.name != config.data.dataset:
        raise RunSetupError(
            f"store {path} holds dataset '{store.spec.name}', the config says '{config.data.dataset}': "
            "fix data.store or data.dataset"
        )
    split = oneshot_split(store, config.data.train_classes)
    class_ids = list(store.class_ids)
    remap = torch.full((len(class_ids),), -1, dtype=torch.long)
    for label, cid in enumerate(split.train_class_ids):
        remap[class_ids.index(cid)] = label
    return RunData(store, split, list(split.train_class_ids), list(split.novel_class_ids), remap)


@dataclass
class KnowledgeTables:
    """Pack rows in training-label order, on the device: ``joint_text [K, J, D]``, ``key_joints [K, J]``."""

    joint_text: torch.Tensor
    key_joints: torch.Tensor
    revision: str

    @property
    def dim(self) -> int:
        return int(self.joint_text.shape[-1])


def load_knowledge(config: Config, spec: Any, class_ids: list[str], device: torch.device) -> KnowledgeTables:
    """The pack's joint texts and k_gt for the training classes (errors name the missing file/class)."""
    from trainer.knowledge.pack import load_pack

    if not config.knowledge.pack:
        raise RunSetupError(
            "CrossGLG modules are on but knowledge.pack is not set: pass --set knowledge.pack=PATH "
            "(written by `kbgen embed`) or turn the modules off"
        )
    pack = load_pack(config.knowledge.pack, spec, class_ids)
    return KnowledgeTables(
        joint_text=pack.joint_text.to(device=device, dtype=torch.float32),
        key_joints=pack.key_joints.to(device=device, dtype=torch.float32),
        revision=pack.kb_revision,
    )


def model_arguments(config: Config, spec: Any, num_classes: int, text_dim: int | None) -> dict[str, Any]:
    """Keyword arguments of the CrossGLG model (saved in checkpoints so evaluation needs no pack)."""
    args: dict[str, Any] = {
        "encoder": config.model.encoder,
        "num_classes": num_classes,
        "in_channels": 3 * len(config.data.modalities),
        "num_persons": spec.persons,
        "g2l": config.model.crossglg.g2l,
        "l2g": config.model.crossglg.l2g,
        "n_pre": config.model.crossglg.n_pre,
        **config.model.options,
    }
    if text_dim is not None:
        args["text_dim"] = text_dim
    return args


def build_model(spec: Any, args: dict[str, Any]) -> nn.Module:
    """The CrossGLG model (both modules off = the plain encoder) from :func:`model_arguments`."""
    from trainer.models.crossglg import CrossGLG

    try:
        return CrossGLG(spec=spec, **args)
    except (TypeError, ValueError) as exc:
        # model.options goes straight to the constructors: a wrong name or value ends up here.
        raise RunSetupError(
            f"cannot build the model from model.* / model.options ({exc}): fix the option "
            f"(e.g. --set 'model.options={{base_channels: 32}}', a space after each colon)"
        ) from None


def make_feeder(config: Config, data: RunData, indices: Any, device: torch.device, train: bool) -> Any:
    """A GPU feeder over ``indices`` of the store (augmented and shuffled when ``train``)."""
    from trainer.data.feeder import GPUFeeder

    return GPUFeeder(
        data.store,
        indices,
        device=device,
        window=config.data.window,
        train=train,
        rotation=config.data.rotation,
        modalities=tuple(config.data.modalities),
        seed=config.seed,
    )

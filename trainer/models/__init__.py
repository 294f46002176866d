"""Skeleton encoders (InfoGCN, ST-GCN), the CrossGLG modules, losses and checkpoint import."""

from trainer.models.crossglg import CrossGLG
from trainer.models.losses import crossglg_loss
from trainer.models.registry import create_model, list_models, register_model

__all__ = ["CrossGLG", "create_model", "crossglg_loss", "list_models", "register_model"]

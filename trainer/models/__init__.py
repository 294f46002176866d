"""Skeleton encoders (InfoGCN, ST-GCN), the CrossGLG modules, losses and checkpoint import."""

from trainer.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]

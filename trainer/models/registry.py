"""A tiny typed model registry (timm style): ``@register_model`` and ``create_model(name, **cfg)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[F], F]:
    """Register a model factory under ``name`` (raises if the name is taken)."""

    def decorate(factory: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model '{name}' is registered twice")
        _MODELS[name] = factory
        return factory

    return decorate


def _ensure_builtin_models() -> None:
    # Importing the encoder modules runs their @register_model decorators.
    from trainer.models import infogcn, stgcn  # noqa: F401


def list_models() -> list[str]:
    """Names of the registered encoders, sorted."""
    _ensure_builtin_models()
    return sorted(_MODELS)


def create_model(name: str, **cfg: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword configuration ``cfg``."""
    _ensure_builtin_models()
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}': choose one of {', '.join(sorted(_MODELS))}") from None
    return factory(**cfg)

"""A tiny typed model registry (timm style): ``@register_model`` and ``create_model(name, **cfg)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

if TYPE_CHECKING:
    from dataspec import DatasetSpec

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


def register_encoder(name: str, encoder_cls: Callable[..., nn.Module]) -> None:
    """Register an encoder class built as ``encoder_cls(num_classes, graph, **cfg)`` under ``name``.

    The registered factory takes a dataset spec (or ``num_joints`` + ``edges``) instead of a graph
    and, given a spec, defaults ``num_persons`` to the spec's.
    """

    def factory(
        num_classes: int,
        spec: DatasetSpec | None = None,
        num_joints: int | None = None,
        edges: Sequence[Sequence[int]] | None = None,
        **cfg: Any,
    ) -> nn.Module:
        from trainer.models.graph import SkeletonGraph

        if spec is not None:
            cfg.setdefault("num_persons", spec.persons)
        return encoder_cls(num_classes, SkeletonGraph.coerce(spec, num_joints, edges), **cfg)

    factory.__name__ = name
    factory.__doc__ = f"{getattr(encoder_cls, '__name__', name)} for a dataset spec (or num_joints + edges)."
    register_model(name)(factory)


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

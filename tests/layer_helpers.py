"""Comparing two versions of one layer in tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def assert_same_training_gradients(layers: tuple[nn.Module, nn.Module], x: Tensor, *args: Tensor) -> None:
    """Both layers in training mode give the same gradients of ``sum(layer(x, *args)²)`` for the input
    and every parameter (same parameter order)."""
    grads = []
    for layer in layers:
        layer.train()
        xi = x.clone().requires_grad_()
        layer(xi, *args).square().sum().backward()
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)

"""What the Triton kernels of the models share: the optional import and when a kernel applies.

Triton comes with CUDA builds of PyTorch; CPU installs have none (or have it only for tests, where
``TRITON_INTERPRET=1`` runs the kernels on the CPU through Triton's interpreter). Callers use the
kernels only when :func:`triton_applies` says so and fall back to plain PyTorch otherwise.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

HALF_DTYPES = (torch.bfloat16, torch.float16)
# Triton's interpreter runs kernels on CPU tensors; it must be set before the kernels are defined.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def triton_applies(*tensors: Tensor) -> bool:
    """Triton is importable and every tensor is a bf16/fp16 CUDA tensor (any device when interpreting)."""
    return triton is not None and all((t.is_cuda or INTERPRET) and t.dtype in HALF_DTYPES for t in tensors)


def relative_error(x: Tensor, ref: Tensor) -> float:
    """``‖x − ref‖ / ‖ref‖`` in float64 on the CPU (the kernel checks' measure)."""
    ref = ref.detach().double().cpu()
    return float((x.detach().double().cpu() - ref).norm() / ref.norm())

"""The per-frame SA-GC product: the torch.bmm fallback, the Triton kernels (in Triton's interpreter)."""

from __future__ import annotations

import pytest
import torch
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from trainer.models.frame_matmul import frame_matmul, kernels_available


def test_cpu_fallback_is_bmm_forward_and_backward() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 25, 75, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 75, 40, generator=g, dtype=torch.float64, requires_grad=True)
    dz = torch.randn(5, 25, 40, generator=g, dtype=torch.float64)
    frame_matmul(a, y).backward(dz)
    a2, y2 = a.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    torch.bmm(a2, y2).backward(dz)
    assert torch.allclose(a.grad, a2.grad) and torch.allclose(y.grad, y2.grad)
    assert not kernels_available(a.detach(), y.detach())  # fp32/fp64 CPU tensors: never the kernels


def test_shape_mismatch_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\[G, M, K\] @ \[G, K, N\]"):
        frame_matmul(torch.zeros(2, 25, 75), torch.zeros(2, 74, 8))


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
# topology product (K = 75): one tile, a masked tail, several column blocks; attention logits
# (K = d = 8 or 32, N = 25 joints)
@pytest.mark.parametrize("k, n", [(75, 64), (75, 80), (75, 200), (8, 25), (32, 25)])
def test_triton_kernels_match_float64_in_the_interpreter(k: int, n: int) -> None:
    # TRITON_INTERPRET must be set before the kernels are defined: a fresh interpreter process.
    # fp16 (the interpreter has no bf16 arithmetic; the GPU bench checks bf16 on the device).
    code = (
        "import json, torch; from trainer.models.frame_matmul import check_kernels; "
        f"print(json.dumps(check_kernels('cpu', torch.float16, frames=3, n={n}, k={k})))"
    )
    result = run_in_interpreter(code)
    assert result["used_kernels"] is True, result
    assert result["finite"] is True
    for key in ("z", "grad_a", "grad_y"):
        assert result[key] < 2e-3, (key, result)  # fp16 rounding of the output: ~2e-4


def test_flop_counter_counts_the_custom_ops() -> None:
    # MFU figures come from torch.utils.flop_counter: the opaque ops must report their products.
    from torch.utils.flop_counter import FlopCounterMode

    a = torch.randn(4, 25, 75, requires_grad=True)
    y = torch.randn(4, 75, 64, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        frame_matmul(a, y).sum().backward()
    assert counter.get_total_flops() == 3 * 2 * 4 * 25 * 75 * 64  # forward + two gradient products

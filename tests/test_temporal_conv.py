"""The TCN's dilated branches as one op: the ATen fallback, the Triton kernels (in Triton's interpreter)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from trainer.models.temporal_conv import _reference, _reference_backward, dilated_branches


def _branches(bc: int = 4, k: int = 5) -> tuple[list[nn.Conv2d], list[int]]:
    torch.manual_seed(0)
    dilations = [1, 2]
    convs = [
        nn.Conv2d(bc, bc, (k, 1), padding=(d * (k - 1) // 2, 0), dilation=(d, 1)).double() for d in dilations
    ]
    return convs, dilations


@pytest.mark.parametrize("stride", [1, 2])
def test_fallback_is_one_convolution_per_branch(stride: int) -> None:
    convs, dilations = _branches()
    for conv in convs:
        conv.stride = (stride, 1)
    wide = torch.randn(2, 12, 9, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x = wide[:, :8]  # a channel slice, as the TCN hands it on
    y = dilated_branches(x, [c.weight for c in convs], [c.bias for c in convs], dilations, stride)
    expected = torch.cat([convs[0](x[:, :4]), convs[1](x[:, 4:])], dim=1)
    assert y.shape == (2, 8, (9 + stride - 1) // stride, 5)
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("stride", [1, 2])
def test_reference_backward_matches_autograd(stride: int) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 11, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 4, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    y = _reference(x, weight, bias, [1, 2], stride)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dy)
    dx, dw, db = _reference_backward(dy, x.detach(), weight.detach(), [1, 2], stride)
    torch.testing.assert_close(dx, x.grad)
    torch.testing.assert_close(dw, weight.grad)
    torch.testing.assert_close(db, bias.grad)


def test_mismatched_weight_is_one_clear_error() -> None:
    from trainer.models.temporal_conv import _dilated_branches_op

    with pytest.raises(ValueError, match=r"x \[N, branches·C_b, T, V\]"):
        _dilated_branches_op(torch.zeros(1, 6, 4, 2), torch.zeros(2, 4, 4, 5), torch.zeros(8), [1, 2], 1)


def test_flop_counter_counts_the_real_taps() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.models.temporal_conv import _dilated_branches_op

    x = torch.randn(2, 8, 6, 3)
    counter = FlopCounterMode(display=False)
    with counter:
        _dilated_branches_op(x, torch.randn(2, 4, 4, 5), torch.zeros(8), [1, 2], 2)
    assert counter.get_total_flops() == 2 * 2 * 3 * 3 * 2 * 4 * 4 * 5  # 2·N·T_out·V·branches·C_b²·K


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
@pytest.mark.parametrize(
    "stride, branch_channels, frames", [(1, 16, 12), (2, 16, 12), (2, 32, 13), (1, 32, 7)]
)
def test_triton_kernels_match_float64_in_the_interpreter(
    stride: int, branch_channels: int, frames: int
) -> None:
    # fp16: the interpreter has no bf16 arithmetic (the GPU bench checks bf16 on the device).
    code = (
        "import json, torch; from trainer.models.temporal_conv import check_kernels; "
        f"print(json.dumps(check_kernels('cpu', torch.float16, stride={stride}, "
        f"branch_channels={branch_channels}, frames={frames})))"
    )
    result = run_in_interpreter(code)
    assert result["used_kernels"] is True and result["finite"] is True, result
    for key in ("y", "dx", "dw_1", "dw_2", "db_1", "db_2"):
        assert result[key] < 2e-3, (key, result)  # fp16 rounding: ~4e-4


def test_tcn_with_the_op_computes_the_same_function() -> None:
    from trainer.models.infogcn import MultiScaleTemporalConv

    torch.manual_seed(0)
    plain = MultiScaleTemporalConv(32, 2).double().train()
    with_op = (
        MultiScaleTemporalConv(32, 2, triton_dilations=True, triton_dilations_eval=True).double().train()
    )
    with_op.load_state_dict(plain.state_dict())
    x = torch.randn(2, 32, 9, 25, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(with_op(x), plain(x))  # on the CPU: the fallback, same numbers

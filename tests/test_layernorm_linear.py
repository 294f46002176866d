"""The fused LayerNorm → Linear op (SA-GC's query/key path): its kernels and the layer that uses it."""

from __future__ import annotations

import pytest
import torch
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from trainer.models.infogcn import SelfAttentionGraphConv
from trainer.models.layernorm_linear import kernels_apply, layernorm_linear


def test_fallback_is_the_two_op_function_in_the_inputs_dtype() -> None:
    torch.manual_seed(0)
    norm, proj = torch.nn.LayerNorm(12), torch.nn.Linear(12, 9)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    out = layernorm_linear(x, norm.weight, norm.bias, proj.weight, proj.bias, norm.eps)
    assert out.dtype == torch.float64 and out.shape == (2, 5, 9)
    expected = proj.double()(norm.double()(x))
    assert torch.allclose(out, expected, atol=1e-12)
    assert not kernels_apply(x, proj.weight)  # CPU fp64: PyTorch's ops


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
@pytest.mark.parametrize("rows, c, n", [(1000, 64, 48), (70, 256, 192), (33, 40, 24), (50, 64, 100)])
def test_kernels_match_float64_in_the_interpreter(rows: int, c: int, n: int) -> None:
    # rows not a multiple of the row tile; c = 40, n = 24 and 48, 192: masked column tails; n = 100:
    # two 64-column chunks of the weight, the second masked.
    code = (
        "import json, torch; from trainer.models.layernorm_linear import check_kernels; "
        f"print(json.dumps(check_kernels('cpu', torch.float16, rows={rows}, c={c}, n={n})))"
    )
    result = run_in_interpreter(code)
    assert result["used_kernels"] is True and result["finite"] is True, result
    for key in ("out", "grad_x", "grad_norm_weight", "grad_norm_bias", "grad_weight", "grad_bias"):
        assert result[key] < 2e-3, (key, result)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_layer_with_fused_norm_computes_the_two_op_layer_in_the_interpreter() -> None:
    # fp16 SA-GC with the kernels on (interpreter): fused_norm on and off give the same output and
    # gradients up to fp16 rounding, and only the fused layer calls the op.
    code = """
import json, torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from trainer.models.infogcn import SelfAttentionGraphConv

OP = torch.ops.crossglg.layernorm_linear.default
calls = []

class Count(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        calls[-1] += func is OP
        return func(*args, **(kwargs or {}))

torch.manual_seed(0)
layers = [SelfAttentionGraphConv(32, 32, 25, fused_norm=f) for f in (True, False)]
nn.init.normal_(layers[0].bn.weight)
nn.init.normal_(layers[0].attn_norm.weight)
layers[1].load_state_dict(layers[0].state_dict())
x = torch.randn(2, 32, 3, 25).contiguous(memory_format=torch.channels_last)
outs, grads = [], []
for layer in layers:
    layer.half()
    xi = x.half().requires_grad_()
    calls.append(0)
    with Count():
        out = layer(xi)
        out.float().square().sum().backward()
    outs.append(out.float())
    grads.append([xi.grad.float(), layer.attn_norm.weight.grad.float(), layer.to_qk.weight.grad.float()])

def rel(a, b):
    return float((a - b).norm() / b.norm())

print(json.dumps({"out": rel(outs[0], outs[1]), "grads": [rel(a, b) for a, b in zip(grads[0], grads[1])],
                  "fused_calls": calls[0], "plain_calls": calls[1]}))
"""
    result = run_in_interpreter(code)
    assert result["fused_calls"] == 1 and result["plain_calls"] == 0, result
    assert result["out"] < 2e-3, result
    assert all(err < 1e-2 for err in result["grads"]), result


def test_the_layer_falls_back_where_the_norm_is_not_in_the_inputs_dtype() -> None:
    # Under autocast with fp32 rows the LayerNorm runs in fp32 and the projection in bf16: not the
    # op's single-dtype function, so the layer keeps the two ops (same numbers as fused_norm=False).
    torch.manual_seed(0)
    fused = SelfAttentionGraphConv(16, 16, 25, fused_norm=True)
    plain = SelfAttentionGraphConv(16, 16, 25, fused_norm=False)
    plain.load_state_dict(fused.state_dict())
    rows = torch.randn(2, 3, 25, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = fused.project_qk(rows), plain.project_qk(rows)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)

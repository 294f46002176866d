"""The fused SA-GC attention op: same function as the unfused layer, and its Triton kernels (interpreter)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from trainer.models.infogcn import SelfAttentionGraphConv
from trainer.models.sagc_attention import kernels_apply


@pytest.mark.parametrize("c_in, c_out", [(16, 16), (16, 32)])
def test_fused_layer_computes_the_unfused_function_and_gradients(c_in: int, c_out: int) -> None:
    torch.manual_seed(0)
    plain = SelfAttentionGraphConv(c_in, c_out, 25, heads=3).double()
    nn.init.normal_(plain.bn.weight)  # the official 1e-6 init would hide the attention path
    nn.init.normal_(plain.shared_topology)
    fused = SelfAttentionGraphConv(c_in, c_out, 25, heads=3, fused=True).double()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, c_in, 6, 25, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for layer in (plain, fused):
        xi = x.clone().requires_grad_()
        out = layer(xi)
        out.square().sum().backward()
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    assert torch.allclose(outs[0], outs[1], atol=1e-10)
    for a, b in zip(grads[0], grads[1], strict=True):
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-7)
    assert not kernels_apply(x.reshape(12, 25, -1), plain.shared_topology, x, 3)  # CPU fp64: PyTorch


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
@pytest.mark.parametrize("d, n, frames", [(8, 80, 11), (32, 64, 8), (16, 200, 3)])
def test_fused_kernels_match_float64_in_the_interpreter(d: int, n: int, frames: int) -> None:
    # frames 11 and 3: a partial group of the backward's 8 frames; n 80, 200: masked column tails.
    code = (
        "import json, torch; from trainer.models.sagc_attention import check_kernels; "
        f"print(json.dumps(check_kernels('cpu', torch.float16, frames={frames}, d={d}, n={n})))"
    )
    result = run_in_interpreter(code)
    assert result["used_kernels"] is True and result["finite"] is True, result
    for key in ("z", "grad_qk", "grad_topology", "grad_y"):
        assert result[key] < 2e-3, (key, result)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_every_launch_shape_computes_the_same_gradients_in_the_interpreter() -> None:
    # Several frames per forward program with a tail (7 frames, groups of 3), a column tile smaller
    # than the width (two tiles, the second masked) and one covering it; one-frame backward programs.
    code = """
import json, torch
from trainer.models.sagc_attention import Launch, check_kernels
out = {}
for name, fwd, bwd in [
    ("groups", Launch(frames=3, block_n=32), Launch(frames=1, block_n=128)),
    ("wide", Launch(frames=2, block_n=256), Launch(frames=4, block_n=32)),
]:
    out[name] = check_kernels("cpu", torch.float16, frames=7, d=8, n=40, launches=(fwd, bwd))
print(json.dumps(out))
"""
    result = run_in_interpreter(code)
    for name, errors in result.items():
        assert errors["used_kernels"] is True and errors["finite"] is True, (name, errors)
        for key in ("z", "grad_qk", "grad_topology", "grad_y"):
            assert errors[key] < 2e-3, (name, key, errors)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_kernel_ops_trace_through_aot_autograd_in_one_graph() -> None:
    # torch.compile sees both custom ops through their fake (meta) functions and registered
    # backwards: AOTAutograd with fullgraph=True must give the eager gradients exactly.
    code = """
import json, torch
from trainer.models.frame_matmul import frame_matmul
from trainer.models.sagc_attention import sagc_attention

def grads(fn, shapes):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(*s, generator=g).half() for s in shapes]
    out = []
    for f in (fn, torch.compile(fn, backend="aot_eager", fullgraph=True)):
        leaves = [x.clone().requires_grad_() for x in xs]
        f(*leaves).float().square().sum().backward()
        out.append([leaf.grad.float() for leaf in leaves])
    return max(float((a - b).abs().max()) for a, b in zip(*out))

topo = torch.randn(3, 25, 25)
print(json.dumps({
    "sagc": grads(lambda qk, y: sagc_attention(qk, topo, y, 3, 0.35), [(4, 25, 48), (4, 75, 64)]),
    "frame_matmul": grads(frame_matmul, [(4, 25, 75), (4, 75, 64)]),
}))
"""
    result = run_in_interpreter(code)
    assert result == {"sagc": 0.0, "frame_matmul": 0.0}, result

"""SA-GC's inference kernel (channel mixing inside the attention kernel): same function as the layer's
two-step path, in PyTorch and in Triton's interpreter."""

from __future__ import annotations

import pytest
import torch
from layer_helpers import assert_same_training_gradients
from torch import nn
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from trainer.models.infogcn import SelfAttentionGraphConv
from trainer.models.sagc_inference import mix_heads


def _layers(
    c_in: int, c_out: int, dtype: torch.dtype
) -> tuple[SelfAttentionGraphConv, SelfAttentionGraphConv]:
    torch.manual_seed(0)
    plain = SelfAttentionGraphConv(c_in, c_out, 25, heads=3).to(dtype).eval()
    nn.init.normal_(plain.shared_topology)
    mixed = SelfAttentionGraphConv(c_in, c_out, 25, heads=3, fused_mixing=True).to(dtype).eval()
    mixed.load_state_dict(plain.state_dict())
    return plain, mixed


def test_mix_heads_lays_the_features_out_as_the_layers_gemm_does() -> None:
    torch.manual_seed(0)
    x, weight = torch.randn(4, 25, 8, dtype=torch.float64), torch.randn(3, 5, 8, dtype=torch.float64)
    flat = weight.transpose(0, 1).reshape(5, 3 * 8)  # the layer's mix.weight [C', H·C]
    gemm = torch.nn.functional.linear(x, flat.view(5, 3, 8).transpose(0, 1).reshape(15, 8))
    assert torch.equal(mix_heads(x, weight), gemm.reshape(4, 25 * 3, 5))


@pytest.mark.parametrize("c_in, c_out", [(16, 16), (16, 32)])
def test_fused_mixing_layer_computes_the_same_function_and_trains_as_before(c_in: int, c_out: int) -> None:
    plain, mixed = _layers(c_in, c_out, torch.float64)
    x = torch.randn(2, c_in, 6, 25, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(mixed(x), plain(x), rtol=1e-10, atol=1e-10)
    # with autograd on, the layer takes the two-step path: the same gradients
    assert_same_training_gradients((plain, mixed), x)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_mixed_kernel_matches_float64_in_the_interpreter() -> None:
    # K and N tails (48 input channels in 32-chunks, 80 output columns in 32-tiles), frames packed
    # two and four to a program with a partial last pack, packs in groups with a partial last group
    # (11 frames, 2 × 4 per program), the widest block's shape (256 → 256), and the tuned launches.
    code = """
import json, torch
from trainer.models.sagc_inference import TUNED_MIXED, MixedLaunch, check_kernels
out = {
    "default": check_kernels("cpu", torch.float16, frames=3, d=8, c=64, n=64),
    "tails": check_kernels("cpu", torch.float16, frames=5, d=16, c=48, n=80,
                           launch=MixedLaunch(pack=2, block_k=32, block_n=32)),
    "pack4": check_kernels("cpu", torch.float16, frames=6, d=8, c=64, n=128, launch=MixedLaunch(pack=4)),
    "groups": check_kernels("cpu", torch.float16, frames=11, d=8, c=64, n=64,
                            launch=MixedLaunch(pack=2, groups=4)),
    "wide": check_kernels("cpu", torch.float16, frames=2, d=32, c=256, n=256),
}
for (c, n), launch in TUNED_MIXED.items():  # every launch pasted from the GPU sweep, at its own shape
    out[f"tuned {c}->{n}"] = check_kernels("cpu", torch.float16, frames=3, d=16, c=c, n=n, launch=launch)
print(json.dumps(out))
"""
    result = run_in_interpreter(code)
    for name, r in result.items():
        assert r["used_kernels"] is True and r["finite"] is True, (name, r)
        assert r["z"] < 2e-3, (name, r)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_fused_mixing_layer_runs_the_kernel_in_the_interpreter() -> None:
    # fp16 on the CPU under the interpreter: both paths run Triton kernels; same outputs within fp16
    code = """
import json, torch
from torch import nn
from trainer.models.infogcn import SelfAttentionGraphConv
from trainer.models import sagc_inference
torch.manual_seed(0)
plain = SelfAttentionGraphConv(32, 64, 25, heads=3).eval()
nn.init.normal_(plain.shared_topology)
mixed = SelfAttentionGraphConv(32, 64, 25, heads=3, fused_mixing=True).eval()
mixed.load_state_dict(plain.state_dict())
plain, mixed = plain.half(), mixed.half()
x = torch.randn(2, 32, 4, 25).half().contiguous(memory_format=torch.channels_last)
calls = []
forward = sagc_inference.mixed_forward
sagc_inference.mixed_forward = lambda *a: calls.append(1) or forward(*a)
with torch.no_grad():
    a, b = plain(x).double(), mixed(x).double()
# asked for a gradient, the op takes PyTorch's path (the kernel has no backward)
qk = torch.randn(4, 25, 48).half().requires_grad_()
rows, w = torch.randn(4, 25, 32).half(), torch.randn(3, 64, 32).half()
sagc_inference.sagc_mixed_attention(qk, mixed.shared_topology, rows, w, 3, 0.35).float().sum().backward()
print(json.dumps({"rel": float((a - b).norm() / a.norm()), "kernel_calls": len(calls),
                  "grad": bool(qk.grad is not None and qk.grad.abs().sum() > 0)}))
"""
    result = run_in_interpreter(code)
    assert result["kernel_calls"] == 1, result  # the no_grad forward only
    assert result["rel"] < 3e-3, result
    assert result["grad"] is True, result

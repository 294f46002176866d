"""SA-GC's mixing inside the attention kernels with a backward (``fused_mixing_train``): the same
function and gradients as the layer's two-step path, in PyTorch and in Triton's interpreter."""

from __future__ import annotations

import pytest
import torch
from layer_helpers import assert_same_training_gradients
from torch import nn
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from dataspec import load_spec
from trainer.models.graph import SkeletonGraph
from trainer.models.infogcn import InfoGCN, SelfAttentionGraphConv
from trainer.models.sagc_inference import reference
from trainer.models.sagc_mixed_training import sagc_mixed_attention_training


@pytest.mark.parametrize("c_in, c_out", [(16, 16), (16, 32)])
def test_layer_with_the_option_trains_to_the_same_gradients(c_in: int, c_out: int) -> None:
    torch.manual_seed(0)
    plain = SelfAttentionGraphConv(c_in, c_out, 25, heads=3).double()
    nn.init.normal_(plain.shared_topology)
    fused = SelfAttentionGraphConv(c_in, c_out, 25, heads=3, fused_mixing_train=True).double()
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, c_in, 6, 25, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    # mix.weight, the topology and the input all get their gradients through the fused path
    assert_same_training_gradients((plain, fused), x)


def test_without_the_kernels_the_op_is_the_reference_with_autograd() -> None:
    torch.manual_seed(0)
    qk = torch.randn(3, 25, 48, dtype=torch.float64, requires_grad=True)
    topo = torch.randn(3, 25, 25, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 25, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 8, 16, dtype=torch.float64, requires_grad=True)
    z = sagc_mixed_attention_training(qk, topo, x, w, 3, 0.35)
    torch.testing.assert_close(z, reference(qk, topo, x, w, 3, 0.35))
    z.sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (qk, topo, x, w))


def test_the_model_passes_the_option_to_every_block() -> None:
    graph = SkeletonGraph.from_spec(load_spec("ntu120"))
    model = InfoGCN(10, graph, fused_mixing_train=True)
    assert all(block.gc.fused_mixing_train for block in model.blocks)
    assert not any(block.gc.fused_mixing_train for block in InfoGCN(10, graph).blocks)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_kernels_match_float64_in_the_interpreter() -> None:
    # frames not a multiple of the backward's group of 4, output columns not a multiple of its 64-column
    # chunk, input channels below a power of two, the widest block (256 → 256, eight warps), and the
    # channel-doubling shape; the op also passes torch.library.opcheck (schema, autograd, fake, AOT)
    code = """
import json, torch
from trainer.models import sagc_mixed_training as m
from trainer.models.sagc_inference import MixedLaunch
out = {
    "default": m.check_kernels("cpu", torch.float16, frames=7, d=8, c=64, n=80),
    "odd": m.check_kernels("cpu", torch.float16, frames=6, d=3, c=24, n=40),
    "doubling": m.check_kernels("cpu", torch.float16, frames=5, d=16, c=128, n=256),
    "wide": m.check_kernels("cpu", torch.float16, frames=3, d=32, c=256, n=256),
}
# frames packed two and four to a tile (block-diagonal maps), packs in groups with a partial last one
for pack, groups in ((2, 1), (2, 3), (4, 2)):
    launches = (MixedLaunch(), m.MixedBackwardLaunch(pack=pack, groups=groups, block_n=32))
    out[f"pack{pack}x{groups}"] = m.check_kernels("cpu", torch.float16, frames=7, d=8, c=64, n=80,
                                                  launches=launches)
out["pack2 wide"] = m.check_kernels("cpu", torch.float16, frames=3, d=32, c=256, n=256,
                                    launches=(MixedLaunch(), m.MixedBackwardLaunch(pack=2, groups=1)))
g = torch.Generator().manual_seed(0)
args = (torch.randn(3, 25, 48, generator=g).half().requires_grad_(),
        torch.randn(3, 25, 25, generator=g).requires_grad_(),
        torch.randn(3, 25, 32, generator=g).half().requires_grad_(),
        (torch.randn(3, 40, 32, generator=g) * 0.2).half().requires_grad_(), 3, 0.35)
out["opcheck"] = torch.library.opcheck(m._mixed_training_op, args)
# the backward op: real and fake outputs agree in strides for a strided x and either weight layout
from torch._subclasses.fake_tensor import FakeTensorMode
layouts = []
for w in ((torch.randn(40, 3, 32, generator=g) * 0.2).half().transpose(0, 1),
          (torch.randn(3, 40, 32, generator=g) * 0.2).half()):
    ops = (torch.randn(3, 25, 48, generator=g).half(), torch.randn(3, 25, 25, generator=g),
           torch.randn(3, 25, 40, generator=g).half()[:, :, :32], w,
           torch.randn(3, 25, 40, generator=g).half())
    real = m.sagc_mixed_attention_backward(*ops, 3, 0.35)
    with FakeTensorMode() as mode:
        fake = m.sagc_mixed_attention_backward(*(mode.from_tensor(t) for t in ops), 3, 0.35)
    layouts += [a.stride() == b.stride() and a.shape == b.shape for a, b in zip(real, fake)]
    out["opcheck_backward"] = torch.library.opcheck(m.sagc_mixed_attention_backward, (*ops, 3, 0.35))
out["layouts"] = layouts
print(json.dumps(out))
"""
    result = run_in_interpreter(code)
    assert set(result.pop("opcheck").values()) == {"SUCCESS"}
    assert set(result.pop("opcheck_backward").values()) == {"SUCCESS"}
    assert result.pop("layouts") == [True] * 8
    for name, r in result.items():
        assert r["used_kernels"] is True and r["finite"] is True, (name, r)
        errors = {k: v for k, v in r.items() if k == "z" or k.startswith("grad_")}
        assert len(errors) == 5 and max(errors.values()) < 2e-3, (name, r)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_layer_runs_both_kernels_in_training_in_the_interpreter() -> None:
    # fp16 under the interpreter: the default layer (GEMM + attention kernels) against the
    # fused layer; same output and gradients within fp16 rounding, and the fused kernels ran once each
    code = """
import json, torch
from torch import nn
from trainer.models.infogcn import SelfAttentionGraphConv
from trainer.models import sagc_mixed_training as m
torch.manual_seed(0)
plain = SelfAttentionGraphConv(32, 64, 25, heads=3)
nn.init.normal_(plain.shared_topology)
nn.init.ones_(plain.bn.weight)  # not the 1e-6 init: the attention path must carry the gradients
fused = SelfAttentionGraphConv(32, 64, 25, heads=3, fused_mixing_train=True)
fused.load_state_dict(plain.state_dict())
plain, fused = plain.half().train(), fused.half().train()
calls = {"forward": 0, "backward": 0}
forward, backward = m.mixed_forward, m.mixed_backward
m.mixed_forward = lambda *a: calls.__setitem__("forward", calls["forward"] + 1) or forward(*a)
m.mixed_backward = lambda *a: calls.__setitem__("backward", calls["backward"] + 1) or backward(*a)
x = torch.randn(2, 32, 4, 25).half().contiguous(memory_format=torch.channels_last)
grad = torch.randn(2, 64, 4, 25).half()
outs, grads = [], []
for layer in (plain, fused):
    xi = x.clone().requires_grad_()
    out = layer(xi)
    out.backward(grad)
    outs.append(out.double())
    grads.append([xi.grad.double(), layer.mix.weight.grad.double(), layer.shared_topology.grad.double(),
                  layer.to_qk.weight.grad.double()])
rel = lambda a, b: float((a - b).norm() / b.norm())
print(json.dumps({"out": rel(outs[1], outs[0]),
                  "grads": [rel(b, a) for a, b in zip(*grads)], **calls}))
"""
    result = run_in_interpreter(code)
    assert result["forward"] == 1 and result["backward"] == 1, result
    assert result["out"] < 3e-3, result  # 4.0e-4 when written
    assert max(result["grads"]) < 3e-3, result  # ≤ 6.0e-4 when written


def test_launch_tables_fall_back_to_the_eval_table_and_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.models import sagc_mixed_training as m
    from trainer.models.sagc_inference import MIXED_LAUNCH, TUNED_MIXED, MixedLaunch

    assert m.forward_launch(128, 128) == TUNED_MIXED[(128, 128)]  # the eval sweep's pick
    assert m.forward_launch(64, 96) == MIXED_LAUNCH
    monkeypatch.setitem(m.TUNED_FORWARD, (64, 96), MixedLaunch(pack=2))
    assert m.forward_launch(64, 96) == MixedLaunch(pack=2)
    assert m.backward_launch(256, 256) == m.backward_launch(64, 96) == m.MixedBackwardLaunch(num_warps=8)
    monkeypatch.setitem(m.TUNED_BACKWARD, (64, 96), m.MixedBackwardLaunch(pack=2, groups=16))
    assert m.backward_launch(64, 96) == m.MixedBackwardLaunch(pack=2, groups=16)
    assert m.backward_launch(64, 64) == m.TUNED_BACKWARD[(64, 64)]  # the H100 sweep's pick (2026-12-07)


def test_the_backward_refuses_packed_frames_on_cuda_only() -> None:
    from trainer.models import sagc_mixed_training as m

    with pytest.raises(ValueError, match="pack > 1 faults the GPU"):
        m.check_backward_launch(m.MixedBackwardLaunch(pack=2), torch.device("cuda"))
    m.check_backward_launch(m.MixedBackwardLaunch(pack=2), torch.device("cpu"))  # the interpreter runs it
    m.check_backward_launch(m.MixedBackwardLaunch(pack=1), torch.device("cuda"))

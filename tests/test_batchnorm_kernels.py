"""The candidate BatchNorm kernels: same function, gradients and running statistics as nn.BatchNorm2d."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from dataspec import load_spec
from trainer.models import create_model
from trainer.models.batchnorm_kernels import PATTERNS, kernels_apply, rows_view, use_kernel_batchnorm


def test_rows_view_accepts_channels_last_rows_and_channel_slices_only() -> None:
    x = torch.randn(2, 64, 5, 25).contiguous(memory_format=torch.channels_last)
    assert rows_view(x) == 64
    assert rows_view(x[:, :48]) == 64  # a channel slice keeps a uniform row stride
    assert rows_view(torch.randn(2, 64, 5, 25)) is None  # NCHW
    assert rows_view(x[:, :, ::2]) is None  # strided time: rows are not uniform
    assert not kernels_apply(x)  # fp32 on the CPU: nn.BatchNorm2d's path


def test_swapped_model_keeps_its_state_dict_and_falls_back_where_kernels_do_not_apply() -> None:
    torch.manual_seed(0)
    model = create_model("infogcn", num_classes=5, spec=load_spec("ntu60"))
    reference = create_model("infogcn", num_classes=5, spec=load_spec("ntu60"))
    reference.load_state_dict(model.state_dict())
    n_bn = sum(type(m) is nn.BatchNorm2d for m in model.modules())
    assert use_kernel_batchnorm(model) == n_bn > 0
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 3, 8, 25, 2)
    outs = []
    for m in (model, reference):
        torch.manual_seed(1)  # the same dropout masks
        outs.append(m(x)["logits"])
    torch.testing.assert_close(outs[0], outs[1])  # CPU fp32: the fallback
    torch.testing.assert_close(model.state_dict(), reference.state_dict())  # same running statistics


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_every_pattern_matches_float64_on_a_channel_slice_in_the_interpreter() -> None:
    # 525 rows: two full row blocks and a tail; 48 / 80 channels: masked channel tiles.
    code = (
        "import json, torch; from trainer.models.batchnorm_kernels import check_kernels, PATTERNS; "
        "print(json.dumps([check_kernels('cpu', torch.float16, channels=c, pattern=p) "
        "for p in PATTERNS for c in ((48, 80) if p == 'bn_relu_add_relu' else (48,))]))"
    )
    results = run_in_interpreter(code)
    assert {r["pattern"] for r in results} == set(PATTERNS)
    for result in results:
        assert result["used_kernels"] and result["finite"] and result["y_channels_last"], result
        assert result["grad_x_outside_slice_zero"], result
        for key in ("y", "grad_x"):
            assert result[key] < 1e-3, (key, result)  # fp16 rounding of y and dx
        for key in ("mean", "var", "grad_weight", "grad_bias"):
            assert result[key] < 1e-5, (key, result)  # fp32 accumulations
        if PATTERNS[result["pattern"]][0]:
            assert result["grad_residual"] < 1e-3, result


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_model_with_kernel_batchnorm_matches_float64_in_the_interpreter() -> None:
    # A tiny InfoGCN in fp16 on the CPU: every BatchNorm2d runs the fused kernels (counted); the
    # features, the gradients and the running means match the plain model in float64 as closely as
    # the plain model in fp16 does.
    code = """
import copy, json, torch
from dataspec import load_spec
from trainer.models import create_model
from trainer.models import batchnorm_kernels as bk

torch.manual_seed(0)
model = create_model("infogcn", num_classes=5, spec=load_spec("ntu60"), base_channels=16).train()
for block in model.blocks:
    torch.nn.init.normal_(block.gc.mix.bias)  # zero at init: make the running-mean shift visible
ref = copy.deepcopy(model).double()
plain = copy.deepcopy(model).half()
calls = []
op = bk.bn_act_train
def counted(*args):
    calls.append(tuple(args[4:6]) + (args[3] is not None,))
    return op(*args)
bk.bn_act_train = counted
bk.use_kernel_batchnorm(model)
model.half()
x = torch.randn(2, 3, 8, 25, 2)
feats = {}
models = {"kernels": model, "plain": plain, "ref": ref}
for name, m in models.items():
    # z_mu: the features before the head's random sampling
    feats[name] = m(x.to(torch.double if name == "ref" else torch.half))["z_mu"]
    feats[name].double().square().sum().backward()
def rel(a, b):
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())
params = {name: dict(m.named_parameters()) for name, m in models.items()}
# Not the biases right before a BatchNorm: their exact gradient is 0 (float64 leaves ~1e-15).
names = [n for n, p in params["ref"].items() if p.grad is not None and p.grad.norm() > 1e-6]
flat = {k: torch.cat([params[k][n].grad.double().flatten() for n in names]) for k in params}
def median_error(k):
    return float(torch.tensor([rel(params[k][n].grad, params["ref"][n].grad) for n in names]).median())
means = {k: v for k, v in model.state_dict().items() if k.endswith("running_mean")}
state = {name: m.state_dict() for name, m in models.items()}
print(json.dumps({
    "calls": len(calls), "patterns": sorted(set(map(str, calls))),
    "features": rel(feats["kernels"], feats["ref"]), "plain_features": rel(feats["plain"], feats["ref"]),
    "grad": rel(flat["kernels"], flat["ref"]), "plain_grad": rel(flat["plain"], flat["ref"]),
    "median": median_error("kernels"), "plain_median": median_error("plain"), "n_grads": len(names),
    "running_mean": max(
        rel(state["kernels"][k], state["ref"][k]) - 2 * rel(state["plain"][k], state["ref"][k]) for k in means
    ),
    "n_bn2d": sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()),
}))
"""
    result = run_in_interpreter(code)
    assert result["calls"] == result["n_bn2d"] > 0, result  # every BatchNorm2d went through the kernels
    assert len(result["patterns"]) == 4, result  # plain, BN+ReLU, BN+add+ReLU, BN+ReLU+add+ReLU
    assert result["features"] < max(2 * result["plain_features"], 2e-3), result
    assert result["grad"] < max(2 * result["plain_grad"], 1e-2) and result["n_grads"] > 40, result
    assert result["median"] < max(2 * result["plain_median"], 1e-2), result  # per parameter
    assert result["running_mean"] < 1e-2, result  # SA-GC's bias folded into its running mean


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_module_updates_running_statistics_like_batchnorm_and_traces_in_one_graph() -> None:
    code = """
import json, torch
from torch import nn
from trainer.models.batchnorm_kernels import KernelBatchNorm2d

torch.manual_seed(0)
ref = nn.BatchNorm2d(24)
ours = KernelBatchNorm2d(24)
ours.load_state_dict(ref.state_dict())
for step in range(3):
    x = (torch.randn(2, 24, 6, 25) * 3 + 1).contiguous(memory_format=torch.channels_last)
    ref(x)
    y = ours(x.half())
own = ours.state_dict()
stats = {k: float((own[k].double() - v.double()).abs().max()) for k, v in ref.state_dict().items()}

def grads(fn):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24, 6, 25, generator=g).half().contiguous(memory_format=torch.channels_last)
    leaf = x.clone().requires_grad_()
    fn(leaf).float().square().sum().backward()
    return [leaf.grad.float(), ours.weight.grad.clone(), ours.bias.grad.clone()]

eager = grads(ours)
ours.zero_grad()
compiled = grads(torch.compile(ours, backend="aot_eager", fullgraph=True))
print(json.dumps({"stats": stats, "dtype": str(y.dtype),
                  "compiled_vs_eager": max(float((a - b).abs().max()) for a, b in zip(eager, compiled))}))
"""
    result = run_in_interpreter(code)
    assert result["dtype"] == "torch.float16"
    assert result["stats"]["num_batches_tracked"] == 0
    for key in ("running_mean", "running_var"):
        assert result["stats"][key] < 1e-2, result  # fp16 inputs vs the fp32 reference
    assert result["compiled_vs_eager"] == 0.0, result

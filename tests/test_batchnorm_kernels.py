"""The candidate BatchNorm kernels: same function, gradients and running statistics as nn.BatchNorm2d."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from dataspec import load_spec
from trainer.models import create_model
from trainer.models.batchnorm_kernels import kernels_apply, rows_view, use_kernel_batchnorm


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
@pytest.mark.parametrize("channels", [48, 80])
def test_kernels_match_float64_on_a_channel_slice_in_the_interpreter(channels: int) -> None:
    # 525 rows: two full row blocks and a tail; 48 / 80 channels: masked channel tiles.
    code = (
        "import json, torch; from trainer.models.batchnorm_kernels import check_kernels; "
        f"print(json.dumps(check_kernels('cpu', torch.float16, channels={channels})))"
    )
    result = run_in_interpreter(code)
    assert result["used_kernels"] and result["finite"] and result["y_channels_last"], result
    assert result["grad_x_outside_slice_zero"], result
    for key in ("y", "grad_x"):
        assert result[key] < 1e-3, (key, result)  # fp16 rounding of y and dx
    for key in ("mean", "var", "grad_weight", "grad_bias"):
        assert result[key] < 1e-5, (key, result)  # fp32 accumulations


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

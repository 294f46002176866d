"""SA-GC's eval epilogue (BatchNorm, shortcut, ReLU, joint weight inside the attention kernel): the same
function as the layer's two-step tail, in PyTorch and in Triton's interpreter."""

from __future__ import annotations

import pytest
import torch
from layer_helpers import assert_same_training_gradients
from torch import nn
from triton_helpers import HAS_TRITON, NO_TRITON_REASON, run_in_interpreter

from trainer.models.infogcn import SelfAttentionGraphConv
from trainer.models.sagc_epilogue import Epilogue, batchnorm_affine, reference


def _trained_bn(channels: int) -> nn.BatchNorm2d:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(channels).double()
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.2, 3.0)
    return bn.eval()


def test_batchnorm_affine_is_the_eval_batchnorm_of_the_biased_input() -> None:
    bn = _trained_bn(6)
    bias = torch.randn(6, dtype=torch.float64)
    z = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    scale, shift = batchnorm_affine(bn, bias)
    expected = bn(z + bias[:, None, None])
    torch.testing.assert_close(z * scale[:, None, None] + shift[:, None, None], expected)


def test_reference_applies_affine_residual_relu_and_the_weight_of_each_rows_sample() -> None:
    torch.manual_seed(0)
    z = torch.randn(6, 4, 3, dtype=torch.float64)  # 2 samples × 3 frames, 4 joints, 3 columns
    residual = torch.randn(6, 4, 3, dtype=torch.float64)
    weight = torch.rand(2, 4, dtype=torch.float64)
    scale, shift = torch.rand(3, dtype=torch.float64) + 0.5, torch.randn(3, dtype=torch.float64)
    out = reference(z, Epilogue(scale, shift, residual, weight, frames=3))
    for g in range(6):
        expected = torch.relu(z[g] * scale + shift + residual[g]) * weight[g // 3][:, None]
        torch.testing.assert_close(out[g], expected)
    # every part matters: no ReLU lets negatives through, no weight changes the scale
    assert (reference(z, Epilogue(scale, shift, residual, None, 3, relu=False)) < 0).any()
    assert not torch.allclose(reference(z, Epilogue(scale, shift, residual, None, 3)), out)


@pytest.mark.parametrize("c_in, c_out", [(16, 16), (16, 32)])
@pytest.mark.parametrize("mixing", [False, True])
def test_layer_with_the_epilogue_computes_the_same_function_in_eval(
    c_in: int, c_out: int, mixing: bool
) -> None:
    torch.manual_seed(0)
    plain = SelfAttentionGraphConv(c_in, c_out, 25, heads=3, fused_epilogue=False).double()
    nn.init.normal_(plain.shared_topology)
    nn.init.normal_(plain.mix.bias)
    for bn in [plain.bn] + ([plain.down[1]] if isinstance(plain.down, nn.Sequential) else []):
        bn.load_state_dict(_trained_bn(c_out).state_dict())
    plain.eval()
    fused = SelfAttentionGraphConv(c_in, c_out, 25, heads=3, fused_mixing=mixing, fused_epilogue=True)
    fused = fused.double()
    fused.load_state_dict(plain.state_dict())
    fused.eval()
    x = torch.randn(2, c_in, 6, 25, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.rand(2, 1, 1, 25, dtype=torch.float64) * 2
    with torch.no_grad():
        torch.testing.assert_close(fused(x, weight), plain(x, weight), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-10, atol=1e-10)
    # in training (batch statistics) and with autograd the epilogue is off: the same gradients
    assert_same_training_gradients((plain, fused), x, weight)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_epilogue_kernels_match_float64_in_the_interpreter() -> None:
    # both kernels; row/column tails (80 columns), frames not a multiple of a program's group,
    # one sample per program boundary; a strided residual; fp16 (the interpreter's half type)
    code = """
import json, torch
from trainer.models.sagc_epilogue import check_kernels
out = {
    "attention": check_kernels("cpu", torch.float16, mixing=False, frames=6, per_sample=3, n=80),
    "mixing": check_kernels("cpu", torch.float16, mixing=True, frames=6, per_sample=2, c=48, n=80),
    "wide": check_kernels("cpu", torch.float16, mixing=True, frames=4, per_sample=4, d=32, c=256, n=256),
}
print(json.dumps(out))
"""
    result = run_in_interpreter(code)
    for name, check in result.items():
        assert check["used_kernels"], name
        assert check["finite"], name
        assert check["out"] < 2e-3, (name, check)


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON_REASON)
def test_model_with_the_epilogue_extracts_the_same_features_in_the_interpreter() -> None:
    # a whole fp16 CrossGLG (InfoGCN, JID re-weighting on) with trained-looking BatchNorms: features
    # with the epilogue in both kernels against the two-step path, both through Triton
    code = """
import json, torch
from dataspec import load_spec
from trainer.models import sagc_attention, sagc_inference
from trainer.models.crossglg import CrossGLG
calls = {"attention": 0, "mixing": 0}
eval_op, mixed_op = sagc_attention._sagc_attention_eval_op, sagc_inference._sagc_mixed_attention_op
def count_eval(*a):
    calls["attention"] += 1
    return eval_op(*a)
def count_mixed(*a):
    calls["mixing"] += a[6] is not None  # with an epilogue
    return mixed_op(*a)
sagc_attention._sagc_attention_eval_op, sagc_inference._sagc_mixed_attention_op = count_eval, count_mixed
spec = load_spec("ntu120")
feats = {}
for name, options in {"plain": {"fused_epilogue": False}, "epi": {},
                      "mix+epi": {"fused_epilogue": True, "fused_mixing": True}}.items():
    torch.manual_seed(0)
    model = CrossGLG("infogcn", 5, spec, l2g=False, base_channels=16, **options)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1); m.running_var.uniform_(0.5, 2.0)
    model = model.half().eval()
    x = torch.randn(2, 3, 8, 25, 2, generator=torch.Generator().manual_seed(1)).half()
    feats[name] = model.extract_features(x).double()
ref = feats.pop("plain")
rel = {k: float((v - ref).norm() / ref.norm()) for k, v in feats.items()}
print(json.dumps({"rel": rel, "norm": float(ref.norm()), "calls": calls}))
"""
    result = run_in_interpreter(code)
    assert result["norm"] > 0
    assert result["calls"] == {"attention": 9, "mixing": 9}  # every block's SA-GC, once per path
    for name, rel in result["rel"].items():
        assert rel < 1e-2, (name, rel)

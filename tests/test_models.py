"""timm-style smoke tests over every encoder × {plain, g2l, l2g, both}, plus graph and loss behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dataspec import load_spec
from trainer.models import create_model, list_models
from trainer.models.base import count_parameters
from trainer.models.crossglg import CrossGLG
from trainer.models.graph import SkeletonGraph
from trainer.models.infogcn import InfoGCN
from trainer.models.losses import class_mean_mmd, crossglg_loss

VARIANTS = {"plain": (False, False), "g2l": (True, False), "l2g": (False, True), "both": (True, True)}
T, B, K, D = 8, 2, 6, 16


@pytest.fixture(scope="module")
def ntu():
    return load_spec("ntu120")


def _inputs(spec, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, T, spec.num_joints, spec.persons, generator=gen)
    text = torch.randn(B, spec.num_joints, D, generator=gen)
    y = torch.tensor([0, K - 1])
    k_gt = torch.softmax(torch.randn(B, spec.num_joints, generator=gen), dim=-1)
    return x, text, y, k_gt


def test_registry_lists_both_encoders():
    assert {"infogcn", "stgcn"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet", num_classes=3)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("encoder", ["infogcn", "stgcn"])
def test_forward_backward_every_parameter_gets_a_gradient(encoder, variant, ntu):
    g2l, l2g = VARIANTS[variant]
    torch.manual_seed(0)
    model = CrossGLG(encoder, K, ntu, text_dim=D, g2l=g2l, l2g=l2g, width=32, heads=4)
    x, text, y, k_gt = _inputs(ntu)
    out = model(x, text)
    assert out["logits"].shape == (B, K)
    assert out["features"].shape == (B, model.encoder.feature_dim)
    assert (out["k_out"] is not None) == g2l
    assert (out["logits_text"] is not None) == l2g
    if g2l:
        assert out["k_out"].shape == (B, ntu.num_joints)
        torch.testing.assert_close(out["k_out"].sum(-1), torch.ones(B))
    if l2g:
        assert out["logits_text"].shape == (B, K)
    for key in ("logits", "logits_text", "k_out", "features"):
        if out[key] is not None:
            assert torch.isfinite(out[key]).all(), key
    total, parts = crossglg_loss(out, y, k_gt)
    assert torch.isfinite(total)
    assert ("calibrate" in parts) == g2l and ("text_cls" in parts) == l2g
    assert ("mmd" in parts) == (encoder == "infogcn")
    total.backward()
    no_grad = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum())
    ]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("encoder", ["infogcn", "stgcn"])
def test_inference_path_needs_no_text(encoder, variant, ntu):
    g2l, l2g = VARIANTS[variant]
    model = CrossGLG(encoder, K, ntu, text_dim=D, g2l=g2l, l2g=l2g, width=32).eval()
    x, *_ = _inputs(ntu)
    feats = model.extract_features(x)
    assert feats.shape == (B, model.encoder.feature_dim) and torch.isfinite(feats).all()
    out = model(x)  # no text at all: the text branch stays off
    assert out["logits_text"] is None
    torch.testing.assert_close(out["features"], feats)
    assert model.inference_parameters() <= model.training_parameters()
    if l2g:
        assert model.training_parameters() - model.inference_parameters() == count_parameters(
            model.interaction
        )


def test_single_person_dataset_runs():
    spec = load_spec("nwucla")
    for encoder in ("infogcn", "stgcn"):
        model = CrossGLG(encoder, 4, spec, text_dim=D, width=32)
        x = torch.randn(B, 3, T, spec.num_joints, 1)
        out = model(x, torch.randn(B, spec.num_joints, D))
        assert out["logits"].shape == (B, 4) and out["k_out"].shape == (B, 20)


def test_infogcn_parameter_count_matches_the_paper(ntu):
    # InfoGCN reports ~1.57 M parameters for 100 classes (NTU-120 scale).
    n = count_parameters(create_model("infogcn", num_classes=100, spec=ntu))
    assert abs(n - 1.57e6) / 1.57e6 < 0.01, n


def test_stgcn_parameter_count_matches_the_paper(ntu):
    # ST-GCN is ~3.1 M parameters with 60 classes.
    n = count_parameters(create_model("stgcn", num_classes=60, spec=ntu))
    assert abs(n - 3.1e6) / 3.1e6 < 0.02, n


def test_crossglg_inference_overhead_is_about_a_tenth_of_a_million(ntu):
    plain = CrossGLG("infogcn", 100, ntu, g2l=False, l2g=False)
    both = CrossGLG("infogcn", 100, ntu, g2l=True, l2g=True)
    overhead = both.inference_parameters() - plain.inference_parameters()
    assert 0.05e6 < overhead < 0.15e6, overhead
    assert both.training_parameters() > both.inference_parameters()


@pytest.mark.parametrize("encoder", ["infogcn", "stgcn"])
def test_uniform_key_joints_leave_features_unchanged(encoder, ntu):
    torch.manual_seed(1)
    model = CrossGLG(encoder, K, ntu, g2l=True, l2g=False).eval()
    x, *_ = _inputs(ntu)
    plain = model.encoder.pool(model.encoder.forward_features(x))
    v = ntu.num_joints
    with torch.no_grad():  # make the JID output exactly uniform: zero weights, equal biases
        model.jid.fc2.weight.zero_()
        model.jid.fc2.bias.fill_(0.3)
        out = model(x)
    torch.testing.assert_close(out["k_out"], torch.full((B, v), 1.0 / v))
    torch.testing.assert_close(out["features"], plain)
    with torch.no_grad():  # a peaked distribution does change them
        model.jid.fc2.bias.copy_(torch.linspace(-3, 3, v))
        peaked = model(x)["features"]
    assert not torch.allclose(peaked, plain, atol=1e-4)


def test_n_pre_out_of_range_is_refused(ntu):
    with pytest.raises(ValueError, match="n_pre"):
        CrossGLG("infogcn", K, ntu, n_pre=9)


def test_relative_coordinates_subtract_the_parent(ntu):
    graph = SkeletonGraph.from_spec(ntu)
    rel = graph.relative_coordinate_matrix(1)
    coords = np.random.default_rng(0).normal(size=(ntu.num_joints, 3))
    out = rel @ coords
    for child, parent in ntu.edges:
        np.testing.assert_allclose(out[child], coords[child] - coords[parent])
    root = next(j for j in range(ntu.num_joints) if j not in {c for c, _ in ntu.edges})
    np.testing.assert_allclose(out[root], coords[root])  # the root keeps its absolute position
    rel2 = graph.relative_coordinate_matrix(2) @ coords
    np.testing.assert_allclose(rel2[3], coords[3] - coords[20])  # head minus grandparent (upper spine)


def test_spatial_partitions_split_each_neighbourhood(ntu):
    graph = SkeletonGraph.from_spec(ntu)
    parts = graph.spatial_partitions()
    assert parts.shape == (3, 25, 25)
    np.testing.assert_allclose(parts.sum(axis=(0, 2)), np.ones(25), rtol=1e-6)  # averaging neighbourhoods
    # elbow (5): itself in 'same', shoulder (4) is closer to the centre, wrist (6) farther
    assert parts[0, 5, 5] > 0 and parts[1, 5, 4] > 0 and parts[2, 5, 6] > 0
    assert parts[0, 5, 4] == parts[2, 5, 4] == 0


def test_mmd_matches_a_per_class_loop():
    gen = torch.Generator().manual_seed(0)
    z, prior = torch.randn(7, 5, generator=gen), torch.randn(4, 5, generator=gen)
    y = torch.tensor([0, 0, 2, 2, 2, 3, 0])
    present = [c for c in range(4) if (y == c).any()]
    means = torch.stack([z[y == c].mean(0) for c in present])
    expected = torch.nn.functional.mse_loss(means, prior[present])
    torch.testing.assert_close(class_mean_mmd(z, prior, y), expected)


def test_loss_weights_combine_the_parts():
    gen = torch.Generator().manual_seed(0)
    out = {
        "logits": torch.randn(3, 4, generator=gen),
        "logits_text": torch.randn(3, 4, generator=gen),
        "k_out": torch.softmax(torch.randn(3, 5, generator=gen), -1),
    }
    y, k_gt = torch.tensor([0, 1, 3]), torch.full((3, 5), 0.2)
    total, parts = crossglg_loss(out, y, k_gt, w_calibrate=0.5, w_c=0.2)
    torch.testing.assert_close(total, parts["cls"] + 0.5 * parts["calibrate"] + 0.2 * parts["text_cls"])
    no_pack, parts2 = crossglg_loss(out, y, None)
    assert "calibrate" not in parts2


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["infogcn", "stgcn"])
def test_forward_traces_as_one_graph_for_torch_compile(encoder, ntu):
    # No graph breaks (no .item(), no data-dependent Python control flow): torch.compile sees one graph.
    model = CrossGLG(encoder, K, ntu, text_dim=D, width=32)
    x, text, *_ = _inputs(ntu)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x, text)
    torch._dynamo.reset()
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("c_in, c_out", [(16, 16), (16, 32)])
def test_sagc_equals_the_per_head_formula_and_keeps_channels_last(c_in, c_out):
    # The layer mixes channels before applying the topology (they commute) and works on
    # channels-last rows; check it against the paper's order: z_h = (S_h ⊙ A_h) x, then W over heads.
    from trainer.models.infogcn import SelfAttentionGraphConv

    torch.manual_seed(0)
    gc = SelfAttentionGraphConv(c_in, c_out, 25, heads=3).double()
    nn.init.normal_(gc.bn.weight)  # the official 1e-6 init would hide the main path
    nn.init.normal_(gc.shared_topology)
    nn.init.normal_(gc.mix.bias)
    x = torch.randn(2, c_in, 5, 25, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    out = gc(x)
    topology = gc.attention(x) * gc.shared_topology
    z = torch.einsum("bthij,bctj->bhcti", topology, x).reshape(2, 3 * c_in, 5, 25)
    ref = torch.relu(gc.bn(gc.mix(z)) + gc.down(x))
    assert torch.allclose(out, ref, atol=1e-10)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_infogcn_blocks_run_in_channels_last_memory(ntu):
    model = InfoGCN(K, SkeletonGraph.coerce(ntu, None, None))
    h = model.stem(torch.randn(2, 3, 8, 25, 2))
    assert h.shape == (4, 64, 8, 25) and h.is_contiguous(memory_format=torch.channels_last)
    for block in model.blocks:
        h = block(h)
    assert h.is_contiguous(memory_format=torch.channels_last)


def test_dense_branches_compute_the_same_function_with_the_same_state_dict(ntu):
    torch.manual_seed(0)
    plain = InfoGCN(5, SkeletonGraph.from_spec(ntu), dense_branches=False).train()
    dense = InfoGCN(5, SkeletonGraph.from_spec(ntu), dense_branches=True).train()
    dense.load_state_dict(plain.state_dict())
    assert all(block.tcn.dense_branches for block in dense.blocks)
    assert not any(block.tcn.dense_branches for block in plain.blocks)
    assert all(b.tcn.dense_branches for b in InfoGCN(5, SkeletonGraph.from_spec(ntu)).blocks)  # the default
    x = torch.randn(2, 3, 8, 25, 2)
    feats = []
    for model in (plain, dense):
        out = model(x)["z_mu"]
        out.square().sum().backward()
        feats.append(out)
    torch.testing.assert_close(feats[1], feats[0])
    grads = {n: p.grad for n, p in plain.named_parameters()}
    for name, p in dense.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], msg=name)
    torch.testing.assert_close(dense.state_dict(), plain.state_dict())  # same running statistics


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dense", [True, False])
def test_merged_dilations_compute_the_same_tcn_and_gradients(stride, dense, monkeypatch):
    from trainer.models import infogcn
    from trainer.models.infogcn import MultiScaleTemporalConv

    monkeypatch.setattr(infogcn, "merge_dilations_here", lambda x: True)  # CUDA only otherwise
    torch.manual_seed(0)
    separate = MultiScaleTemporalConv(32, stride, dense_branches=dense).double().train()
    merged = MultiScaleTemporalConv(32, stride, dense_branches=dense, merged_dilations=True).double().train()
    merged.load_state_dict(separate.state_dict())
    for conv in separate.dilated:  # random biases and taps, so a misplaced tap cannot pass
        nn.init.normal_(conv.bias)
    merged.load_state_dict(separate.state_dict())
    x = torch.randn(3, 32, 11, 25, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for tcn in (separate, merged):
        xi = x.clone().requires_grad_()
        out = tcn(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        outs.append(out)
        grads.append((xi.grad, {n: p.grad for n, p in tcn.named_parameters()}))
    assert outs[0].shape == (3, 32, (11 + stride - 1) // stride, 25)
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(grads[1][0], grads[0][0])
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, msg=name)


def test_merged_dilated_weight_places_each_branch_on_its_taps():
    from trainer.models.infogcn import merged_dilated_weight

    convs = [nn.Conv2d(2, 2, (5, 1)), nn.Conv2d(2, 2, (5, 1))]
    weight, bias = merged_dilated_weight(convs, (1, 2))
    assert weight.shape == (4, 4, 9, 1) and bias.shape == (4,)
    torch.testing.assert_close(weight[:2, :2, 2:7], convs[0].weight)  # dilation 1: centre ± 2
    torch.testing.assert_close(weight[2:, 2:, 0::2], convs[1].weight)  # dilation 2: every other tap
    assert weight[:2, 2:].abs().sum() == 0 and weight[2:, :2].abs().sum() == 0  # no cross-branch terms
    assert weight[2:, 2:, 1::2].abs().sum() == 0 and weight[:2, :2, [0, 1, 7, 8]].abs().sum() == 0


def test_merged_dilations_keep_the_state_dict_and_are_the_training_default(ntu, monkeypatch):
    from trainer.models import infogcn

    graph = SkeletonGraph.from_spec(ntu)
    merged = InfoGCN(5, graph)
    separate = InfoGCN(5, graph, merged_dilations=False)
    assert merged.state_dict().keys() == separate.state_dict().keys()
    assert all(b.tcn.merged_dilations for b in merged.blocks)
    assert not any(b.tcn.merged_dilations for b in separate.blocks)
    calls = []
    real = infogcn.merged_dilated_weight
    monkeypatch.setattr(infogcn, "merged_dilated_weight", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 3, 8, 25, 2)
    merged(x)  # on the CPU: the separate convolutions (the zero taps' FLOPs cost time there)
    assert not calls
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # a tensor that says it is on CUDA, without a GPU
        on_gpu = torch.empty(1, device="cuda")
    assert not infogcn.merge_dilations_here(on_gpu)  # eager: the weight would cost launches per step
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # as inside the compiled step
    assert infogcn.merge_dilations_here(on_gpu)
    with torch.no_grad():  # eval / feature extraction on CUDA: separate too (faster forward)
        assert not infogcn.merge_dilations_here(on_gpu)


def test_stem_output_takes_the_autocast_dtype(ntu):
    # the fp32 positional embedding used to promote the stem's output, so data_bn and the identity
    # residual stream of blocks 1-3 ran in fp32 under autocast
    x = _inputs(ntu)[0]
    for switch, expected in ((True, torch.bfloat16), (False, torch.float32)):
        torch.manual_seed(0)
        model = InfoGCN(K, SkeletonGraph.from_spec(ntu), stem_in_compute_dtype=switch, base_channels=16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.stem(x).dtype == expected
            assert model.blocks[0](model.stem(x)).dtype == expected
    # without autocast both switches compute exactly the same function
    outs = []
    for switch in (True, False):
        torch.manual_seed(0)
        model = InfoGCN(
            K, SkeletonGraph.from_spec(ntu), stem_in_compute_dtype=switch, norm_in_input_dtype=switch
        )
        outs.append(model.eval()(x)["features"])
    assert torch.equal(outs[0], outs[1])


def test_layer_norm_in_the_input_dtype_keeps_no_fp32_copy_for_the_backward(monkeypatch):
    from trainer.models.infogcn import norm_in_input_dtype

    # CUDA's autocast runs layer_norm in fp32 on an fp32 copy of the input (CPU autocast does not):
    # make the module do that here, as bench/saved_activations.py does
    def cuda_policy(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return nn.functional.layer_norm(
                x.float(), self.normalized_shape, self.weight, self.bias, self.eps
            )

    monkeypatch.setattr(nn.LayerNorm, "forward", cuda_policy)
    torch.manual_seed(0)
    norm = nn.LayerNorm(32)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(6, 25, 32).to(torch.bfloat16).requires_grad_()

    def fp32_copies(fn) -> tuple[list, torch.Tensor]:  # noqa: ANN001
        saved = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.append((t.dtype, t.numel()))
            return t

        with (
            torch.autocast("cpu", dtype=torch.bfloat16),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        ):
            y = fn()
        return [s for s in saved if s[0] == torch.float32 and s[1] >= x.numel()], y

    copies, _ = fp32_copies(lambda: norm(x))
    assert copies  # the autocast policy keeps an fp32 copy of x
    copies, y = fp32_copies(lambda: norm_in_input_dtype(norm, x))
    assert not copies and y.dtype == torch.bfloat16
    reference = nn.functional.layer_norm(x.detach().double(), (32,), norm.weight.double(), norm.bias.double())
    assert float((y.detach().double() - reference).norm() / reference.norm()) < 1e-2
    y.float().square().sum().backward()
    assert x.grad is not None and norm.weight.grad is not None and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("frames", [7, 8])
def test_index_free_max_pool_has_max_pools_values_and_gradients(stride: int, frames: int):
    from trainer.models.infogcn import temporal_max_pool3

    torch.manual_seed(stride * 10 + frames)
    x = torch.relu(torch.randn(2, 3, frames, 5, dtype=torch.float64))  # ties at zero, as after ReLU
    x[0, 0, 2, 0] = x[0, 0, 3, 0] = 0.7  # and a positive tie: the first maximum takes the gradient
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, pooled = temporal_max_pool3(a, stride), nn.MaxPool2d((3, 1), (stride, 1), (1, 0))(b)
    assert torch.equal(ours, pooled)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    pooled.backward(grad)
    assert torch.equal(a.grad, b.grad)


def test_dense_gradient_is_the_identity_with_a_dense_channels_last_gradient():
    from trainer.models.infogcn import dense_gradient

    wide = torch.randn(2, 8, 5, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x = wide[:, :4].clone().requires_grad_()
    y = dense_gradient(x)
    torch.testing.assert_close(y, x)
    seen = []
    x.register_hook(lambda g: seen.append(g))
    upstream = torch.randn_like(wide).contiguous(memory_format=torch.channels_last)
    y.backward(upstream[:, :4])  # a strided channel slice, as the concatenation's backward hands on
    assert upstream[:, :4].is_contiguous(memory_format=torch.channels_last) is False
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.grad, upstream[:, :4])


@pytest.mark.parametrize("merged", [True, False])
def test_dense_conv_gradients_compute_the_same_tcn_and_gradients(merged, monkeypatch):
    from trainer.models import infogcn
    from trainer.models.infogcn import MultiScaleTemporalConv

    monkeypatch.setattr(infogcn, "merge_dilations_here", lambda x: merged)
    torch.manual_seed(0)
    plain = MultiScaleTemporalConv(32, 1).double().train()
    dense = MultiScaleTemporalConv(32, 1, dense_conv_gradients=True).double().train()
    dense.load_state_dict(plain.state_dict())
    x = torch.randn(3, 32, 11, 25, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    results = []
    for tcn in (plain, dense):
        xi = x.clone().requires_grad_()
        out = tcn(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out, xi.grad, {n: p.grad for n, p in tcn.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])
    for name, grad in results[0][2].items():
        torch.testing.assert_close(results[1][2][name], grad, msg=name)

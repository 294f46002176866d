"""Official InfoGCN checkpoints load through the key mapping and compute the official function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dataspec import load_spec
from trainer.models import create_model
from trainer.models.checkpoint_import import (
    CheckpointImportError,
    load_official_infogcn,
    map_official_infogcn_keys,
)
from trainer.models.crossglg import CrossGLG

V, M, K, H = 25, 2, 10, 3
BLOCKS = [(64, 64, 1), (64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1)]
BLOCKS += [(128, 256, 2), (256, 256, 1), (256, 256, 1)]


def _bn(prefix: str, c: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.rand(c, generator=gen) + 0.5,
        f"{prefix}.bias": torch.randn(c, generator=gen),
        f"{prefix}.running_mean": torch.randn(c, generator=gen),
        f"{prefix}.running_var": torch.rand(c, generator=gen) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def _conv(prefix: str, cout: int, cin: int, kt: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.randn(cout, cin, kt, 1, generator=gen) * 0.1,
        f"{prefix}.bias": torch.randn(cout, generator=gen) * 0.1,
    }


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the official InfoGCN key names and shapes (as a DataParallel checkpoint)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {
        "to_joint_embedding.weight": torch.randn(64, 3, generator=gen),
        "to_joint_embedding.bias": torch.randn(64, generator=gen),
        "pos_embedding": torch.randn(1, V, 64, generator=gen),
        **_bn("data_bn", M * V * 64, gen),
    }
    for i, (cin, cout, stride) in enumerate(BLOCKS, start=1):
        p = f"l{i}.agcn"
        sd[f"{p}.shared_topology"] = torch.rand(H, V, V, generator=gen)
        for h in range(H):
            sd.update(_conv(f"{p}.conv_d.{h}", cout, cin, 1, gen))
        if cin != cout:
            sd.update(_conv(f"{p}.down.0", cout, cin, 1, gen))
            sd.update(_bn(f"{p}.down.1", cout, gen))
        sd.update(_bn(f"{p}.bn", cout, gen))
        sd[f"{p}.attn.to_qk.weight"] = torch.randn(2 * H * (cin // 8), cin, generator=gen) * 0.2
        sd[f"{p}.attn.to_qk.bias"] = torch.randn(2 * H * (cin // 8), generator=gen) * 0.1
        sd[f"{p}.attn.ln.weight"] = torch.rand(cin, generator=gen) + 0.5
        sd[f"{p}.attn.ln.bias"] = torch.randn(cin, generator=gen) * 0.1
        bc, t = cout // 4, f"l{i}.tcn.branches"
        for b in range(4):
            sd.update(_conv(f"{t}.{b}.0", bc, cout, 1, gen))
            sd.update(_bn(f"{t}.{b}.1", bc, gen))
        for b in (0, 1):
            sd.update(_conv(f"{t}.{b}.3.conv", bc, bc, 5, gen))
            sd.update(_bn(f"{t}.{b}.3.bn", bc, gen))
        sd.update(_bn(f"{t}.2.4", bc, gen))
        if cin != cout or stride != 1:
            sd.update(_conv(f"l{i}.residual.conv", cout, cin, 1, gen))
            sd.update(_bn(f"l{i}.residual.bn", cout, gen))
    for name in ("fc", "fc_mu", "fc_logvar"):
        sd[f"{name}.weight"] = torch.randn(256, 256, generator=gen) * 0.05
        sd[f"{name}.bias"] = torch.randn(256, generator=gen) * 0.05
    sd["decoder.weight"] = torch.randn(K, 256, generator=gen) * 0.05
    sd["decoder.bias"] = torch.randn(K, generator=gen) * 0.05
    return {f"module.{k}": v for k, v in sd.items()}


def _official_block(sd: dict[str, torch.Tensor], i: int, x: torch.Tensor, stride: int) -> torch.Tensor:
    """Reference eval-mode forward of official block ``l{i}``, head by head and branch by branch."""

    def bn(p, y):
        return F.batch_norm(
            y, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"]
        )

    def conv(p, y, stride=1, dilation=1):
        w = sd[f"{p}.weight"]
        pad = dilation * (w.shape[2] - 1) // 2
        return F.conv2d(y, w, sd[f"{p}.bias"], stride=(stride, 1), padding=(pad, 0), dilation=(dilation, 1))

    a, c = f"l{i}.agcn", x.shape[1]
    y = F.layer_norm(x.permute(0, 2, 3, 1), (c,), sd[f"{a}.attn.ln.weight"], sd[f"{a}.attn.ln.bias"])
    q, k = F.linear(y, sd[f"{a}.attn.to_qk.weight"], sd[f"{a}.attn.to_qk.bias"]).chunk(2, dim=-1)
    d = q.shape[-1] // H
    out = 0
    for h in range(H):
        qh, kh = q[..., h * d : (h + 1) * d], k[..., h * d : (h + 1) * d]  # [n, t, v, d]
        attn = torch.softmax(qh @ kh.transpose(-1, -2) * d**-0.5, dim=-1) * sd[f"{a}.shared_topology"][h]
        z = (attn @ x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [n, c, t, v]
        out = out + conv(f"{a}.conv_d.{h}", z)
    down = bn(f"{a}.down.1", conv(f"{a}.down.0", x)) if f"{a}.down.0.weight" in sd else x
    g = F.relu(bn(f"{a}.bn", out) + down)
    br = f"l{i}.tcn.branches"
    outs = []
    for b, dil in ((0, 1), (1, 2)):
        e = F.relu(bn(f"{br}.{b}.1", conv(f"{br}.{b}.0", g)))
        outs.append(bn(f"{br}.{b}.3.bn", conv(f"{br}.{b}.3.conv", e, stride, dil)))
    e = F.relu(bn(f"{br}.2.1", conv(f"{br}.2.0", g)))
    outs.append(bn(f"{br}.2.4", F.max_pool2d(e, (3, 1), (stride, 1), (1, 0))))
    outs.append(bn(f"{br}.3.1", conv(f"{br}.3.0", g, stride)))
    tcn = F.relu(torch.cat(outs, 1))
    res = (
        bn(f"l{i}.residual.bn", conv(f"l{i}.residual.conv", x, stride))
        if f"l{i}.residual.conv.weight" in sd
        else x
    )
    return F.relu(tcn + res)


@pytest.fixture(scope="module")
def ntu():
    return load_spec("ntu120")


def test_official_keys_load_strictly_and_fuse_heads(ntu):
    sd = official_state_dict()
    model = create_model("infogcn", num_classes=K, spec=ntu)
    prior = model.z_prior.clone()
    load_official_infogcn(model, sd)
    own = model.state_dict()
    w = torch.cat([sd[f"module.l4.agcn.conv_d.{h}.weight"] for h in range(H)], dim=1)
    torch.testing.assert_close(own["blocks.3.gc.mix.weight"], w)
    torch.testing.assert_close(
        own["blocks.3.gc.mix.bias"], sum(sd[f"module.l4.agcn.conv_d.{h}.bias"] for h in range(H))
    )
    torch.testing.assert_close(own["pos_embed"], sd["module.pos_embedding"])
    torch.testing.assert_close(own["decoder.weight"], sd["module.decoder.weight"])
    torch.testing.assert_close(model.z_prior, prior)  # not in official checkpoints: kept
    mapped = map_official_infogcn_keys(sd)
    assert set(mapped) == set(own) - {"z_prior"}


@pytest.mark.parametrize("block", [0, 3, 8])
def test_imported_block_computes_the_official_function(block, ntu):
    sd = official_state_dict(seed=block)
    model = create_model("infogcn", num_classes=K, spec=ntu).eval()
    load_official_infogcn(model, sd)
    cin, _, stride = BLOCKS[block]
    x = torch.randn(2, cin, 8, V, generator=torch.Generator().manual_seed(1))
    plain = {k.removeprefix("module."): v for k, v in sd.items()}
    with torch.no_grad():
        ours = model.blocks[block](x)
        ref = _official_block(plain, block + 1, x, stride)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_imported_head_and_stem_match_official(ntu):
    sd = {k.removeprefix("module."): v for k, v in official_state_dict().items()}
    model = create_model("infogcn", num_classes=K, spec=ntu).eval()
    load_official_infogcn(model, sd)
    x = torch.randn(2, 3, 4, V, M)
    with torch.no_grad():
        stem = model.stem(x)
        rel = torch.as_tensor(model.rel_coords)
        e = rel @ x.permute(0, 4, 2, 3, 1)  # [n, m, t, v, c]
        e = F.linear(e, sd["to_joint_embedding.weight"], sd["to_joint_embedding.bias"]) + sd["pos_embedding"]
        flat = e.permute(0, 1, 3, 4, 2).reshape(2, M * V * 64, 4)  # (m v c) channel order
        flat = F.batch_norm(
            flat,
            sd["data_bn.running_mean"],
            sd["data_bn.running_var"],
            sd["data_bn.weight"],
            sd["data_bn.bias"],
        )
        ref = flat.view(2, M, V, 64, 4).permute(0, 1, 3, 4, 2).reshape(2 * M, 64, 4, V)
    torch.testing.assert_close(stem, ref, rtol=1e-4, atol=1e-4)


def test_crossglg_model_loads_its_encoder(ntu):
    model = CrossGLG("infogcn", K, ntu, g2l=True, l2g=True)
    load_official_infogcn(model, official_state_dict())
    torch.testing.assert_close(model.encoder.fc.weight, official_state_dict()["module.fc.weight"])


def test_wrong_checkpoints_fail_with_a_clear_message(ntu):
    model = create_model("infogcn", num_classes=K + 1, spec=ntu)
    with pytest.raises(CheckpointImportError, match="shapes do not match"):
        load_official_infogcn(model, official_state_dict())
    with pytest.raises(CheckpointImportError, match="unknown keys"):
        map_official_infogcn_keys({"backbone.conv1.weight": torch.zeros(1)})
    partial = {k: v for k, v in official_state_dict().items() if not k.startswith("module.l9.")}
    with pytest.raises(CheckpointImportError, match="missing blocks.8"):
        load_official_infogcn(create_model("infogcn", num_classes=K, spec=ntu), partial)


def test_checkpoint_file_round_trip(tmp_path, ntu):
    path = tmp_path / "official.pt"
    torch.save({"state_dict": official_state_dict()}, path)
    model = create_model("infogcn", num_classes=K, spec=ntu)
    load_official_infogcn(model, path)
    torch.testing.assert_close(model.fc_mu.bias, official_state_dict()["module.fc_mu.bias"])


def _per_branch_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict as written before the TCN's closing BNs were fused (one BN per branch)."""
    old: dict[str, torch.Tensor] = {}
    branch_bns = ["dilated.0.bn.", "dilated.1.bn.", "pool_bn.", "pointwise_bn."]
    for key, value in state.items():
        head, sep, kind = key.partition(".tcn.out_bn.")
        if sep:
            bc = state[f"{head}.tcn.out_bn.weight"].shape[0] // len(branch_bns)
            for i, part in enumerate(branch_bns):
                piece = value if kind == "num_batches_tracked" else value[i * bc : (i + 1) * bc]
                old[f"{head}.tcn.{part}{kind}"] = piece.clone()
        elif ".tcn.dilated." in key:
            stem, _, kind = key.rpartition(".")
            old[f"{stem}.conv.{kind}"] = value
        else:
            old[key] = value
    return old


def test_checkpoints_with_per_branch_tcn_bns_still_load(ntu):
    """Runs saved before the closing BNs were fused load into the new layout, same function."""
    source = create_model("infogcn", num_classes=K, spec=ntu)
    with torch.no_grad():
        for name, buf in source.named_buffers():
            if name.endswith("running_mean") or name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.normal_()
    state = source.state_dict()
    old = _per_branch_layout(state)
    assert "blocks.0.tcn.pool_bn.running_var" in old and "blocks.0.tcn.out_bn.weight" not in old
    target = create_model("infogcn", num_classes=K, spec=ntu)
    target.load_state_dict(old)  # strict
    for key, value in state.items():
        torch.testing.assert_close(target.state_dict()[key], value)
    x = torch.randn(2, 3, 16, V, M, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x)["logits"], source.eval()(x)["logits"])

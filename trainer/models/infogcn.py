"""InfoGCN (Chi et al., CVPR 2022, "InfoGCN: Representation Learning for Human Skeleton-based Action
Recognition"), written from the paper and the public description of the official model.

Facts used (paper / public description): input = k-th-ancestor relative coordinates (``I - A^k``
with the parent matrix A; k=1 by default); linear joint embedding to 64 channels + learned
positional embedding + BatchNorm over (person, joint, channel); nine encoding blocks
(64, 64, 64, 128/2, 128, 128, 256/2, 256, 256); each block = SA-GC (per-frame self-attention
topology over joints, 3 heads, query/key width C/8, multiplied by a shared learnable topology
initialised to the identity) followed by a multi-scale TCN (two kernel-5 branches with dilation 1
and 2, a max-pool branch and a 1×1 branch, C/4 channels each); the information-bottleneck head
(fc + ReLU, ``mu`` and ``log σ²`` layers, sampling ``z = mu + ε·exp(noise_ratio·logvar)`` in
training, a linear decoder to the classes, an orthogonal class prior ``z_prior`` for the MMD loss).
About 1.57 M parameters for 100 classes.

Our code differs in layout only, for speed: the per-head 1×1 convolutions of SA-GC are one
convolution over the concatenated heads, and the four 1×1 entry convolutions of the multi-scale
TCN are one convolution. :mod:`trainer.models.checkpoint_import` maps official weights onto it.

Memory layout: the features keep their logical shape ``[N*M, C, T, V]`` but live in
``torch.channels_last`` memory, i.e. ``[N*M, T, V, C]`` with channels contiguous. Every 1×1
convolution is then a plain GEMM over rows (:func:`pointwise`), every BatchNorm reduces contiguous
rows per channel, the temporal convolutions take cuDNN's NHWC path, and SA-GC needs no transpose of
the features (see :meth:`SelfAttentionGraphConv.forward`). With V = 25 innermost, as in NCHW, the
same ops ran badly shaped reductions and layout copies (docs/performance.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.base import BN_STATE_KEYS, SkeletonEncoder, TemporalConvBN, bn_init, conv_init
from trainer.models.batchnorm_kernels import bn_act
from trainer.models.frame_matmul import frame_matmul
from trainer.models.graph import SkeletonGraph
from trainer.models.layernorm_linear import layernorm_linear
from trainer.models.registry import register_encoder
from trainer.models.sagc_attention import sagc_attention
from trainer.models.sagc_epilogue import Epilogue, batchnorm_affine, uses_running_statistics
from trainer.models.sagc_inference import sagc_mixed_attention
from trainer.models.sagc_mixed_training import sagc_mixed_attention_training
from trainer.models.temporal_conv import dilated_branches, kernels_apply


def pointwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1×1 ``Conv2d`` (stride 1) applied as one GEMM over the rows of a channels-last tensor.

    ``x`` ``[B, C, T, V]`` (any memory format) → ``[B, C', T, V]`` in channels-last memory; the same
    numbers as ``conv(x)``, with the conv's own parameters (state dicts are unchanged).
    """
    rows = x.permute(0, 2, 3, 1)  # [B, T, V, C]: a free view when x is channels-last
    return F.linear(rows, conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)


def norm_in_input_dtype(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """``norm(x)`` in ``x``'s dtype, also under autocast (statistics are still accumulated in fp32).

    Autocast runs ``layer_norm`` in fp32: it casts a bf16 ``x`` to fp32, and autograd then keeps that
    fp32 copy for the backward — twice the bytes of ``x``, written in the forward and read in the
    backward, in every block (the output went on to a bf16 GEMM anyway). Here the parameters are
    cast instead, so the backward keeps the bf16 ``x`` the mixing GEMM keeps too.
    """
    if not torch.is_autocast_enabled(x.device.type):
        return norm(x)
    with torch.autocast(x.device.type, enabled=False):
        weight = None if norm.weight is None else norm.weight.to(x.dtype)
        bias = None if norm.bias is None else norm.bias.to(x.dtype)
        return F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)


# Std of the decoder's initial weights (see InfoGCN._init_head for why it is not InfoGCN's sqrt(2/K)).
DECODER_INIT_STD = 0.01

INFOGCN_CHANNELS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (64, 1),
    (64, 1),
    (128, 2),
    (128, 1),
    (128, 1),
    (256, 2),
    (256, 1),
    (256, 1),
)


class SelfAttentionGraphConv(nn.Module):
    """SA-GC: graph convolution whose topology is a per-frame self-attention map times a shared one.

    ``out = ReLU(BN(Σ_h W_h (S_h ⊙ A_h) x) + down(x))`` with ``S_h`` the softmax attention of head
    ``h`` computed per frame from the layer-normed joint features, ``A_h`` the shared learnable
    topology (identity at init) and ``W_h`` a 1×1 convolution. The heads are evaluated together: one
    GEMM mixes the channels for all heads, one per-frame product applies all topologies (see
    :meth:`forward`); ``fused=True`` (the default) computes the attention maps and that product in
    one kernel per frame, ``False`` keeps the maps in memory (the layer's reference evaluation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_joints: int,
        heads: int = 3,
        fused: bool = True,
        fused_mixing: bool = False,
        fused_epilogue: bool = True,
        norm_in_input_dtype: bool = True,
        fused_norm: bool = False,
        fused_mixing_train: bool = False,
    ):
        super().__init__()
        self.heads = heads
        # in training, the mixing inside the attention kernels (trainer/models/sagc_mixed_training.py)
        self.fused_mixing_train = fused_mixing_train
        # the LayerNorm inside the query/key projection's kernel (trainer/models/layernorm_linear.py)
        self.fused_norm = fused_norm
        # under autocast, LayerNorm in the features' dtype (no fp32 copy kept for the backward)
        self.norm_in_input_dtype = norm_in_input_dtype
        self.fused = fused  # one kernel for the attention path (trainer/models/sagc_attention.py)
        # without autograd, the channel mixing inside that kernel too (trainer/models/sagc_inference.py)
        self.fused_mixing = fused_mixing
        # in eval, BN + shortcut + ReLU + joint weight inside that kernel (trainer/models/sagc_epilogue.py)
        self.fused_epilogue = fused_epilogue
        self.qk_dim = max(in_channels // 8, 1)
        self.scale = self.qk_dim**-0.5
        self.attn_norm = nn.LayerNorm(in_channels)
        self.to_qk = nn.Linear(in_channels, 2 * heads * self.qk_dim)
        self.shared_topology = nn.Parameter(torch.eye(num_joints).repeat(heads, 1, 1))
        self.mix = nn.Conv2d(heads * in_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels)
        if in_channels != out_channels:
            self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        else:
            self.down = nn.Identity()
        self._init_weights(in_channels, out_channels)

    def _init_weights(self, in_channels: int, out_channels: int) -> None:
        # Official init: normal(0, 1) query/key weights; each head's 1×1 conv N(0, 2/(out·in·heads));
        # the output BN starts at 1e-6 so every block begins close to its shortcut.
        nn.init.normal_(self.to_qk.weight, 0.0, 1.0)
        nn.init.normal_(self.mix.weight, 0.0, math.sqrt(2.0 / (out_channels * in_channels * self.heads)))
        nn.init.zeros_(self.mix.bias)
        bn_init(self.bn, 1e-6)
        if isinstance(self.down, nn.Sequential):
            conv_init(self.down[0])
            bn_init(self.down[1], 1.0)

    def norm(self, rows: Tensor) -> Tensor:
        """The attention's LayerNorm of the feature rows (:func:`norm_in_input_dtype` where chosen)."""
        return norm_in_input_dtype(self.attn_norm, rows) if self.norm_in_input_dtype else self.attn_norm(rows)

    def project_qk(self, rows: Tensor) -> Tensor:
        """Queries and keys ``[..., 2·H·d]`` of the layer-normed feature rows ``[..., C]``.

        With ``fused_norm`` (and the LayerNorm in the rows' dtype) one op normalises and projects
        (:func:`layernorm_linear`: one kernel per direction on CUDA, the normalised rows never
        written in the forward); the same function as ``to_qk(norm(rows))`` up to rounding.
        """
        device = rows.device.type
        same_dtype = not torch.is_autocast_enabled(device) or torch.get_autocast_dtype(device) == rows.dtype
        if self.fused_norm and self.norm_in_input_dtype and same_dtype:
            norm, proj = self.attn_norm, self.to_qk
            return layernorm_linear(rows, norm.weight, norm.bias, proj.weight, proj.bias, norm.eps)
        return self.to_qk(self.norm(rows))

    def attention(self, x: Tensor) -> Tensor:
        """Per-frame joint attention ``[B, T, heads, V, V]`` from features ``[B, C, T, V]``."""
        y = self.project_qk(x.permute(0, 2, 3, 1))  # [B, T, V, 2·H·d]
        q, k = y.unflatten(-1, (2, self.heads, self.qk_dim)).permute(3, 0, 1, 4, 2, 5)  # [B, T, H, V, d]
        b, t, h, v, d = q.shape
        # Per-frame [V, d] @ [d, V] products: on CUDA the Triton kernels (V = 25, d = C/8 are too
        # unaligned for cuBLAS's fast kernels), elsewhere torch.bmm.
        logits = frame_matmul(q.reshape(b * t * h, v, d), k.reshape(b * t * h, v, d).transpose(1, 2))
        return torch.softmax(logits.view(b, t, h, v, v) * self.scale, dim=-1)

    def forward(self, x: Tensor, joint_weight: Tensor | None = None) -> Tensor:
        """``[B, C, T, V]`` → ``[B, C', T, V]`` (channels-last); ``joint_weight`` ``[B, 1, 1, V]``
        multiplies the output (CrossGLG's re-weighting after the spatial step)."""
        b, c, t, v = x.shape
        h, out = self.heads, self.bn.num_features
        # Σ_h W_h (A_h x) = Σ_h A_h (x W_hᵀ): the channel mixing acts on C and the topology on V, so
        # they commute. Mixing first is one GEMM over the channels-last rows giving [B, T, V, H·C']
        # laid out (joint j, head h) per row — exactly the [(j, h), C'] operand of one batched
        # product with the topology arranged [i, (j, h)]. No copy of the features, only of the
        # (smaller) attention maps.
        rows = x.permute(0, 2, 3, 1)  # [B, T, V, C]: a free view of the channels-last features
        weight = self.mix.weight.view(out, h, c).transpose(0, 1)  # [H, C', C]
        qk = self.project_qk(rows).reshape(b * t, v, -1) if self.fused else None
        shortcut = (
            x if isinstance(self.down, nn.Identity) else bn_act(self.down[1], pointwise(self.down[0], x))
        )
        # Eval: the BatchNorm, shortcut, ReLU and joint weight inside the attention kernel (z is never
        # written; trainer/models/sagc_epilogue.py).
        epilogue = (
            self._eval_epilogue(shortcut, joint_weight, qk.dtype)
            if qk is not None and self.fused_epilogue and not torch.is_grad_enabled()
            else None
        )
        training = torch.is_grad_enabled()
        if qk is not None and (self.fused_mixing_train if training else self.fused_mixing):
            # The mixing inside the attention kernels: the 3×-wide y is never written (in training
            # not kept either; the backward kernel recomputes what it needs). qk's dtype is the
            # compute dtype (autocast's, as F.linear would cast to below).
            rows, weight = rows.reshape(b * t, v, c).to(qk.dtype), weight.to(qk.dtype)
            z = (
                sagc_mixed_attention_training(qk, self.shared_topology, rows, weight, h, self.scale)
                if training  # (no eval epilogue with autograd on)
                else sagc_mixed_attention(qk, self.shared_topology, rows, weight, h, self.scale, epilogue)
            )
        else:
            y = F.linear(rows, weight.reshape(h * out, c)).reshape(b * t, v * h, out)  # [B·T, (j, h), C']
            if qk is not None:
                z = sagc_attention(qk, self.shared_topology, y, h, self.scale, epilogue)
            else:
                topology = self.attention(x) * self.shared_topology  # [B, T, H, V, V]
                a = topology.permute(0, 1, 3, 4, 2).reshape(b * t, v, v * h).to(y.dtype)  # [B·T, i, (j, h)]
                z = frame_matmul(a, y)
        z = z.view(b, t, v, out).permute(0, 3, 1, 2)  # [B, C', T, V], channels-last
        if epilogue is not None:
            return z
        # relu(bn(z + mix bias) + shortcut); bn_act fuses it where the BatchNorm kernels are on
        y = bn_act(self.bn, z, residual=shortcut, outer_relu=True, input_bias=self.mix.bias)
        return y if joint_weight is None else y * joint_weight

    def _eval_epilogue(
        self, shortcut: Tensor, joint_weight: Tensor | None, dtype: torch.dtype
    ) -> Epilogue | None:
        """The layer's tail as a kernel epilogue, or None where the BatchNorm uses batch statistics."""
        if not uses_running_statistics(self.bn):
            return None
        b, out, t, v = shortcut.shape
        scale, shift = batchnorm_affine(self.bn, self.mix.bias)
        residual = shortcut.to(dtype).permute(0, 2, 3, 1).reshape(b * t, v, out)  # rows of the shortcut
        weights = None if joint_weight is None else joint_weight.to(dtype).reshape(b, v)
        return Epilogue(scale, shift, residual, weights, frames=t)


def temporal_max_pool3(x: Tensor, stride: int = 1) -> Tensor:
    """``nn.MaxPool2d((3, 1), (stride, 1), (1, 0))`` over time as comparisons of three shifted views.

    The same values and the same gradient (the first maximum of each window takes it, NaN wins, as
    in PyTorch's kernels), but autograd needs no argmax indices: the comparisons are recomputed from
    ``x`` where the backward needs them, instead of int64 indices written in the forward and read in
    the backward (in InfoGCN's training step those indices were 9 of ~176 saved activation units).
    """
    t = x.shape[2]
    padded = F.pad(x, (0, 0, 1, 1), value=float("-inf"))
    best = padded[:, :, 0:t:stride]
    for offset in (1, 2):
        other = padded[:, :, offset : t + offset : stride]
        best = torch.where((other > best) | other.isnan(), other, best)
    return best


def merged_dilated_weight(convs: Sequence[nn.Conv2d], dilations: Sequence[int]) -> tuple[Tensor, Tensor]:
    """One undilated ``Conv2d`` weight and bias computing all the dilated branches at once.

    Branch ``i`` (``C_b → C_b`` channels, kernel ``k`` over time, dilation ``d_i``) becomes the
    ``i``-th diagonal block of a ``[n·C_b, n·C_b, (k-1)·max(d)+1, 1]`` weight whose taps sit ``d_i``
    apart around the centre; everything else is zero. With padding ``(k-1)·max(d)/2`` the one
    convolution gives the concatenated branch outputs exactly (the zero taps add exact zeros) and
    its weight gradient reaches only the real taps. It multiplies zeros — 3.6× the two branches'
    FLOPs at k = 5, d = (1, 2) — in exchange for one launch per direction with twice the output
    columns, for convolutions whose cuDNN kernels ran at 22–30% of their memory floor (H100,
    2026-12-07, ``bench/op_roofline.py``).
    """
    first = convs[0]
    bc, k = first.out_channels, first.kernel_size[0]
    span = (k - 1) * max(dilations) + 1
    centre = (span - 1) // 2
    n = len(convs) * bc
    weight = first.weight.new_zeros(n, n, span, 1)
    for i, (conv, d) in enumerate(zip(convs, dilations, strict=True)):
        first_tap = centre - d * (k - 1) // 2
        block = slice(i * bc, (i + 1) * bc)
        weight[block, block, first_tap : first_tap + d * (k - 1) + 1 : d] = conv.weight
    bias = torch.cat([conv.bias for conv in convs])
    return weight, bias


def merge_dilations_here(x: Tensor) -> bool:
    """Where :func:`merged_dilated_weight` pays: with autograd on (its backward gains, its forward
    loses: H100, 2026-12-07), on CUDA, in a compiled step (where it was measured; there the weight is
    built inside the graph, while eagerly it costs a few small launches per block and step). On the
    CPU the zero taps' FLOPs cost time: eager fp32 forward + backward of the TCN at batch 8, one
    thread, 2026-12-07: 50.4 / 53.6 / 64.2 ms merged against 47.5 / 44.3 / 50.4 separate at
    C = 64 / 128 / 256."""
    return torch.is_grad_enabled() and x.device.type == "cuda" and torch.compiler.is_compiling()


class _DenseGradient(torch.autograd.Function):
    """Identity whose backward hands on the incoming gradient as a dense channels-last tensor."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        return grad.contiguous(memory_format=torch.channels_last)


def dense_gradient(x: Tensor) -> Tensor:
    """``x``, whose gradient reaches the op that made it as a dense channels-last copy.

    The TCN's branch outputs are concatenated, so in the backward each branch's convolution gets a
    channel slice of the concatenation's gradient; where Inductor writes that gradient as one wide
    buffer the slice is strided, and cuDNN copies it to a dense tensor before its kernels (ATen
    copies outside the compiled kernels). Through this op the copy is in the graph instead, where
    Inductor can write it from the kernel that computes the gradient. The same values and gradients.
    """
    return _DenseGradient.apply(x)


class MultiScaleTemporalConv(nn.Module):
    """Multi-scale TCN: four branches of ``C/4`` channels, concatenated, then ReLU.

    Branches: 1×1 conv + BN + ReLU followed by a kernel-5 temporal conv + BN with dilation 1 and 2;
    1×1 conv + BN + ReLU + max-pool(3) + BN; strided 1×1 conv + BN. The four 1×1 entry convolutions
    are a single convolution here (the last branch is subsampled after it, which equals a strided 1×1),
    and so are the four closing BatchNorms: BatchNorm is per channel, so one BN over the concatenated
    branches computes the same function as one BN per branch, with one statistics pass instead of four.
    """

    def __init__(
        self,
        channels: int,
        stride: int = 1,
        kernel_size: int = 5,
        dilations: Sequence[int] = (1, 2),
        dense_branches: bool = True,
        index_free_pool: bool = True,
        merged_dilations: bool = True,
        dense_conv_gradients: bool = False,
        triton_dilations: bool = True,
        triton_dilations_eval: bool = False,
    ):
        super().__init__()
        # triton_dilations(_eval): the dilated branches as one Triton op (trainer/models/temporal_conv.py)
        # where its kernels apply, with autograd on (training) / off (eval, feature extraction)
        self.triton_dilations = triton_dilations
        self.triton_dilations_eval = triton_dilations_eval
        # merged_dilations: the dilated branches as one convolution where it pays (merge_dilations_here)
        self.merged_dilations = merged_dilations
        # dense_conv_gradients: the dilated convolutions' output gradients made dense in the graph
        # (dense_gradient) instead of copied by cuDNN
        self.dense_conv_gradients = dense_conv_gradients
        # index_free_pool: the max-pool branch as comparisons of three shifted views (temporal_max_pool3),
        # so the backward needs no int64 argmax indices (8 bytes per pooled element, written and read)
        self.index_free_pool = index_free_pool
        # dense_branches: hand the dilated convolutions dense copies of their channel slices, made in
        # the graph (Inductor can write them from the BN+ReLU kernel) instead of by the convolution
        # (the eval profile of 2026-12-04: 18 strided ATen copies, 0.74 of 11.35 ms per batch of 256).
        self.dense_branches = dense_branches
        n_branches = len(dilations) + 2
        if channels % n_branches:
            raise ValueError(f"multi-scale TCN channels ({channels}) must be a multiple of {n_branches}")
        self.branch_channels = bc = channels // n_branches
        self.stride = stride
        self.n_activated = (len(dilations) + 1) * bc  # channels that go through BN + ReLU before their branch
        self.expand = nn.Conv2d(channels, n_branches * bc, 1)
        self.expand_bn = nn.BatchNorm2d(self.n_activated)
        self.dilated = nn.ModuleList(
            nn.Conv2d(
                bc,
                bc,
                kernel_size=(kernel_size, 1),
                stride=(stride, 1),
                padding=(d * (kernel_size - 1) // 2, 0),
                dilation=(d, 1),
            )
            for d in dilations
        )
        self.dilations = tuple(dilations)
        self.pool = nn.MaxPool2d(kernel_size=(3, 1), stride=(stride, 1), padding=(1, 0))
        self.out_bn = nn.BatchNorm2d(n_branches * bc)  # channels: dilated branches, pool, pointwise
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                conv_init(m)
            elif isinstance(m, nn.BatchNorm2d):
                bn_init(m, 1.0)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Checkpoints written before the closing BNs were fused (2026-11-22) hold one BN per branch
        # (dilated.<d>.bn, pool_bn, pointwise_bn) and dilated.<d>.conv: rewrite them in place into
        # this layout, so older runs still load and evaluate to the same function.
        if prefix + "out_bn.weight" not in state_dict and prefix + "pool_bn.weight" in state_dict:
            parts = [f"dilated.{d}.bn." for d in range(len(self.dilated))] + ["pool_bn.", "pointwise_bn."]
            for kind in BN_STATE_KEYS:
                values = [state_dict.pop(prefix + part + kind, None) for part in parts]
                if any(v is None for v in values):
                    continue  # left missing: load_state_dict names it
                fused = values[0] if kind == "num_batches_tracked" else torch.cat(values, 0)
                state_dict[prefix + "out_bn." + kind] = fused
            for d in range(len(self.dilated)):
                for kind in ("weight", "bias"):
                    old = f"{prefix}dilated.{d}.conv.{kind}"
                    if old in state_dict:
                        state_dict[f"{prefix}dilated.{d}.{kind}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``relu(out_bn(branches(x)))``; with ``residual``: ``relu(that + residual)`` (the block's add)."""
        y = pointwise(self.expand, x)
        active = bn_act(self.expand_bn, y[:, : self.n_activated], inner_relu=True)
        parts = active.split(self.branch_channels, dim=1)
        n_dilated = len(self.dilated) * self.branch_channels
        use_op = self.triton_dilations if torch.is_grad_enabled() else self.triton_dilations_eval
        by_op = use_op and kernels_apply(active, self.branch_channels)
        if by_op:
            # both branches in one op reading the channel slice in place (no dense copy, no zero taps)
            weights, biases = [c.weight for c in self.dilated], [c.bias for c in self.dilated]
            outs = [dilated_branches(active[:, :n_dilated], weights, biases, self.dilations, self.stride)]
        elif self.merged_dilations and merge_dilations_here(active):
            dilated_in = active[:, :n_dilated]
            if self.dense_branches:
                dilated_in = dilated_in.contiguous(memory_format=torch.channels_last)
            weight, bias = merged_dilated_weight(self.dilated, self.dilations)
            pad = (weight.shape[2] - 1) // 2
            outs = [F.conv2d(dilated_in, weight, bias, stride=(self.stride, 1), padding=(pad, 0))]
        else:
            inputs = (
                [p.contiguous(memory_format=torch.channels_last) for p in parts[:-1]]
                if self.dense_branches
                else parts
            )
            outs = [conv(part) for conv, part in zip(self.dilated, inputs[: len(self.dilated)], strict=True)]
        if self.dense_conv_gradients and torch.is_grad_enabled() and not by_op:  # the op reads strided ones
            outs = [dense_gradient(out) for out in outs]
        outs.append(
            temporal_max_pool3(parts[-1], self.stride) if self.index_free_pool else self.pool(parts[-1])
        )
        outs.append(y[:, self.n_activated :, :: self.stride])
        cat = torch.cat(outs, dim=1)
        return bn_act(self.out_bn, cat, residual=residual, inner_relu=True, outer_relu=residual is not None)


class InfoGCNBlock(nn.Module):
    """Encoding block: SA-GC → (optional joint re-weighting) → multi-scale TCN, plus a shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_joints: int,
        stride: int = 1,
        heads: int = 3,
        dense_branches: bool = True,
        index_free_pool: bool = True,
        merged_dilations: bool = True,
        dense_conv_gradients: bool = False,
        triton_dilations: bool = True,
        triton_dilations_eval: bool = False,
        **gc_options: bool,
    ):
        """``gc_options``: :class:`SelfAttentionGraphConv`'s switches (``fused``, ``fused_mixing``,
        ``fused_epilogue``, ``norm_in_input_dtype``, ``fused_norm``, ``fused_mixing_train``)."""
        super().__init__()
        self.out_channels = out_channels
        self.gc = SelfAttentionGraphConv(in_channels, out_channels, num_joints, heads, **gc_options)
        self.tcn = MultiScaleTemporalConv(
            out_channels,
            stride,
            dense_branches=dense_branches,
            index_free_pool=index_free_pool,
            merged_dilations=merged_dilations,
            dense_conv_gradients=dense_conv_gradients,
            triton_dilations=triton_dilations,
            triton_dilations_eval=triton_dilations_eval,
        )
        if in_channels == out_channels and stride == 1:
            self.residual: nn.Module = nn.Identity()
        else:
            self.residual = TemporalConvBN(in_channels, out_channels, kernel_size=1, stride=stride)
            conv_init(self.residual.conv)
            bn_init(self.residual.bn, 1.0)

    def forward(self, x: Tensor, joint_weight: Tensor | None = None) -> Tensor:
        y = self.gc(x, joint_weight)  # the joint weight multiplies SA-GC's output
        return self.tcn(y, residual=self.shortcut(x))  # relu(tcn(y) + shortcut(x))

    def shortcut(self, x: Tensor) -> Tensor:
        """The block's residual path: identity, or a strided 1×1 conv + BN as one GEMM."""
        if isinstance(self.residual, nn.Identity):
            return x
        conv, bn = self.residual.conv, self.residual.bn
        return bn_act(bn, pointwise(conv, x[:, :, :: conv.stride[0]]))


class InfoGCN(SkeletonEncoder):
    """InfoGCN encoder with its information-bottleneck head.

    Args:
        num_classes: classes of the decoder (and rows of the class prior ``z_prior``).
        graph: the skeleton graph (joints, child→parent edges).
        in_channels: coordinates per joint (3).
        num_persons: persons per sample M (the data BatchNorm has ``M·V·64`` channels).
        k: order of the ancestor in the relative-coordinate input (1: parent).
        heads: SA-GC heads (3).
        base_channels: width of the first blocks (64); the others are 2× and 4×.
        noise_ratio: scale of ``logvar`` in the training-time sampling of ``z`` (official default 0.5).
        dropout: dropout on the head's hidden feature.
        prior_gain: gain of the orthogonal class prior (official default 3).
        fused_attention: compute each SA-GC's attention path with the fused per-frame kernel
            (:mod:`trainer.models.sagc_attention`; same function, +11.6% training samples/s on
            an H200 at batch 128 before its launches were tuned); ``False``: the unfused
            evaluation with the maps in memory.
        dense_branches: the multi-scale TCN's dilated convolutions take dense copies of their channel
            slices made in the graph (same function; H200, batch 128, 2026-12-04: 5,402 against
            5,272 training samples/s with ``False``, the strided slices copied by the convolutions).
        fused_mixing: without autograd (eval, feature extraction), SA-GC's channel mixing runs inside
            its attention kernel, so the 3×-wide mixed features are never written
            (:mod:`trainer.models.sagc_inference`; same function; slower at its untuned launch: H100,
            eval batch 256, 2026-12-06, with the epilogue on: 17,768 against 20,822 samples/s).
        fused_epilogue: in eval (running statistics, no autograd), SA-GC's BatchNorm, shortcut, ReLU and
            joint weight are applied inside its attention kernel, so its pre-norm output is never
            written (:mod:`trainer.models.sagc_epilogue`; same function up to rounding; H100, eval
            batch 256, 2026-12-06: 20,822 and 20,847 against 20,458 and 20,480 samples/s without it,
            two calls, +1.8%). On by default; training is unchanged.
        norm_in_input_dtype: under autocast, SA-GC's LayerNorm runs in the features' dtype (fp32
            statistics inside) instead of autocast's fp32, whose fp32 copy of the input autograd kept
            for the backward (see :func:`norm_in_input_dtype`).
        fused_norm: SA-GC's LayerNorm and query/key projection as one op, one Triton kernel per
            direction on CUDA (:mod:`trainer.models.layernorm_linear`): the normalised rows are not
            written in the forward, and the backward applies the LayerNorm backward to the projection's
            row gradient in registers (same function up to rounding; needs ``norm_in_input_dtype``).
            Off: slower in the model although faster alone. H100, 2026-12-07, one call: training
            4,648 against 4,779 samples/s at batch 128 (-2.7%), eval 22,066 against 22,262 at 256
            (-0.9%), while the op alone was as fast or faster than Inductor's LayerNorm + cuBLAS at
            every block width (``bench/layernorm_linear_bench.py``: forward 1.2-4.6x, forward +
            backward 3.52 against 4.04 ms per step). In the model Inductor fuses the LayerNorm into
            the kernel that writes the previous block's output and its backward into the sum of the
            block input's gradients; the opaque op undoes both fusions (docs/performance.md,
            "Session 11").
        fused_mixing_train: with autograd (training), SA-GC's channel mixing runs inside its attention
            kernels, forward and backward (:mod:`trainer.models.sagc_mixed_training`): the 3×-wide
            mixed features are neither written nor kept for the backward, which recomputes what it
            needs per frame (same function up to rounding). Off: slower. By the floors the mixing
            GEMM and attention kernels' 14.0 GB per training step of 128 become 7.0 GB, but on an
            H100 (2026-12-07, bf16 within 3e-3 of float64) the op took 1.53 against 0.74 ms at
            64 → 64 with its tuned launch and the nine blocks 38.6 against 26.7 ms.
        stem_in_compute_dtype: the stem's output takes the compute dtype (the fp32 positional
            embedding is cast) instead of being promoted to fp32, which ran the data BatchNorm and the
            first three blocks' residual stream in fp32 under autocast, forward and backward.
        index_free_pool: the multi-scale TCN's max-pool branch without argmax indices
            (:func:`temporal_max_pool3`: the same values and gradients; no int64 indices kept for the
            backward — 9 activation units of the step's ~176 on the CPU trace below).
        merged_dilations: with autograd on (training) in a compiled step on CUDA, the multi-scale
            TCN's dilated branches run as one undilated convolution with a block-diagonal,
            zero-padded weight built from theirs (:func:`merged_dilated_weight`; same function and
            state dict). H100, batch 128,
            2026-12-07: training 4,862 against 4,804 samples/s (+1.2%, one call); the nine blocks
            alone (``bench/block_throughput.py``) 25.45 against 26.11 ms fwd + bwd, their forward
            7.26 against 7.16 ms — the backward gains, the forward loses (3.6× the branches' FLOPs),
            and eval with it merged measured 22,152 against 22,352: so without autograd the branches
            stay separate, and on the CPU too (:func:`merge_dilations_here`).
        dense_conv_gradients: in training, the multi-scale TCN's dilated convolutions get their output
            gradient as a dense channels-last tensor made in the graph (:func:`dense_gradient`), not a
            strided channel slice of the concatenation's gradient that cuDNN copies (same function).
            Untimed on a GPU, off.
        triton_dilations: the multi-scale TCN's dilated branches as one Triton implicit-GEMM op per
            direction (:mod:`trainer.models.temporal_conv`: real taps only, the channel slice and the
            incoming gradient read through their row strides) with autograd on, where its kernels
            apply (bf16/fp16 CUDA); same function. On by default (it replaces the merged convolution
            of ``merged_dilations`` in training): H100, 2026-12-07, CrossGLG training 5,024 against
            4,808 samples/s at batch 128 and 4,456 against 4,245 at batch 64 (+4.5%, +5.0%; two
            calls, either order), numerics against fp32 eager as before (loss 4.4e-5, gradients
            1.5e-2). ``triton_dilations_eval``: the same without autograd (eval, feature
            extraction); off: eval at batch 256 measured 17,300 against 22,215 samples/s (-22%) in
            the same call, cause not found.
        Both dtype switches (2026-12-06) remove fp32 traffic: on the CPU under bf16 autocast, with
        layer_norm in fp32 as CUDA's autocast runs it, the fp32 activations kept for the backward
        of a CrossGLG training step fell from 27.1 to 0.7 activation-sized units (bf16 139.8 → 141.0;
        ``bench/saved_activations.py``). With ``index_free_pool``, on an H100 in one call (2026-12-06,
        batch 128 / eval 256): training 4,753 against 4,509 samples/s with all three off (+5.4%),
        feature extraction 22,240 against 20,611 (+7.9%). ``False`` restores the old behaviour.
    """

    def __init__(
        self,
        num_classes: int,
        graph: SkeletonGraph,
        in_channels: int = 3,
        num_persons: int = 2,
        k: int = 1,
        heads: int = 3,
        base_channels: int = 64,
        noise_ratio: float = 0.5,
        dropout: float = 0.0,
        prior_gain: float = 3.0,
        fused_attention: bool = True,
        dense_branches: bool = True,
        fused_mixing: bool = False,
        fused_epilogue: bool = True,
        norm_in_input_dtype: bool = True,
        fused_norm: bool = False,
        fused_mixing_train: bool = False,
        stem_in_compute_dtype: bool = True,
        index_free_pool: bool = True,
        merged_dilations: bool = True,
        dense_conv_gradients: bool = False,
        triton_dilations: bool = True,
        triton_dilations_eval: bool = False,
    ):
        super().__init__()
        v = graph.num_joints
        self.stem_in_compute_dtype = stem_in_compute_dtype
        gc_options = {
            "fused": fused_attention,
            "fused_mixing": fused_mixing,
            "fused_epilogue": fused_epilogue,
            "norm_in_input_dtype": norm_in_input_dtype,
            "fused_norm": fused_norm,
            "fused_mixing_train": fused_mixing_train,
        }
        self.num_classes = num_classes
        self.num_joints = v
        self.num_persons = num_persons
        self.noise_ratio = noise_ratio
        rel = torch.as_tensor(graph.relative_coordinate_matrix(k), dtype=torch.float32)
        self.register_buffer("rel_coords", rel, persistent=False)  # derived from the graph, not learned
        self.joint_embed = nn.Linear(in_channels, base_channels)
        self.pos_embed = nn.Parameter(torch.randn(1, v, base_channels))
        self.data_bn = nn.BatchNorm1d(num_persons * v * base_channels)
        blocks, c_in = [], base_channels
        for mult, stride in INFOGCN_CHANNELS:
            c_out = mult * base_channels // 64
            block = InfoGCNBlock(
                c_in,
                c_out,
                v,
                stride,
                heads,
                dense_branches,
                index_free_pool,
                merged_dilations,
                dense_conv_gradients,
                triton_dilations,
                triton_dilations_eval,
                **gc_options,
            )
            blocks.append(block)
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = c_in
        self.fc = nn.Linear(c_in, c_in)
        self.fc_mu = nn.Linear(c_in, c_in)
        self.fc_logvar = nn.Linear(c_in, c_in)
        self.decoder = nn.Linear(c_in, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("z_prior", torch.empty(num_classes, c_in))
        self._init_head(prior_gain)

    def _init_head(self, prior_gain: float) -> None:
        # Official init (public code): xavier-uniform (ReLU gain) fc / fc_mu / fc_logvar, decoder
        # N(0, 2/K), orthogonal z_prior with gain 3, data BN weight 1. Two parts are changed because
        # they made the initial loss explode for small K (NW-UCLA, K = 7: logits std ≈ 31, CE 15–37
        # instead of ln 7 = 1.95, and 4 of 20 runs never left chance):
        # - the pooled features are post-ReLU (mean ≈ 1.2), so the xavier fc_logvar gives log σ² up
        #   to ≈ 10 and the training-time noise std exp(0.5 · 10) ≈ 150 (clamped to 100). fc_logvar
        #   starts at zero instead: log σ² = 0, i.e. unit noise, the N(0, I) of the bottleneck;
        # - the decoder std sqrt(2/K) grows as K shrinks (0.53 for K = 7, times 16·rms(z) over 256
        #   dims). It starts small instead, N(0, 0.01²) with zero bias (the usual small classifier-
        #   head init, e.g. ConvNeXt/timm's scaled head): logits std ≈ 0.3, initial CE ≈ ln K for
        #   every K, and unlike an all-zero decoder the shared head still passes gradient to both
        #   branches at step one.
        # z_prior keeps the official gain: it is the MMD target, not part of the logits.
        gain = nn.init.calculate_gain("relu")
        for layer in (self.fc, self.fc_mu):
            nn.init.xavier_uniform_(layer.weight, gain=gain)
        nn.init.zeros_(self.fc_logvar.weight)
        nn.init.zeros_(self.fc_logvar.bias)
        nn.init.normal_(self.decoder.weight, 0.0, DECODER_INIT_STD)
        nn.init.zeros_(self.decoder.bias)
        nn.init.orthogonal_(self.z_prior, gain=prior_gain)
        bn_init(self.data_bn, 1.0)

    def stem(self, x: Tensor) -> Tensor:
        n, _, t, v, m = x.shape
        x = x.permute(0, 2, 4, 3, 1)  # [N, T, M, V, C]
        x = torch.matmul(self.rel_coords.to(x.dtype), x)  # each joint minus its k-th ancestor
        x = self.joint_embed(x)  # [N, T, M, V, C0], in the compute dtype (bf16 under autocast)
        # The fp32 parameter is cast, not the sum promoted: otherwise data_bn and the residual stream of
        # the first blocks (identity shortcuts) ran in fp32 under autocast, forward and backward.
        x = x + self.pos_embed.to(x.dtype) if self.stem_in_compute_dtype else x + self.pos_embed
        c0 = x.shape[-1]
        # data BN normalises each (person, joint, channel) over batch and time: rows (n, t),
        # channels (m, v, c) — the same channel order as the official [N, M·V·C0, T] BatchNorm1d.
        x = self.data_bn(x.reshape(n * t, m * v * c0)).view(n, t, m, v, c0)
        # → [N·M, T, V, C0] rows, exposed as [N·M, C0, T, V] in channels-last memory
        return x.transpose(1, 2).reshape(n * m, t, v, c0).permute(0, 3, 1, 2)

    def head(self, pooled: Tensor) -> dict[str, Tensor]:
        hidden = self.dropout(F.relu(self.fc(pooled)))
        mu, logvar = self.fc_mu(hidden), self.fc_logvar(hidden)
        if self.training:
            std = torch.exp(self.noise_ratio * logvar).clamp(max=100.0)
            z = mu + torch.randn_like(std) * std
        else:
            z = mu
        return {"logits": self.decoder(z), "z": z, "z_mu": mu, "z_logvar": logvar, "z_prior": self.z_prior}


register_encoder("infogcn", InfoGCN)

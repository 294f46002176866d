"""Training-mode BatchNorm fused with its ReLU / residual add, as Triton kernels (opt-in candidate).

Half of the compiled training step's kernel time is in Inductor kernels built around BatchNorm
(docs/performance.md). InfoGCN's BatchNorms come in four patterns, all covered by one op::

    out = relu_outer( relu_inner( BN(x) ) + residual )        (each part optional)

    SA-GC output:            relu(BN(z) + shortcut)
    TCN entry branches:      relu(BN(y))
    TCN exit + block add:    relu(relu(BN(cat)) + block shortcut)
    shortcut convolutions:   BN(y)

on the rows ``[R, C]`` of channels-last ``[N, C, T, V]`` tensors (channel slices of wider ones
included: any uniform row stride). Three launches per direction, no host-side glue:

- forward: (1) per block of rows, the channel means and centred sums of squares (the block's first
  row as the shift: safe in fp32 when the mean is large against the spread); (2) one small kernel
  merges the blocks with Chan's formula and writes mean, variance, scale and shift; (3) the
  normalisation with the ReLUs and the residual add applied on the way out;
- backward: (4) per block ``Σ g`` and ``Σ g·(x − mean)`` where ``g`` is the gradient reaching the
  BatchNorm (``dy`` masked by the ReLUs; the inner mask is recomputed from ``x``, the outer one
  read from the saved output when a residual makes it necessary); (5) one kernel for the
  per-channel coefficients and the weight/bias gradients; (6) ``dx = a·g + k·x + c`` and the
  residual's gradient, in one pass.

Deterministic (no atomics). The running statistics are updated as ``nn.BatchNorm2d`` does.
First version (four kernels plus ~20 small PyTorch ops per BN, no fusion of the ReLU/add):
4,129 vs 5,259 samples/s with Inductor's BatchNorm (H200, 2026-12-04,
``bench/results/train_throughput_2026-12-04_s6_kbn_v1.log``). Used only where
:func:`use_kernel_batchnorm` has swapped a model's ``BatchNorm2d`` modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.triton_support import relative_error, tl, triton, triton_applies

ROWS = 256  # rows per program of the two reductions (in sub-tiles of SUB)
SUB = 64
APPLY_ROWS = 128  # rows per program of the elementwise kernels
PARTS = 64  # partial results merged per step by the finalising kernels


def rows_view(x: Tensor) -> int | None:
    """The uniform row stride of a 4-D channels-last tensor's rows ``[N·T·V, C]``, else None."""
    if x.dim() != 4 or x.stride(1) != 1:
        return None
    n, _, t, v = x.shape
    s = x.stride(3)
    if (v > 1 and s < x.shape[1]) or (t > 1 and x.stride(2) != v * s) or (n > 1 and x.stride(0) != t * v * s):
        return None
    return s


def kernels_apply(x: Tensor, residual: Tensor | None = None) -> bool:
    """Triton path: half-precision channels-last 4-D tensors (CUDA, or any device when interpreting)."""
    if not (triton_applies(x) and rows_view(x) is not None):
        return False
    return residual is None or (
        residual.shape == x.shape and residual.dtype == x.dtype and triton_applies(residual)
    )


if triton is not None:

    @triton.jit
    def _stats_kernel(
        x_ptr, mean_ptr, m2_ptr, R, C, sr, ROWS: tl.constexpr, SUB: tl.constexpr, BC: tl.constexpr
    ):
        """Per block of ROWS rows and BC channels: mean and centred sum of squares (shift: first row)."""
        pid = tl.program_id(0)
        rc = tl.program_id(1) * BC + tl.arange(0, BC)
        cmask = rc < C
        row0 = pid * ROWS
        shift = tl.load(x_ptr + row0 * sr + rc, mask=cmask, other=0.0).to(tl.float32)
        s1 = tl.zeros([BC], dtype=tl.float32)
        s2 = tl.zeros([BC], dtype=tl.float32)
        for i in range(0, ROWS, SUB):
            rr = row0 + i + tl.arange(0, SUB)
            mask = (rr < R)[:, None] & cmask[None, :]
            x = tl.load(x_ptr + rr[:, None] * sr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
            d = tl.where(mask, x - shift[None, :], 0.0)
            s1 += tl.sum(d, axis=0)
            s2 += tl.sum(d * d, axis=0)
        n = tl.minimum(R - row0, ROWS).to(tl.float32)
        tl.store(mean_ptr + pid * C + rc, shift + s1 / n, mask=cmask)
        tl.store(m2_ptr + pid * C + rc, s2 - s1 * s1 / n, mask=cmask)

    @triton.jit
    def _finalize_stats_kernel(
        part_mean_ptr, part_m2_ptr, w_ptr, b_ptr, mean_ptr, var_ptr, stats_ptr,
        R, C, P, eps, ROWS: tl.constexpr, PARTS: tl.constexpr, P_ITERS: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """Chan's merge of the P block results: mean, biased variance, and the backward's ``stats``
        rows (mean, ``scale = w·rstd``, ``shift = b − mean·scale``)."""
        rc = tl.program_id(0) * BC + tl.arange(0, BC)
        cmask = rc < C
        acc = tl.zeros([PARTS, BC], dtype=tl.float32)
        for it in range(P_ITERS):  # a constexpr trip count (Triton's interpreter needs one)
            rp = it * PARTS + tl.arange(0, PARTS)
            pmask = (rp < P)[:, None] & cmask[None, :]
            n = tl.minimum(R - rp * ROWS, ROWS).to(tl.float32)[:, None]
            m = tl.load(part_mean_ptr + rp[:, None] * C + rc[None, :], mask=pmask, other=0.0)
            acc += tl.where(pmask, n * m, 0.0)
        mean = tl.sum(acc, axis=0) / R
        acc = tl.zeros([PARTS, BC], dtype=tl.float32)
        for it in range(P_ITERS):  # a constexpr trip count (Triton's interpreter needs one)
            rp = it * PARTS + tl.arange(0, PARTS)
            pmask = (rp < P)[:, None] & cmask[None, :]
            n = tl.minimum(R - rp * ROWS, ROWS).to(tl.float32)[:, None]
            m = tl.load(part_mean_ptr + rp[:, None] * C + rc[None, :], mask=pmask, other=0.0)
            m2 = tl.load(part_m2_ptr + rp[:, None] * C + rc[None, :], mask=pmask, other=0.0)
            d = m - mean[None, :]
            acc += tl.where(pmask, m2 + n * d * d, 0.0)
        var = tl.maximum(tl.sum(acc, axis=0) / R, 0.0)
        scale = tl.load(w_ptr + rc, mask=cmask, other=1.0).to(tl.float32) / tl.sqrt(var + eps)
        shift = tl.load(b_ptr + rc, mask=cmask, other=0.0).to(tl.float32) - mean * scale
        tl.store(mean_ptr + rc, mean, mask=cmask)
        tl.store(var_ptr + rc, var, mask=cmask)
        tl.store(stats_ptr + rc, mean, mask=cmask)
        tl.store(stats_ptr + C + rc, scale, mask=cmask)
        tl.store(stats_ptr + 2 * C + rc, shift, mask=cmask)

    @triton.jit
    def _tile(R, C, ROWS: tl.constexpr, BC: tl.constexpr):
        """This program's rows and channels of ``[R, C]``: indices, channel mask and tile mask."""
        rr = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        rc = tl.program_id(1) * BC + tl.arange(0, BC)
        cmask = rc < C
        return rr, rc, cmask, (rr < R)[:, None] & cmask[None, :]

    @triton.jit
    def _apply_kernel(
        x_ptr, res_ptr, out_ptr, scale_ptr, shift_ptr, R, C, sxr, srr,
        INNER: tl.constexpr, HAS_RES: tl.constexpr, OUTER: tl.constexpr,
        ROWS: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """``out = outer(inner(x·scale + shift) + residual)`` on rows of ``[R, C]`` (out contiguous)."""
        rr, rc, cmask, mask = _tile(R, C, ROWS, BC)
        scale = tl.load(scale_ptr + rc, mask=cmask, other=0.0)
        shift = tl.load(shift_ptr + rc, mask=cmask, other=0.0)
        x = tl.load(x_ptr + rr[:, None] * sxr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
        out = x * scale[None, :] + shift[None, :]
        if INNER:
            out = tl.maximum(out, 0.0)
        if HAS_RES:
            out += tl.load(res_ptr + rr[:, None] * srr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
        if OUTER:
            out = tl.maximum(out, 0.0)
        tl.store(out_ptr + rr[:, None] * C + rc[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _masked_grad(
        dy, out, x, scale, shift, INNER: tl.constexpr, HAS_RES: tl.constexpr, OUTER: tl.constexpr
    ):
        """(gradient reaching the BatchNorm, gradient of the residual) for one tile, in fp32."""
        dz = dy
        if OUTER:
            if HAS_RES:
                dz = tl.where(out > 0, dy, 0.0)
            else:  # out = relu(inner(u)): the mask follows from x alone
                dz = tl.where(x * scale[None, :] + shift[None, :] > 0, dy, 0.0)
        g = dz
        if INNER:
            g = tl.where(x * scale[None, :] + shift[None, :] > 0, dz, 0.0)
        return g, dz

    @triton.jit
    def _grad_sums_kernel(
        dy_ptr, out_ptr, x_ptr, stats_ptr, sdy_ptr, sdyx_ptr, R, C, sdr, sor, sxr,
        INNER: tl.constexpr, HAS_RES: tl.constexpr, OUTER: tl.constexpr,
        ROWS: tl.constexpr, SUB: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """Per block: ``Σ g`` and ``Σ g·(x − mean)`` per channel (``stats``: mean, scale, shift rows)."""
        pid = tl.program_id(0)
        rc = tl.program_id(1) * BC + tl.arange(0, BC)
        cmask = rc < C
        mean = tl.load(stats_ptr + rc, mask=cmask, other=0.0)
        scale = tl.load(stats_ptr + C + rc, mask=cmask, other=0.0)
        shift = tl.load(stats_ptr + 2 * C + rc, mask=cmask, other=0.0)
        a1 = tl.zeros([BC], dtype=tl.float32)
        a2 = tl.zeros([BC], dtype=tl.float32)
        for i in range(0, ROWS, SUB):
            rr = pid * ROWS + i + tl.arange(0, SUB)
            mask = (rr < R)[:, None] & cmask[None, :]
            dy = tl.load(dy_ptr + rr[:, None] * sdr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
            x = tl.load(x_ptr + rr[:, None] * sxr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
            out = dy
            if OUTER and HAS_RES:
                out = tl.load(out_ptr + rr[:, None] * sor + rc[None, :], mask=mask, other=0.0).to(tl.float32)
            g, _ = _masked_grad(dy, out, x, scale, shift, INNER, HAS_RES, OUTER)
            a1 += tl.sum(g, axis=0)
            a2 += tl.sum(g * tl.where(mask, x - mean[None, :], 0.0), axis=0)
        tl.store(sdy_ptr + pid * C + rc, a1, mask=cmask)
        tl.store(sdyx_ptr + pid * C + rc, a2, mask=cmask)

    @triton.jit
    def _finalize_grad_kernel(
        sdy_ptr, sdyx_ptr, stats_ptr, var_ptr, w_ptr, coef_ptr, dw_ptr, db_ptr, R, C, P, eps,
        PARTS: tl.constexpr, P_ITERS: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """Sums over blocks → ``dx = a·g + k·x + c`` coefficients (rows of ``coef``), ``dw``, ``db``."""
        rc = tl.program_id(0) * BC + tl.arange(0, BC)
        cmask = rc < C
        acc1 = tl.zeros([PARTS, BC], dtype=tl.float32)
        acc2 = tl.zeros([PARTS, BC], dtype=tl.float32)
        for it in range(P_ITERS):  # a constexpr trip count (Triton's interpreter needs one)
            rp = it * PARTS + tl.arange(0, PARTS)
            pmask = (rp < P)[:, None] & cmask[None, :]
            acc1 += tl.load(sdy_ptr + rp[:, None] * C + rc[None, :], mask=pmask, other=0.0)
            acc2 += tl.load(sdyx_ptr + rp[:, None] * C + rc[None, :], mask=pmask, other=0.0)
        sum_g, sum_gx = tl.sum(acc1, axis=0), tl.sum(acc2, axis=0)
        mean = tl.load(stats_ptr + rc, mask=cmask, other=0.0)
        rstd = 1.0 / tl.sqrt(tl.load(var_ptr + rc, mask=cmask, other=0.0) + eps)
        a = tl.load(w_ptr + rc, mask=cmask, other=0.0).to(tl.float32) * rstd
        k = -a * rstd * rstd * sum_gx / R
        c = -a * sum_g / R - k * mean
        tl.store(coef_ptr + rc, a, mask=cmask)
        tl.store(coef_ptr + C + rc, k, mask=cmask)
        tl.store(coef_ptr + 2 * C + rc, c, mask=cmask)
        tl.store(dw_ptr + rc, sum_gx * rstd, mask=cmask)
        tl.store(db_ptr + rc, sum_g, mask=cmask)

    @triton.jit
    def _grad_input_kernel(
        dy_ptr, out_ptr, x_ptr, stats_ptr, coef_ptr, dx_ptr, dres_ptr, R, C, sdr, sor, sxr,
        INNER: tl.constexpr, HAS_RES: tl.constexpr, OUTER: tl.constexpr,
        ROWS: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """``dx = a·g + k·x + c`` and (with a residual) its gradient ``dz``; both contiguous rows."""
        rr, rc, cmask, mask = _tile(R, C, ROWS, BC)
        scale = tl.load(stats_ptr + C + rc, mask=cmask, other=0.0)
        shift = tl.load(stats_ptr + 2 * C + rc, mask=cmask, other=0.0)
        a = tl.load(coef_ptr + rc, mask=cmask, other=0.0)
        k = tl.load(coef_ptr + C + rc, mask=cmask, other=0.0)
        c = tl.load(coef_ptr + 2 * C + rc, mask=cmask, other=0.0)
        dy = tl.load(dy_ptr + rr[:, None] * sdr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + rr[:, None] * sxr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
        out = dy
        if OUTER and HAS_RES:
            out = tl.load(out_ptr + rr[:, None] * sor + rc[None, :], mask=mask, other=0.0).to(tl.float32)
        g, dz = _masked_grad(dy, out, x, scale, shift, INNER, HAS_RES, OUTER)
        dx = a[None, :] * g + k[None, :] * x + c[None, :]
        tl.store(dx_ptr + rr[:, None] * C + rc[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if HAS_RES:
            tl.store(dres_ptr + rr[:, None] * C + rc[None, :], dz.to(dres_ptr.dtype.element_ty), mask=mask)


def _channel_tile(c: int) -> int:
    return max(16, min(64, triton.next_power_of_2(c)))


def _rows(x: Tensor) -> tuple[int, int, int]:
    """(rows R, channels C, row stride) of a channels-last tensor the kernels accept."""
    n, c, t, v = x.shape
    stride = rows_view(x)
    assert stride is not None, "not a channels-last tensor with uniform rows"
    return n * t * v, c, stride


def _channels_last_like(x: Tensor) -> Tensor:
    return torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)


@torch.library.custom_op("crossglg::bn_act_train", mutates_args=())
def bn_act_train(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    residual: Tensor | None,
    inner_relu: bool,
    outer_relu: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``outer(inner(BN(x)) + residual)`` with batch statistics: ``(out, mean, biased var, stats)``.

    ``stats`` ``[3, C]`` fp32 holds mean, scale and shift for the backward; ``out`` has ``x``'s dtype,
    channels-last."""
    rows, c, sxr = _rows(x)
    programs, bc = triton.cdiv(rows, ROWS), _channel_tile(c)
    part_mean = torch.empty(programs, c, device=x.device, dtype=torch.float32)
    part_m2 = torch.empty_like(part_mean)
    _stats_kernel[(programs, triton.cdiv(c, bc))](x, part_mean, part_m2, rows, c, sxr, ROWS, SUB, bc)
    mean = torch.empty(c, device=x.device, dtype=torch.float32)
    var = torch.empty_like(mean)
    stats = torch.empty(3, c, device=x.device, dtype=torch.float32)  # mean, scale, shift
    _finalize_stats_kernel[(triton.cdiv(c, bc),)](
        part_mean,
        part_m2,
        weight,
        bias,
        mean,
        var,
        stats,
        rows,
        c,
        programs,
        eps,
        ROWS,
        PARTS,
        triton.cdiv(programs, PARTS),
        bc,
    )
    out = _channels_last_like(x)
    srr = _rows(residual)[2] if residual is not None else 0
    grid = (triton.cdiv(rows, APPLY_ROWS), triton.cdiv(c, bc))
    _apply_kernel[grid](
        x, residual if residual is not None else x, out, stats[1], stats[2], rows, c, sxr, srr,
        inner_relu, residual is not None, outer_relu, APPLY_ROWS, bc,
    )  # fmt: skip
    return out, mean, var, stats


@bn_act_train.register_fake
def _bn_act_train_fake(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    residual: Tensor | None,
    inner_relu: bool,
    outer_relu: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    c = x.shape[1]
    vec = x.new_empty(c, dtype=torch.float32)
    return _channels_last_like(x), vec, torch.empty_like(vec), x.new_empty(3, c, dtype=torch.float32)


@torch.library.custom_op("crossglg::bn_act_train_backward", mutates_args=())
def bn_act_train_backward(
    dy: Tensor, x: Tensor, out: Tensor, stats: Tensor, var: Tensor, weight: Tensor,
    has_residual: bool, inner_relu: bool, outer_relu: bool, eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """``(dx, d residual, d weight, d bias)`` of :func:`bn_act_train`; ``d residual`` is empty
    without a residual."""
    dy = dy.to(x.dtype)
    if rows_view(dy) is None:
        dy = dy.contiguous(memory_format=torch.channels_last)
    rows, c, sxr = _rows(x)
    sdr, sor = _rows(dy)[2], _rows(out)[2]
    programs, bc = triton.cdiv(rows, ROWS), _channel_tile(c)
    sdy = torch.empty(programs, c, device=x.device, dtype=torch.float32)
    sdyx = torch.empty_like(sdy)
    flags = (inner_relu, has_residual, outer_relu)
    _grad_sums_kernel[(programs, triton.cdiv(c, bc))](
        dy, out, x, stats, sdy, sdyx, rows, c, sdr, sor, sxr, *flags, ROWS, SUB, bc
    )
    coef = torch.empty(3, c, device=x.device, dtype=torch.float32)
    dw = torch.empty(c, device=x.device, dtype=torch.float32)
    db = torch.empty_like(dw)
    _finalize_grad_kernel[(triton.cdiv(c, bc),)](
        sdy,
        sdyx,
        stats,
        var,
        weight,
        coef,
        dw,
        db,
        rows,
        c,
        programs,
        eps,
        PARTS,
        triton.cdiv(programs, PARTS),
        bc,
    )
    dx = _channels_last_like(x)
    dres = _channels_last_like(x) if has_residual else x.new_empty(0)
    grid = (triton.cdiv(rows, APPLY_ROWS), triton.cdiv(c, bc))
    _grad_input_kernel[grid](
        dy, out, x, stats, coef, dx, dres if has_residual else dx, rows, c, sdr, sor, sxr,
        *flags, APPLY_ROWS, bc,
    )  # fmt: skip
    return dx, dres, dw.to(weight.dtype), db.to(weight.dtype)


@bn_act_train_backward.register_fake
def _backward_fake(
    dy: Tensor, x: Tensor, out: Tensor, stats: Tensor, var: Tensor, weight: Tensor,
    has_residual: bool, inner_relu: bool, outer_relu: bool, eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    dres = _channels_last_like(x) if has_residual else x.new_empty(0)
    return _channels_last_like(x), dres, torch.empty_like(weight), torch.empty_like(weight)


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, weight, _, residual, inner_relu, outer_relu, eps = inputs
    out, mean, var, stats = output
    has_residual = residual is not None
    # The outer ReLU's mask needs the output only when a residual was added before it.
    ctx.save_for_backward(x, out if (outer_relu and has_residual) else x, stats, var, weight)
    ctx.flags = (has_residual, inner_relu, outer_relu, eps)
    ctx.mark_non_differentiable(mean, var, stats)  # they feed the running statistics only


def _backward(ctx, dout: Tensor, _dmean: Tensor, _dvar: Tensor, _dstats: Tensor) -> tuple:  # noqa: ANN001
    x, out, stats, var, weight = ctx.saved_tensors
    has_residual, inner_relu, outer_relu, eps = ctx.flags
    dx, dres, dw, db = bn_act_train_backward(
        dout, x, out, stats, var, weight, has_residual, inner_relu, outer_relu, eps
    )
    return dx, dw, db, dres if has_residual else None, None, None, None


bn_act_train.register_autograd(_backward, setup_context=_setup_context)


def _update_running_stats(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, rows: int) -> None:
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum
        if momentum is None:  # cumulative moving average, as nn.BatchNorm2d
            momentum = 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
        unbiased = var * (rows / max(rows - 1, 1))
        bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), momentum)


class KernelBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state dict) whose training forward runs the
    fused kernels where they apply (see :func:`bn_act`); everything else is ``nn.BatchNorm2d``'s."""

    def forward(self, x: Tensor) -> Tensor:
        return bn_act(self, x)


def bn_act(
    bn: nn.BatchNorm2d,
    x: Tensor,
    residual: Tensor | None = None,
    inner_relu: bool = False,
    outer_relu: bool = False,
    input_bias: Tensor | None = None,
) -> Tensor:
    """``outer(inner(bn(x + input_bias)) + residual)``: one fused op for a :class:`KernelBatchNorm2d`
    in training where the kernels apply, the plain PyTorch expression otherwise (same function).

    ``input_bias`` (per channel) cancels in the training-mode normalisation; the kernel path adds it
    to the running mean only, so a convolution's bias before the BN costs no pass over ``x``.
    """
    fused = (
        type(bn) is KernelBatchNorm2d
        and bn.training
        and bn.affine
        and bn.track_running_stats
        and kernels_apply(x, residual)
    )
    if not fused:
        x = x if input_bias is None else x + input_bias.to(x.dtype)[:, None, None]
        y = nn.BatchNorm2d.forward(bn, x) if type(bn) is KernelBatchNorm2d else bn(x)
        y = F.relu(y) if inner_relu else y
        y = y if residual is None else y + residual
        return F.relu(y) if outer_relu else y
    out, mean, var, _ = bn_act_train(x, bn.weight, bn.bias, residual, inner_relu, outer_relu, bn.eps)
    if input_bias is not None:
        mean = mean + input_bias.detach().float()
    _update_running_stats(bn, mean, var, x.numel() // x.shape[1])
    return out


def use_kernel_batchnorm(model: nn.Module) -> int:
    """Turn every ``nn.BatchNorm2d`` of ``model`` into :class:`KernelBatchNorm2d` in place.

    Parameters, buffers and state-dict keys stay; returns how many modules were swapped."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = KernelBatchNorm2d
            swapped += 1
    return swapped


def reference_bn_act(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    residual: Tensor | None,
    inner_relu: bool,
    outer_relu: bool,
    eps: float = 1e-5,
) -> Tensor:
    """The fused op's function in plain PyTorch (training-mode statistics), for the checks."""
    y = F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    y = F.relu(y) if inner_relu else y
    y = y if residual is None else y + residual
    return F.relu(y) if outer_relu else y


PATTERNS = {  # name: (residual, inner ReLU, outer ReLU) — the four uses in InfoGCN, and the rest
    "bn": (False, False, False),
    "bn_relu": (False, True, False),
    "bn_add_relu": (True, False, True),
    "bn_relu_add_relu": (True, True, True),
    "bn_add": (True, False, False),
    "bn_relu_add": (True, True, False),
    "bn_outer_relu": (False, False, True),
}


def check_kernels(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    channels: int = 48,
    pattern: str = "bn_relu_add_relu",
) -> dict:
    """Relative errors of the kernel path against float64 PyTorch (output and all gradients) for one
    :data:`PATTERNS` entry, on a channel slice of a channels-last tensor with a partial last row block."""
    has_res, inner, outer = PATTERNS[pattern]
    g = torch.Generator().manual_seed(0)
    n, t, v = 3, 7, 25  # 525 rows: two full blocks of 256 and a tail of 13
    wide = (torch.randn(n, channels + 16, t, v, generator=g) * 2 + 3).to(device, dtype)
    wide = wide.contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(channels, generator=g).to(device).requires_grad_()
    bias = torch.randn(channels, generator=g).to(device).requires_grad_()
    res = torch.randn(n, channels, t, v, generator=g).to(device, dtype)
    res = res.contiguous(memory_format=torch.channels_last).requires_grad_() if has_res else None
    dy = torch.randn(n, channels, t, v, generator=g).to(device, dtype)
    x = wide[:, :channels]  # a channel slice: row stride channels + 16
    if not kernels_apply(x, res):
        return {"used_kernels": False}
    y, mean, var, _ = bn_act_train(x, weight, bias, res, inner, outer, 1e-5)
    y.backward(dy)
    ref_x = x.detach().double().cpu().requires_grad_()
    ref_w, ref_b = (p.detach().double().cpu().requires_grad_() for p in (weight, bias))
    ref_res = res.detach().double().cpu().requires_grad_() if res is not None else None
    ref = reference_bn_act(ref_x, ref_w, ref_b, ref_res, inner, outer)
    ref.backward(dy.double().cpu())
    result = {
        "used_kernels": True,
        "pattern": pattern,
        "y": relative_error(y, ref),
        "mean": relative_error(mean, ref_x.detach().mean((0, 2, 3))),
        "var": relative_error(var, ref_x.detach().var((0, 2, 3), unbiased=False)),
        "grad_x": relative_error(wide.grad[:, :channels], ref_x.grad),
        "grad_x_outside_slice_zero": bool((wide.grad[:, channels:] == 0).all()),
        "grad_weight": relative_error(weight.grad, ref_w.grad),
        "grad_bias": relative_error(bias.grad, ref_b.grad),
        "y_channels_last": y.is_contiguous(memory_format=torch.channels_last),
        "finite": bool(torch.isfinite(y).all() and torch.isfinite(wide.grad).all()),
    }
    if res is not None:
        result["grad_residual"] = relative_error(res.grad, ref_res.grad)
    return result

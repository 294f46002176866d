"""Training-mode BatchNorm over channels-last activations as four Triton kernels (candidate, opt-in).

Half of the compiled training step's kernel time is in Inductor kernels built around BatchNorm
(docs/performance.md). A BatchNorm in training must move at least eight input-sized passes:

    forward:  statistics (read x), normalise (read x, write y)
    backward: two channel sums (read dy, x), input gradient (read dy, x, write dx)

These kernels do exactly that, on the rows ``[R, C]`` of a channels-last ``[N, C, T, V]`` tensor
(a channel slice of a wider one included: any uniform row stride):

- statistics: each program reduces a block of rows per channel to a mean and a centred sum of
  squares, with the block's first row as the shift (numerically safe in fp32 when the mean is large
  against the spread); the blocks are merged on the host side with Chan's formula. Deterministic;
- normalise / input gradient: one per-channel affine kernel ``out = p·u + q·v + r``;
- gradient sums: per block ``Σ dy`` and ``Σ dy·(x − mean)``, summed over blocks.

Written and checked against ``F.batch_norm`` in Triton's interpreter; **not yet timed on a GPU**.
``bench/batchnorm_bandwidth.py`` times it per shape next to Inductor's (mode ``kernels``); the model
uses it only when :func:`use_kernel_batchnorm` swaps its ``BatchNorm2d`` modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.triton_support import relative_error, tl, triton, triton_applies

ROWS = 256  # rows per program of the reductions (in sub-tiles of SUB)
SUB = 32
AFFINE_ROWS = 64


def rows_view(x: Tensor) -> int | None:
    """The uniform row stride of a 4-D channels-last tensor's rows ``[N·T·V, C]``, else None."""
    if x.dim() != 4 or x.stride(1) != 1:
        return None
    n, _, t, v = x.shape
    s = x.stride(3)
    if (t > 1 and x.stride(2) != v * s) or (n > 1 and x.stride(0) != t * v * s):
        return None
    return s


def kernels_apply(x: Tensor) -> bool:
    """Triton path: a half-precision channels-last 4-D tensor (CUDA, or any device when interpreting)."""
    return triton_applies(x) and rows_view(x) is not None


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
    def _grad_sums_kernel(
        dy_ptr, x_ptr, mean_ptr, sdy_ptr, sdyx_ptr, R, C, sdr, sxr,
        ROWS: tl.constexpr, SUB: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """Per block: ``Σ dy`` and ``Σ dy·(x − mean)`` per channel."""
        pid = tl.program_id(0)
        rc = tl.program_id(1) * BC + tl.arange(0, BC)
        cmask = rc < C
        mean = tl.load(mean_ptr + rc, mask=cmask, other=0.0)
        a1 = tl.zeros([BC], dtype=tl.float32)
        a2 = tl.zeros([BC], dtype=tl.float32)
        for i in range(0, ROWS, SUB):
            rr = pid * ROWS + i + tl.arange(0, SUB)
            mask = (rr < R)[:, None] & cmask[None, :]
            dy = tl.load(dy_ptr + rr[:, None] * sdr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
            x = tl.load(x_ptr + rr[:, None] * sxr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
            a1 += tl.sum(dy, axis=0)
            a2 += tl.sum(dy * tl.where(mask, x - mean[None, :], 0.0), axis=0)
        tl.store(sdy_ptr + pid * C + rc, a1, mask=cmask)
        tl.store(sdyx_ptr + pid * C + rc, a2, mask=cmask)

    @triton.jit
    def _channel_affine_kernel(
        u_ptr, v_ptr, out_ptr, p_ptr, q_ptr, r_ptr, R, C, sur, svr, sor,
        HAS_V: tl.constexpr, ROWS: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """``out = p·u (+ q·v) + r`` with per-channel p, q, r (fp32), rows of ``[R, C]``."""
        rr = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        rc = tl.program_id(1) * BC + tl.arange(0, BC)
        cmask = rc < C
        mask = (rr < R)[:, None] & cmask[None, :]
        p = tl.load(p_ptr + rc, mask=cmask, other=0.0)
        r = tl.load(r_ptr + rc, mask=cmask, other=0.0)
        u = tl.load(u_ptr + rr[:, None] * sur + rc[None, :], mask=mask, other=0.0).to(tl.float32)
        out = u * p[None, :] + r[None, :]
        if HAS_V:
            q = tl.load(q_ptr + rc, mask=cmask, other=0.0)
            v = tl.load(v_ptr + rr[:, None] * svr + rc[None, :], mask=mask, other=0.0).to(tl.float32)
            out += v * q[None, :]
        tl.store(out_ptr + rr[:, None] * sor + rc[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


def _channel_tile(c: int) -> int:
    return max(16, min(64, triton.next_power_of_2(c)))


def _rows(x: Tensor) -> tuple[int, int, int]:
    """(rows R, channels C, row stride) of a channels-last tensor the kernels accept."""
    n, c, t, v = x.shape
    stride = rows_view(x)
    assert stride is not None, "not a channels-last tensor with uniform rows"
    return n * t * v, c, stride


def _affine(u: Tensor, p: Tensor, r: Tensor, v: Tensor | None = None, q: Tensor | None = None) -> Tensor:
    out = torch.empty(u.shape, device=u.device, dtype=u.dtype, memory_format=torch.channels_last)
    rows, c, su = _rows(u)
    sv = _rows(v)[2] if v is not None else 0
    if rows:
        bc = _channel_tile(c)
        grid = (triton.cdiv(rows, AFFINE_ROWS), triton.cdiv(c, bc))
        _channel_affine_kernel[grid](
            u, v if v is not None else u, out, p, q if q is not None else p, r, rows, c, su, sv, c,
            v is not None, AFFINE_ROWS, bc,
        )  # fmt: skip
    return out


@torch.library.custom_op("crossglg::batch_norm_train", mutates_args=())
def batch_norm_train(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Training BatchNorm of a channels-last ``x``: ``(y, batch mean, biased batch variance)``.

    The statistics are fp32; ``y`` has ``x``'s dtype, channels-last."""
    rows, c, sr = _rows(x)
    programs, bc = triton.cdiv(rows, ROWS), _channel_tile(c)
    part_mean = torch.empty(programs, c, device=x.device, dtype=torch.float32)
    part_m2 = torch.empty_like(part_mean)
    _stats_kernel[(programs, triton.cdiv(c, bc))](x, part_mean, part_m2, rows, c, sr, ROWS, SUB, bc)
    counts = (rows - torch.arange(programs, device=x.device) * ROWS).clamp(max=ROWS).float()[:, None]
    mean = (counts * part_mean).sum(0) / rows
    var = (part_m2.sum(0) + (counts * (part_mean - mean).square()).sum(0)) / rows
    scale = weight.float() * torch.rsqrt(var + eps)
    y = _affine(x, scale, bias.float() - mean * scale)
    return y, mean, var


@batch_norm_train.register_fake
def _batch_norm_train_fake(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    c = x.shape[1]
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    return y, x.new_empty(c, dtype=torch.float32), x.new_empty(c, dtype=torch.float32)


@torch.library.custom_op("crossglg::batch_norm_train_backward", mutates_args=())
def batch_norm_train_backward(
    dy: Tensor, x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, d weight, d bias)`` of :func:`batch_norm_train` for the output gradient ``dy``."""
    dy = dy.to(x.dtype)
    if rows_view(dy) is None:
        dy = dy.contiguous(memory_format=torch.channels_last)
    rows, c, sxr = _rows(x)
    sdr = _rows(dy)[2]
    programs, bc = triton.cdiv(rows, ROWS), _channel_tile(c)
    sdy = torch.empty(programs, c, device=x.device, dtype=torch.float32)
    sdyx = torch.empty_like(sdy)
    _grad_sums_kernel[(programs, triton.cdiv(c, bc))](
        dy, x, mean, sdy, sdyx, rows, c, sdr, sxr, ROWS, SUB, bc
    )
    sum_dy, sum_dyx = sdy.sum(0), sdyx.sum(0)
    rstd = torch.rsqrt(var + eps)
    a = weight.float() * rstd
    k = -a * rstd.square() * sum_dyx / rows
    dx = _affine(dy, a, -a * sum_dy / rows - k * mean, x, k)
    return dx, (sum_dyx * rstd).to(weight.dtype), sum_dy.to(weight.dtype)


@batch_norm_train_backward.register_fake
def _backward_fake(
    dy: Tensor, x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    return dx, torch.empty_like(weight), torch.empty_like(weight)


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, weight, _, eps = inputs
    _, mean, var = output
    ctx.save_for_backward(x, mean, var, weight)
    ctx.eps = eps
    ctx.mark_non_differentiable(mean, var)  # they feed the running statistics only


def _backward(ctx, dy: Tensor, _dmean: Tensor, _dvar: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # noqa: ANN001
    x, mean, var, weight = ctx.saved_tensors
    dx, dw, db = batch_norm_train_backward(dy, x, mean, var, weight, ctx.eps)
    return dx, dw, db, None


batch_norm_train.register_autograd(_backward, setup_context=_setup_context)


class KernelBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state dict) whose training forward runs
    :func:`batch_norm_train` where the kernels apply; everything else is ``nn.BatchNorm2d``'s."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.affine and self.track_running_stats and kernels_apply(x)):
            return super().forward(x)
        y, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            rows = x.numel() // x.shape[1]
            self.num_batches_tracked.add_(1)
            momentum = self.momentum
            if momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            unbiased = var * (rows / max(rows - 1, 1))
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return y


def use_kernel_batchnorm(model: nn.Module) -> int:
    """Turn every ``nn.BatchNorm2d`` of ``model`` into :class:`KernelBatchNorm2d` in place.

    Parameters, buffers and state-dict keys stay; returns how many modules were swapped."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = KernelBatchNorm2d
            swapped += 1
    return swapped


def check_kernels(device: str = "cuda", dtype: torch.dtype = torch.bfloat16, channels: int = 48) -> dict:
    """Relative errors of the kernel path against float64 ``F.batch_norm`` (output and all gradients)
    on a channel slice of a channels-last tensor with a partial last row block."""
    g = torch.Generator().manual_seed(0)
    n, t, v = 3, 7, 25  # 525 rows: two full blocks of 256 and a tail of 13
    wide = (torch.randn(n, channels + 16, t, v, generator=g) * 2 + 3).to(device, dtype)
    wide = wide.contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(channels, generator=g).to(device).requires_grad_()
    bias = torch.randn(channels, generator=g).to(device).requires_grad_()
    dy = torch.randn(n, channels, t, v, generator=g).to(device, dtype)
    x = wide[:, :channels]  # a channel slice: row stride channels + 16
    if not kernels_apply(x):
        return {"used_kernels": False}
    y, mean, var = batch_norm_train(x, weight, bias, 1e-5)
    y.backward(dy)
    ref_x = x.detach().double().cpu().requires_grad_()
    ref_w, ref_b = (p.detach().double().cpu().requires_grad_() for p in (weight, bias))
    ref = F.batch_norm(ref_x, None, None, ref_w, ref_b, training=True, eps=1e-5)
    ref.backward(dy.double().cpu())
    return {
        "used_kernels": True,
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

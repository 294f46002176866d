"""``linear(layer_norm(x))`` over feature rows as one kernel per direction: SA-GC's query/key path.

SA-GC normalises every joint's feature row (``C`` = 64–256 channels) and projects it to the queries
and keys (``N = 3/4·C`` columns). As two ops, the forward writes the normalised rows and the GEMM
reads them back (two passes over an activation-sized tensor per block, and the rows are kept for the
backward); the backward then runs the GEMM for the rows' gradient, writes it, and a LayerNorm
backward reads it again with ``x``. A row of at most 256 channels fits in one tile, so here one
program normalises a block of rows in registers and multiplies it by the whole weight: the forward
reads ``x`` and writes only the projection; the backward recomputes the statistics from ``x``,
forms the rows' gradient with the same tile product and applies the LayerNorm backward before
writing ``dx``. It writes the normalised rows once for the weight gradient, which stays a cuBLAS GEMM
(a reduction over all rows). The LayerNorm parameters' gradients are summed per program, then over
programs.

Same function as ``F.linear(F.layer_norm(x, (C,), γ, β, eps), W, b)`` in ``x``'s dtype (statistics in
fp32, the normalised rows rounded to ``x``'s dtype before the product, as PyTorch's half-precision
LayerNorm hands them to the GEMM). :func:`layernorm_linear` uses the kernels for bf16/fp16 CUDA
rows when Triton is importable (``C``, ``N`` ≤ 256) and PyTorch's ops otherwise — the reference the
kernels are tested against.

Measured on an H100 (2026-12-07, ``bench/layernorm_linear_bench.py``, batch 128 shapes, bf16): the
kernels are correct (relative error ≤ 3.0e-3 for the output and all five gradients) and faster than
Inductor's LayerNorm + cuBLAS alone — forward 0.038 / 0.044 / 0.110 ms against 0.086 / 0.176 /
0.133 ms at C = 64 / 128 / 256, forward + backward 0.320 / 0.418 / 0.493 against 0.318 / 0.582 /
0.510 ms — yet the model with it is slower (InfoGCN's ``fused_norm``, off: the op breaks Inductor's
fusions of the LayerNorm with its neighbours).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.models.triton_support import relative_error, tl, triton, triton_applies

MAX_WIDTH = 256  # channels and output columns one row tile holds


def kernels_apply(x: Tensor, weight: Tensor) -> bool:
    """Whether the Triton path applies: Triton, half-precision CUDA rows, ``C`` and ``N`` ≤ 256 (the
    parameters are cast to the rows' dtype)."""
    return (
        triton_applies(x)
        and x.device == weight.device
        and x.shape[-1] <= MAX_WIDTH
        and weight.shape[0] <= MAX_WIDTH
    )


def reference(
    x: Tensor, norm_weight: Tensor, norm_bias: Tensor, weight: Tensor, bias: Tensor | None, eps: float
) -> Tensor:
    """The two-op function in ``x``'s dtype (parameters cast to it; PyTorch's autograd)."""
    dtype = x.dtype
    rows = F.layer_norm(x, x.shape[-1:], norm_weight.to(dtype), norm_bias.to(dtype), eps)
    return F.linear(rows, weight.to(dtype), None if bias is None else bias.to(dtype))


def layernorm_linear(
    x: Tensor, norm_weight: Tensor, norm_bias: Tensor, weight: Tensor, bias: Tensor | None, eps: float
) -> Tensor:
    """``F.linear(F.layer_norm(x), weight, bias)`` over the last dim of ``x`` (``[..., C]`` → ``[..., N]``).

    Runs in ``x``'s dtype whatever autocast says (the parameters are cast to it), as SA-GC's
    LayerNorm does under ``norm_in_input_dtype``; the fused kernels where :func:`kernels_apply`.
    """
    with torch.autocast(x.device.type, enabled=False):
        if not kernels_apply(x, weight):
            return reference(x, norm_weight, norm_bias, weight, bias, eps)
        dtype = x.dtype
        rows = x.reshape(-1, x.shape[-1])
        if rows.stride(-1) != 1:
            rows = rows.contiguous()
        out = _layernorm_linear_op(
            rows,
            norm_weight.to(dtype),
            norm_bias.to(dtype),
            weight.to(dtype).contiguous(),
            None if bias is None else bias.to(dtype),
            eps,
        )
        return out.view(*x.shape[:-1], weight.shape[0])


def row_tile(c: int) -> int:
    """Rows per program: the ``[rows, C]`` fp32 tile stays at 8,192 elements (16 ≤ rows ≤ 128)."""
    return max(16, min(128, 8192 // _width_tile(c)))


def _width_tile(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


# Eight warps: a program holds two or three fp32 [rows, C] tiles of 8,192 elements (x̂, the row
# gradient, temporaries), 32 registers per thread each at 8 warps instead of 64 at Triton's default 4.
NUM_WARPS = 8
COLUMN_CHUNK = 64  # output columns per weight chunk: Wᵀ [C, 64] is ≤ 32 KB of shared memory


def _column_chunks(n: int) -> tuple[int, int]:
    """The output-column tile and how many of them cover ``n`` columns."""
    bn = min(COLUMN_CHUNK, _width_tile(n))
    return bn, triton.cdiv(n, bn)


if triton is not None:

    @triton.jit
    def _normalised_rows(x_ptr, g_ptr, b_ptr, rr, rc, rows, C, sx, eps):
        """fp32 ``(x̂, γ, β, 1/σ)`` of a tile of rows; padded rows and columns give x̂ = 0."""
        rmask = rr < rows
        cmask = rc < C
        x = tl.load(x_ptr + rr[:, None] * sx + rc[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
        x = x.to(tl.float32)
        mean = tl.sum(x, 1) / C
        xc = tl.where(cmask[None, :], x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / C + eps)
        gamma = tl.load(g_ptr + rc, mask=cmask, other=0.0).to(tl.float32)
        beta = tl.load(b_ptr + rc, mask=cmask, other=0.0).to(tl.float32)
        return xc * rstd[:, None], gamma, beta, rstd

    @triton.jit
    def _forward_kernel(
        x_ptr, g_ptr, b_ptr, w_ptr, bias_ptr, out_ptr, rows, C, N, sx, so, eps,
        HAS_BIAS: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, BN: tl.constexpr, N_CHUNKS: tl.constexpr,
    ):  # fmt: skip
        # The normalised tile [BM, BC] stays in registers; the output columns go BN at a time, so a
        # weight chunk Wᵀ [BC, BN] is all the product holds besides it.
        rr = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
        rc = tl.arange(0, BC)
        xhat, gamma, beta, _ = _normalised_rows(x_ptr, g_ptr, b_ptr, rr, rc, rows, C, sx, eps)
        normed = (xhat * gamma[None, :] + beta[None, :]).to(x_ptr.dtype.element_ty)
        for chunk in tl.static_range(N_CHUNKS):
            rn = chunk * BN + tl.arange(0, BN)
            wmask = (rc[:, None] < C) & (rn[None, :] < N)
            wt = tl.load(w_ptr + rn[None, :] * C + rc[:, None], mask=wmask, other=0.0)
            acc = tl.dot(normed, wt)
            if HAS_BIAS:
                acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
            omask = (rr[:, None] < rows) & (rn[None, :] < N)
            tl.store(out_ptr + rr[:, None] * so + rn[None, :], acc.to(out_ptr.dtype.element_ty), omask)

    @triton.jit
    def _backward_kernel(
        dout_ptr, x_ptr, g_ptr, b_ptr, w_ptr, dx_ptr, normed_ptr, dnorm_part_ptr, dbias_part_ptr,
        rows, C, N, sd, sx, eps,
        BM: tl.constexpr, BC: tl.constexpr, BN: tl.constexpr, N_CHUNKS: tl.constexpr,
    ):  # fmt: skip
        # dx, the normalised rows (for the weight gradient) and this program's sums for the
        # LayerNorm parameters' gradients [2, C] and the bias gradient [N].
        pid = tl.program_id(0)
        rr = pid.to(tl.int64) * BM + tl.arange(0, BM)
        rc = tl.arange(0, BC)
        rmask = rr < rows
        cmask = rc < C
        xhat, gamma, beta, rstd = _normalised_rows(x_ptr, g_ptr, b_ptr, rr, rc, rows, C, sx, eps)
        tile = rr[:, None] * C + rc[None, :]
        tmask = rmask[:, None] & cmask[None, :]
        tl.store(
            normed_ptr + tile, (xhat * gamma[None, :] + beta[None, :]).to(normed_ptr.dtype.element_ty), tmask
        )
        # the gradient of the normalised rows, dout @ W, over BN output columns at a time
        dnormed = tl.zeros((BM, BC), dtype=tl.float32)
        for chunk in tl.static_range(N_CHUNKS):
            rn = chunk * BN + tl.arange(0, BN)
            nmask = rn < N
            dout = tl.load(
                dout_ptr + rr[:, None] * sd + rn[None, :], mask=rmask[:, None] & nmask[None, :], other=0.0
            )
            w = tl.load(
                w_ptr + rn[:, None] * C + rc[None, :], mask=nmask[:, None] & cmask[None, :], other=0.0
            )
            dnormed += tl.dot(dout, w)
            tl.store(dbias_part_ptr + pid.to(tl.int64) * N + rn, tl.sum(dout.to(tl.float32), 0), nmask)
        dxhat = dnormed * gamma[None, :]
        mean_dxhat = tl.sum(dxhat, 1) / C
        mean_dxhat_xhat = tl.sum(dxhat * xhat, 1) / C
        dx = (dxhat - mean_dxhat[:, None] - xhat * mean_dxhat_xhat[:, None]) * rstd[:, None]
        tl.store(dx_ptr + tile, dx.to(dx_ptr.dtype.element_ty), tmask)
        part = dnorm_part_ptr + pid.to(tl.int64) * 2 * C
        tl.store(part + rc, tl.sum(dnormed * xhat, 0), cmask)  # d γ
        tl.store(part + C + rc, tl.sum(dnormed, 0), cmask)  # d β


@torch.library.custom_op("crossglg::layernorm_linear", mutates_args=())
def _layernorm_linear_op(
    x: Tensor, norm_weight: Tensor, norm_bias: Tensor, weight: Tensor, bias: Tensor | None, eps: float
) -> Tensor:
    rows, c = x.shape
    n = weight.shape[0]
    out = torch.empty(rows, n, device=x.device, dtype=x.dtype)
    if rows:
        bm = row_tile(c)
        _forward_kernel[(triton.cdiv(rows, bm),)](
            x, norm_weight, norm_bias, weight, bias if bias is not None else weight, out,
            rows, c, n, x.stride(0), out.stride(0), eps,
            bias is not None, bm, _width_tile(c), *_column_chunks(n), num_warps=NUM_WARPS,
        )  # fmt: skip
    return out


@_layernorm_linear_op.register_fake
def _layernorm_linear_fake(
    x: Tensor, norm_weight: Tensor, norm_bias: Tensor, weight: Tensor, bias: Tensor | None, eps: float
) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


@torch.library.custom_op("crossglg::layernorm_linear_backward", mutates_args=())
def layernorm_linear_backward(
    dout: Tensor, x: Tensor, norm_weight: Tensor, norm_bias: Tensor, weight: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, d γ, d β, d W, d bias)`` of the kernel path for the output gradient ``dout`` ``[R, N]``."""
    rows, c = x.shape
    n = weight.shape[0]
    dout = dout.to(x.dtype)
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    dx = torch.empty(rows, c, device=x.device, dtype=x.dtype)
    normed = torch.empty_like(dx)
    bm = row_tile(c)
    programs = triton.cdiv(rows, bm)
    # every program writes its whole row of partial sums
    dnorm_part = torch.empty(programs, 2, c, device=x.device, dtype=torch.float32)
    dbias_part = torch.empty(programs, n, device=x.device, dtype=torch.float32)
    if rows:
        _backward_kernel[(programs,)](
            dout, x, norm_weight, norm_bias, weight, dx, normed, dnorm_part, dbias_part,
            rows, c, n, dout.stride(0), x.stride(0), eps,
            bm, _width_tile(c), *_column_chunks(n), num_warps=NUM_WARPS,
        )  # fmt: skip
    dnorm = dnorm_part.sum(0)
    dweight = torch.mm(dout.t(), normed)
    dtype = norm_weight.dtype
    return dx, dnorm[0].to(dtype), dnorm[1].to(dtype), dweight, dbias_part.sum(0).to(weight.dtype)


@layernorm_linear_backward.register_fake
def _backward_fake(
    dout: Tensor, x: Tensor, norm_weight: Tensor, norm_bias: Tensor, weight: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return (
        torch.empty_like(x),
        torch.empty_like(norm_weight),
        torch.empty_like(norm_bias),
        torch.empty_like(weight),
        weight.new_empty(weight.shape[0]),
    )


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, norm_weight, norm_bias, weight, bias, eps = inputs
    ctx.save_for_backward(x, norm_weight, norm_bias, weight)
    ctx.eps, ctx.has_bias = eps, bias is not None


def _backward(ctx, dout: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, None]:  # noqa: ANN001
    x, norm_weight, norm_bias, weight = ctx.saved_tensors
    dx, dgamma, dbeta, dweight, dbias = layernorm_linear_backward(
        dout, x, norm_weight, norm_bias, weight, ctx.eps
    )
    return dx, dgamma, dbeta, dweight, dbias if ctx.has_bias else None, None


_layernorm_linear_op.register_autograd(_backward, setup_context=_setup_context)


def check_kernels(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    rows: int = 1000,
    c: int = 64,
    n: int = 48,
    seed: int = 0,
) -> dict[str, float | bool]:
    """Relative errors of the output and every gradient against the float64 two-op function.

    ``rows`` not a multiple of the row tile and ``c``, ``n`` below their power-of-two tiles exercise
    the masks. ``used_kernels``: whether Triton ran.
    """
    g = torch.Generator().manual_seed(seed)
    x64 = torch.randn(rows, c, generator=g, dtype=torch.float64) * 2 + 0.5
    params64 = [
        1 + 0.3 * torch.randn(c, generator=g, dtype=torch.float64),
        0.3 * torch.randn(c, generator=g, dtype=torch.float64),
        torch.randn(n, c, generator=g, dtype=torch.float64) / c**0.5,
        torch.randn(n, generator=g, dtype=torch.float64),
    ]
    dout64 = torch.randn(rows, n, generator=g, dtype=torch.float64)
    x = x64.to(device, dtype).requires_grad_()
    params = [p.to(device, torch.float32).requires_grad_() for p in params64]
    out = layernorm_linear(x, *params, 1e-5)
    out.backward(dout64.to(device, dtype))
    leaves = [t.detach().double().cpu().requires_grad_() for t in (x, *params)]
    out_ref = F.linear(F.layer_norm(leaves[0], (c,), leaves[1], leaves[2], 1e-5), leaves[3], leaves[4])
    out_ref.backward(dout64.to(dtype).double())
    names = ("x", "norm_weight", "norm_bias", "weight", "bias")
    errors = {"out": relative_error(out, out_ref)}
    errors.update(
        {
            f"grad_{k}": relative_error(a.grad, b.grad)
            for k, a, b in zip(names, (x, *params), leaves, strict=True)
        }
    )
    finite = all(bool(t.isfinite().all()) for t in (out, x.grad, *(p.grad for p in params)))
    return {**errors, "used_kernels": kernels_apply(x.detach(), params[2]), "finite": finite}


def _register_flop_formulas() -> None:
    """Useful FLOPs for ``torch.utils.flop_counter``: the projection (forward); the rows' and the
    weight's gradient products (backward)."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.crossglg.layernorm_linear)
    def _forward_flops(x_shape, norm_weight_shape, norm_bias_shape, weight_shape, *_, **__) -> int:  # noqa: ANN001
        return 2 * x_shape[0] * x_shape[1] * weight_shape[0]

    @register_flop_formula(torch.ops.crossglg.layernorm_linear_backward)
    def _backward_flops(dout_shape, x_shape, *_, **__) -> int:  # noqa: ANN001
        return 4 * x_shape[0] * x_shape[1] * dout_shape[1]


_register_flop_formulas()

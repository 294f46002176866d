"""The multi-scale TCN's dilated temporal convolutions as Triton kernels on channels-last rows.

Each branch ``b`` of the TCN is a ``C_b → C_b`` convolution over time only (kernel ``K`` = 5,
dilation ``d_b``, 'same' padding, stride 1 or 2) on its own channel slice. In channels-last memory a
feature map ``[N, C, T, V]`` is a matrix of rows ``(n, t, v)`` with the channels contiguous, and a
tap ``k`` of a temporal convolution reads, for output row ``(n, t, v)``, input row
``(n, t·s + (k − K//2)·d_b, v)``: the whole convolution is ``K`` GEMMs of shifted row blocks, summed
(an implicit GEMM). The kernels here compute it that way:

- forward and input gradient (:func:`_shifted_gemm_kernel`): one program per block of output rows and
  per branch, ``K`` products ``[rows, C_b] @ [C_b, C_b]`` accumulated in fp32, rows outside the
  sequence masked (the zero padding); the input gradient is the same loop with the taps mirrored
  (and, for stride 2, the rows whose source falls between two outputs masked);
- weight and bias gradients (:func:`_weight_grad_kernel`): per chunk of output rows and branch,
  ``xᵀ @ dy`` of the five taps over the chunk into fp32 partials (each ``dy`` block read once); the
  partials are summed afterwards (deterministic, no atomics).

Why: cuDNN ran these convolutions at 22–23% of their byte floor (H100, 2026-12-07,
``bench/op_roofline.py``): 16–64 output channels per call leave its tiles half empty, and it copies
strided channel slices to dense tensors first. Here both branches are one launch per direction
without the zero taps of :func:`trainer.models.infogcn.merged_dilated_weight`, the input is read
through its row stride (a channel slice of a wider tensor costs no copy) and so is the incoming
gradient. Used where :func:`kernels_apply` says so (bf16/fp16 CUDA tensors, ``C_b`` a power of two
≥ 16); elsewhere :func:`dilated_branches` runs ``F.conv2d`` per branch, the reference the kernels
are tested against.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.models.batchnorm_kernels import rows_view
from trainer.models.triton_support import relative_error, tl, triton, triton_applies

# The kernels' launches, timed on an H100 (``bench/op_roofline.py --sweep-tconv``, fwd + bwd of the
# five TCN shapes at batch 128): output rows per program and warps of the forward / input-gradient
# kernel (64 rows, 4 warps best of 32/64/128 × 4/8, 2026-12-07, sessions 15 and 16); rows per inner
# step, about how many programs (chunks × branches), warps and pipeline stages of the weight-gradient
# kernel (session 16: 64 rows, 256 programs, 4 warps, 3 stages, 2.82 ms per step against 3.31 for the
# untimed pick of session 15 — 32 rows, 8 warps, 2 stages — and 3.09 for the merged cuDNN
# convolution; 128 programs did 3–5% better on the two 256-channel shapes and worse on the three
# others, so one launch serves all). At the model's shapes (batch 128, where the row loop is long
# enough for Triton to pipeline it) it takes 160 / 255 / 220 registers per thread on sm_90, spills 8
# bytes at C_b = 32 and uses 6 / 12 / 137 KiB of shared memory at C_b = 16 / 32 / 64 (one block per
# SM at 64; ``bench/kernel_resources.py``): session 15's spill-free pick was slower on every shape.
LAUNCH = {
    "rows": 64,
    "warps": 4,
    "wgrad_rows": 64,
    "wgrad_programs": 256,
    "wgrad_warps": 4,
    "wgrad_stages": 3,
}


TAPS = 5  # the kernels' temporal kernel size (the TCN's)


def kernels_apply(x: Tensor, branch_channels: int) -> bool:
    """The Triton path: half-precision tensors on CUDA (any device when interpreting) whose rows are
    uniformly strided, and a branch width ``tl.dot`` takes whole (a power of two, 16–128); the
    kernel size must be :data:`TAPS` (checked by the op)."""
    return (
        triton_applies(x)
        and rows_view(x) is not None
        and 16 <= branch_channels <= 128
        and branch_channels & (branch_channels - 1) == 0
    )


if triton is not None:

    @triton.jit
    def _shifted_gemm_kernel(
        a_ptr, w_ptr, bias_ptr, out_ptr,
        rows_out, T_a, T_o, V, sa, so, S,
        BC: tl.constexpr, K: tl.constexpr, GRAD: tl.constexpr, HAS_BIAS: tl.constexpr,
        BM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr,
    ):  # fmt: skip
        """``out[r, b·BC:(b+1)·BC] = Σ_k a[src(r, k), b·BC:(b+1)·BC] @ w[b, k]`` (+ bias).

        Forward (``GRAD`` False): ``src = (n, t·S + (k − K//2)·d, v)``, ``a`` the input (``T_a`` frames),
        ``out`` the output (``T_o``). Input gradient (``GRAD``): ``a`` is the output gradient
        (``T_a`` = the output's frames), ``out`` the input gradient, and row ``(n, t, v)`` gathers
        from ``(n, (t − (k − K//2)·d) / S, v)`` where that is a whole frame.
        """
        pid = tl.program_id(0)
        b = tl.program_id(1)
        d = tl.where(b == 0, D0, tl.where(b == 1, D1, tl.where(b == 2, D2, D3)))  # this branch's dilation
        rows = pid * BM + tl.arange(0, BM)
        live = rows < rows_out
        per_n = T_o * V
        n = rows // per_n
        rem = rows - n * per_n
        t = rem // V
        v = rem - t * V
        ci = tl.arange(0, BC)
        acc = tl.zeros((BM, BC), dtype=tl.float32)
        for k in tl.static_range(K):
            shift = (k - K // 2) * d
            if GRAD:
                num = t - shift
                src_t = num // S
                ok = live & (num >= 0) & (num - src_t * S == 0) & (src_t < T_a)
            else:
                src_t = t * S + shift
                ok = live & (src_t >= 0) & (src_t < T_a)
            src = ((n * T_a + src_t) * V + v).to(tl.int64)
            a = tl.load(a_ptr + src[:, None] * sa + (b * BC + ci)[None, :], mask=ok[:, None], other=0.0)
            w = tl.load(w_ptr + ((b * K + k) * BC + ci[:, None]) * BC + ci[None, :])
            acc += tl.dot(a, w)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + b * BC + ci).to(tl.float32)[None, :]
        dst = rows.to(tl.int64)[:, None] * so + (b * BC + ci)[None, :]
        tl.store(out_ptr + dst, acc.to(out_ptr.dtype.element_ty), mask=live[:, None])

    @triton.jit
    def _tap_grad(x_ptr, sx, n, t, v, live, b, T_x, V, S, shift, ci, dy, BC: tl.constexpr):
        """One tap's ``x[src]ᵀ @ dy`` over a block of output rows (``src`` shifted by ``shift`` frames)."""
        src_t = t * S + shift
        ok = live & (src_t >= 0) & (src_t < T_x)
        src = ((n * T_x + src_t) * V + v).to(tl.int64)
        x = tl.load(x_ptr + src[:, None] * sx + (b * BC + ci)[None, :], mask=ok[:, None], other=0.0)
        return tl.dot(tl.trans(x), dy)

    @triton.jit
    def _weight_grad_kernel(
        x_ptr, dy_ptr, part_w_ptr, part_b_ptr,
        rows_out, T_x, T_o, V, sx, sdy, S,
        BC: tl.constexpr, BM: tl.constexpr, STEPS: tl.constexpr,
        D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, D3: tl.constexpr,
    ):  # fmt: skip
        """Partial ``Σ_r x[src(r, k)]ᵀ dy[r]`` for the five taps of one branch over one chunk of output
        rows, and ``Σ_r dy[r]`` (the bias gradient): each block of ``dy`` is read once for all taps,
        the five shifted blocks of ``x`` overlap (cache hits)."""
        chunk = tl.program_id(0)
        b = tl.program_id(1)
        d = tl.where(b == 0, D0, tl.where(b == 1, D1, tl.where(b == 2, D2, D3)))
        ci = tl.arange(0, BC)
        acc0 = tl.zeros((BC, BC), dtype=tl.float32)
        acc1 = tl.zeros((BC, BC), dtype=tl.float32)
        acc2 = tl.zeros((BC, BC), dtype=tl.float32)
        acc3 = tl.zeros((BC, BC), dtype=tl.float32)
        acc4 = tl.zeros((BC, BC), dtype=tl.float32)
        bias_acc = tl.zeros((BC,), dtype=tl.float32)
        per_n = T_o * V
        first = chunk * (STEPS * BM)
        for step in range(STEPS):  # a constexpr trip count (Triton's interpreter needs one)
            rows = first + step * BM + tl.arange(0, BM)
            live = rows < rows_out
            n = rows // per_n
            rem = rows - n * per_n
            t = rem // V
            v = rem - t * V
            dst = rows.to(tl.int64)[:, None] * sdy + (b * BC + ci)[None, :]
            dy = tl.load(dy_ptr + dst, mask=live[:, None], other=0.0)
            acc0 += _tap_grad(x_ptr, sx, n, t, v, live, b, T_x, V, S, -2 * d, ci, dy, BC)
            acc1 += _tap_grad(x_ptr, sx, n, t, v, live, b, T_x, V, S, -d, ci, dy, BC)
            acc2 += _tap_grad(x_ptr, sx, n, t, v, live, b, T_x, V, S, 0, ci, dy, BC)
            acc3 += _tap_grad(x_ptr, sx, n, t, v, live, b, T_x, V, S, d, ci, dy, BC)
            acc4 += _tap_grad(x_ptr, sx, n, t, v, live, b, T_x, V, S, 2 * d, ci, dy, BC)
            bias_acc += tl.sum(dy.to(tl.float32), axis=0)
        slot = chunk * tl.num_programs(1) + b
        tile = ci[:, None] * BC + ci[None, :]
        base = part_w_ptr + slot * 5 * BC * BC
        tl.store(base + tile, acc0)
        tl.store(base + BC * BC + tile, acc1)
        tl.store(base + 2 * BC * BC + tile, acc2)
        tl.store(base + 3 * BC * BC + tile, acc3)
        tl.store(base + 4 * BC * BC + tile, acc4)
        tl.store(part_b_ptr + slot * BC + ci, bias_acc)


MAX_BRANCHES = 4  # the kernels take the dilations as up to four compile-time constants


def _four(dilations: Sequence[int]) -> list[int]:
    """The dilations padded to :data:`MAX_BRANCHES` constants (no device tensor: nothing is copied to
    the GPU per call, which a CUDA graph capture would not allow)."""
    return [*dilations, *[1] * (MAX_BRANCHES - len(dilations))]


def _kernels_take(x: Tensor, weight: Tensor) -> bool:
    """Whether the kernels compute the op for ``x`` and ``weight [branches, C_b, C_b, K]``: at most
    :data:`MAX_BRANCHES` branches, ``K`` = :data:`TAPS`, and :func:`kernels_apply`."""
    nb, bc, _, k = weight.shape
    return nb <= MAX_BRANCHES and k == TAPS and kernels_apply(x, bc)


def _tap_major(weight: Tensor, dtype: torch.dtype, mirrored: bool = False) -> Tensor:
    """``weight [branches, out, in, K]`` as :func:`_shifted_gemm_kernel` reads it: ``[branch, tap, in,
    out]`` for the forward, ``[branch, tap, out, in]`` (``mirrored``) for the input gradient."""
    return weight.to(dtype).permute(0, 3, *((1, 2) if mirrored else (2, 1))).contiguous()


def _geometry(x: Tensor, weight: Tensor) -> tuple[int, int, int, int, int]:
    """(N, T, V, branches, branch width) of the op's input ``x [N, nb·bc, T, V]`` and ``weight``."""
    n, c, t, v = x.shape
    nb, bc, bc_in, _ = weight.shape
    if bc != bc_in or c != nb * bc:
        raise ValueError(
            f"dilated_branches needs x [N, branches·C_b, T, V] and weight [branches, C_b, C_b, K]; "
            f"got x {list(x.shape)} and weight {list(weight.shape)}"
        )
    return n, t, v, nb, bc


def _frames_out(t: int, stride: int) -> int:
    return (t - 1) // stride + 1  # 'same' padding: ceil(T / stride)


def _reference(x: Tensor, weight: Tensor, bias: Tensor, dilations: Sequence[int], stride: int) -> Tensor:
    """Each branch as ``F.conv2d`` on its channel slice, concatenated (the fallback and the reference)."""
    nb, bc, _, k = weight.shape
    outs = [
        F.conv2d(
            x[:, i * bc : (i + 1) * bc],
            weight[i].unsqueeze(-1),
            bias[i * bc : (i + 1) * bc],
            stride=(stride, 1),
            padding=(d * (k - 1) // 2, 0),
            dilation=(d, 1),
        )
        for i, d in enumerate(dilations)
    ]
    return torch.cat(outs, dim=1).contiguous(memory_format=torch.channels_last)


def _reference_backward(
    dy: Tensor, x: Tensor, weight: Tensor, dilations: Sequence[int], stride: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, d weight, d bias)`` of :func:`_reference`, branch by branch with ATen's convolution backward."""
    nb, bc, _, k = weight.shape
    parts = [
        torch.ops.aten.convolution_backward(
            dy[:, i * bc : (i + 1) * bc],
            x[:, i * bc : (i + 1) * bc],
            weight[i].unsqueeze(-1).to(x.dtype),
            [bc],
            [stride, 1],
            [d * (k - 1) // 2, 0],
            [d, 1],
            False,
            [0, 0],
            1,
            [True, True, True],
        )
        for i, d in enumerate(dilations)
    ]
    dx = torch.cat([p[0] for p in parts], dim=1).contiguous(memory_format=torch.channels_last)
    dw = torch.stack([p[1].squeeze(-1) for p in parts]).to(weight.dtype)
    return dx, dw, torch.cat([p[2] for p in parts]).to(weight.dtype)


def _empty_rows(n: int, c: int, t: int, v: int, like: Tensor) -> Tensor:
    return torch.empty(n, c, t, v, device=like.device, dtype=like.dtype, memory_format=torch.channels_last)


def _shifted_gemm(
    a: Tensor, w: Tensor, bias: Tensor | None, dilations: Sequence[int], t_out: int, stride: int, grad: bool
) -> Tensor:
    n, _, t_a, v = a.shape
    nb, k, bc, _ = w.shape
    out = _empty_rows(n, nb * bc, t_out, v, a)
    rows = n * t_out * v
    if rows:
        grid = (triton.cdiv(rows, LAUNCH["rows"]), nb)
        _shifted_gemm_kernel[grid](
            a, w, bias if bias is not None else w, out, rows, t_a, t_out, v, rows_view(a), nb * bc,
            stride, bc, k, grad, bias is not None, LAUNCH["rows"], *_four(dilations),
            num_warps=LAUNCH["warps"],
        )  # fmt: skip
    return out


@torch.library.custom_op("crossglg::dilated_branches", mutates_args=())
def _dilated_branches_op(
    x: Tensor, weight: Tensor, bias: Tensor, dilations: list[int], stride: int
) -> Tensor:
    n, t, v, nb, bc = _geometry(x, weight)
    if not _kernels_take(x, weight):
        return _reference(x, weight, bias, dilations, stride)
    return _shifted_gemm(
        x, _tap_major(weight, x.dtype), bias, dilations, _frames_out(t, stride), stride, grad=False
    )


@_dilated_branches_op.register_fake
def _dilated_branches_fake(
    x: Tensor, weight: Tensor, bias: Tensor, dilations: list[int], stride: int
) -> Tensor:
    n, t, v, nb, bc = _geometry(x, weight)
    return _empty_rows(n, nb * bc, _frames_out(t, stride), v, x)


@torch.library.custom_op("crossglg::dilated_branches_backward", mutates_args=())
def _dilated_branches_backward(
    dy: Tensor, x: Tensor, weight: Tensor, dilations: list[int], stride: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, d weight, d bias)`` of :func:`dilated_branches`."""
    n, t, v, nb, bc = _geometry(x, weight)
    dy = dy.to(x.dtype)
    if not (_kernels_take(x, weight) and rows_view(dy) is not None):
        return _reference_backward(dy, x, weight, dilations, stride)
    dx = _shifted_gemm(dy, _tap_major(weight, x.dtype, mirrored=True), None, dilations, t, stride, grad=True)
    dw, db = _weight_grad(x, dy, nb, dilations, stride)
    return dx, dw.to(weight.dtype), db.to(weight.dtype)


def _weight_grad(
    x: Tensor, dy: Tensor, nb: int, dilations: Sequence[int], stride: int
) -> tuple[Tensor, Tensor]:
    """fp32 ``(d weight [branches, out, in, K], d bias [branches·C_b])`` with :func:`_weight_grad_kernel`."""
    n, _, t, v = x.shape
    bc, t_out = dy.shape[1] // nb, dy.shape[2]
    rows = n * t_out * v
    step_rows = LAUNCH["wgrad_rows"]
    chunks = max(1, min(triton.cdiv(rows, step_rows), LAUNCH["wgrad_programs"] // nb))
    chunk_rows = triton.cdiv(triton.cdiv(rows, chunks), step_rows) * step_rows
    chunks = triton.cdiv(rows, chunk_rows)
    part_w = torch.empty(chunks, nb, TAPS, bc, bc, device=x.device, dtype=torch.float32)
    part_b = torch.empty(chunks, nb, bc, device=x.device, dtype=torch.float32)
    _weight_grad_kernel[(chunks, nb)](
        x, dy, part_w, part_b, rows, t, t_out, v, rows_view(x), rows_view(dy), stride,
        bc, step_rows, chunk_rows // step_rows, *_four(dilations),
        num_warps=LAUNCH["wgrad_warps"], num_stages=LAUNCH["wgrad_stages"],
    )  # fmt: skip
    # [branch, tap, in, out] → [branch, out, in, tap]
    return part_w.sum(0).permute(0, 3, 2, 1).contiguous(), part_b.sum(0).flatten()


@_dilated_branches_backward.register_fake
def _backward_fake(
    dy: Tensor, x: Tensor, weight: Tensor, dilations: list[int], stride: int
) -> tuple[Tensor, Tensor, Tensor]:
    n, t, v, nb, bc = _geometry(x, weight)
    return _empty_rows(n, nb * bc, t, v, x), torch.empty_like(weight), weight.new_empty(nb * bc)


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, weight, _bias, dilations, stride = inputs
    ctx.save_for_backward(x, weight)
    ctx.dilations, ctx.stride = dilations, stride


def _backward(ctx, dy: Tensor) -> tuple:  # noqa: ANN001
    x, weight = ctx.saved_tensors
    dx, dw, db = _dilated_branches_backward(dy, x, weight, ctx.dilations, ctx.stride)
    return dx, dw, db, None, None


_dilated_branches_op.register_autograd(_backward, setup_context=_setup_context)


def dilated_branches(
    x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], dilations: Sequence[int], stride: int
) -> Tensor:
    """The TCN's dilated branches in one op: branch ``i`` convolves channels ``[i·C_b, (i+1)·C_b)`` of
    ``x [N, n·C_b, T, V]`` over time with ``weights[i] [C_b, C_b, K, 1]``, dilation ``dilations[i]``,
    'same' padding and ``stride``; the outputs are concatenated on channels, channels-last.

    The same function as one ``F.conv2d`` per branch (the fallback off CUDA); ``x`` may be a channel
    slice of a wider channels-last tensor.
    """
    weight = torch.stack([w.squeeze(-1) for w in weights])  # [branches, out, in, K]
    bias = torch.cat(list(biases))
    if not _kernels_take(x, weight):
        return _reference(x, weight, bias, dilations, stride)
    return _dilated_branches_op(x, weight, bias, list(dilations), stride)


def check_kernels(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    batch: int = 2,
    branch_channels: int = 16,
    frames: int = 12,
    joints: int = 5,
    stride: int = 1,
    seed: int = 0,
) -> dict[str, float | bool]:
    """Relative errors of the output and the three gradients against float64 ``F.conv2d`` per branch,
    on a channel slice of a wider channels-last tensor (the TCN's case), dilations (1, 2)."""
    g = torch.Generator().manual_seed(seed)
    bc, k, dil = branch_channels, 5, [1, 2]
    wide = torch.randn(batch, 3 * bc, frames, joints, generator=g, dtype=torch.float64)
    w64 = [torch.randn(bc, bc, k, 1, generator=g, dtype=torch.float64) * 0.2 for _ in dil]
    b64 = [torch.randn(bc, generator=g, dtype=torch.float64) for _ in dil]
    dy64 = torch.randn(batch, 2 * bc, _frames_out(frames, stride), joints, generator=g, dtype=torch.float64)

    def run(dt: torch.dtype, dev: str) -> tuple[Tensor, list[Tensor]]:
        full = wide.to(dev, dt).contiguous(memory_format=torch.channels_last)
        x = full[:, : 2 * bc].detach().requires_grad_()
        ws = [w.to(dev, dt).requires_grad_() for w in w64]
        bs = [b.to(dev, dt).requires_grad_() for b in b64]
        y = dilated_branches(x, ws, bs, dil, stride)
        y.backward(dy64.to(dev, dt).contiguous(memory_format=torch.channels_last))
        return y, [x.grad, *(w.grad for w in ws), *(b.grad for b in bs)]

    y, grads = run(dtype, device)
    y_ref, grads_ref = run(torch.float64, "cpu")
    names = ["dx", "dw_1", "dw_2", "db_1", "db_2"]
    errors = {name: relative_error(gr, ref) for name, gr, ref in zip(names, grads, grads_ref, strict=True)}
    probe = wide.to(device, dtype).contiguous(memory_format=torch.channels_last)[:, : 2 * bc]
    return {
        "y": relative_error(y, y_ref),
        **errors,
        "used_kernels": kernels_apply(probe, bc),
        "finite": bool(y.isfinite().all()),
    }


def _register_flop_formulas() -> None:
    """The useful FLOPs (real taps only) for ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import register_flop_formula

    def conv_flops(x_shape, weight_shape, stride) -> int:  # noqa: ANN001
        n, _, t, v = x_shape
        nb, bc, _, k = weight_shape
        return 2 * n * _frames_out(t, stride) * v * nb * bc * bc * k

    @register_flop_formula(torch.ops.crossglg.dilated_branches)
    def _forward_flops(x_shape, weight_shape, bias_shape, dilations, stride, *_, **__) -> int:  # noqa: ANN001
        return conv_flops(x_shape, weight_shape, stride)

    @register_flop_formula(torch.ops.crossglg.dilated_branches_backward)
    def _backward_flops(dy_shape, x_shape, weight_shape, dilations, stride, *_, **__) -> int:  # noqa: ANN001
        return 2 * conv_flops(x_shape, weight_shape, stride)


_register_flop_formulas()


if __name__ == "__main__":  # python -m trainer.models.temporal_conv [cpu|cuda]: the kernel check as JSON
    dev = sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps({s: check_kernels(dev, stride=s) for s in (1, 2)}))

"""Per-frame products of SA-GC: ``z[g] = a[g] @ y[g]`` for many tiny matrices (``[25, 75] @ [75, C]``).

Why a kernel of our own: NTU's 25 joints make the attention operand's rows 75 (= 25 joints × 3
heads) elements long, 150 bytes — not a multiple of 16, so cuBLAS falls back to its unaligned
(``align1``) kernels for the forward and both backward products. On an H200 those took ~25% of the
whole compiled training step (``bench/results/train_throughput_2026-11-22_a.log``). The Triton kernels
here load each frame's operands with masks into power-of-two tiles (32 × 128 × 64), multiply on the
tensor cores and write only the valid part, whatever the alignment; one program per frame and
column block, so every operand is read once.

:func:`frame_matmul` is a ``torch.library`` custom op (``crossglg::frame_matmul``) with its own
backward, so ``torch.compile`` treats it as one opaque kernel and CUDA graphs can capture it. It
uses the kernels for bf16/fp16 CUDA tensors when Triton is importable and falls back to
``torch.bmm`` otherwise (the CPU, fp32 reference paths), so the numbers of the fallback are the
reference the kernels are tested against.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from torch import Tensor

from trainer.models.triton_support import relative_error, tl, triton, triton_applies

_BM, _BK, _BN = 32, 128, 64  # largest tile: frame rows (≥ M), reduction (≥ K), output columns
# CROSSGLG_FRAME_MATMUL=bmm turns the kernels off (torch.bmm everywhere), for comparisons.
_ENABLED = {"kernels": os.environ.get("CROSSGLG_FRAME_MATMUL", "triton") != "bmm"}


def set_kernels_enabled(enabled: bool) -> None:
    """Use the Triton kernels where they apply (True, the default) or always ``torch.bmm`` (False)."""
    _ENABLED["kernels"] = enabled


def kernels_available(*tensors: Tensor) -> bool:
    """Whether the Triton path applies: Triton importable, CUDA half-precision operands, small M, K."""
    if not _ENABLED["kernels"] or not triton_applies(*tensors):
        return False
    a = tensors[0]
    return a.shape[1] <= _BM and a.shape[2] <= _BK


if triton is not None:

    @triton.jit
    def _forward_kernel(
        a_ptr, y_ptr, z_ptr, M, K, N,
        sag, sam, sak, syg, syk, syn, szg, szm, szn,
        BM: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
    ):  # fmt: skip
        g = tl.program_id(0).to(tl.int64)
        rm = tl.arange(0, BM)
        rk = tl.arange(0, BK)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        a_mask = (rm[:, None] < M) & (rk[None, :] < K)
        a = tl.load(a_ptr + g * sag + rm[:, None] * sam + rk[None, :] * sak, mask=a_mask, other=0.0)
        y_mask = (rk[:, None] < K) & (rn[None, :] < N)
        y = tl.load(y_ptr + g * syg + rk[:, None] * syk + rn[None, :] * syn, mask=y_mask, other=0.0)
        z = tl.dot(a, y)
        z_mask = (rm[:, None] < M) & (rn[None, :] < N)
        tl.store(
            z_ptr + g * szg + rm[:, None] * szm + rn[None, :] * szn, z.to(z_ptr.dtype.element_ty), z_mask
        )

    @triton.jit
    def _grad_a_kernel(
        dz_ptr, y_ptr, da_ptr, M, K, N,
        sdg, sdm, sdn, syg, syk, syn, sag, sam, sak,
        BM: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr, N_BLOCKS: tl.constexpr,
    ):  # fmt: skip
        # da[g] = dz[g] @ y[g]ᵀ, summed over the N_BLOCKS = cdiv(N, BN) column blocks of N.
        g = tl.program_id(0).to(tl.int64)
        rm = tl.arange(0, BM)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BM, BK), dtype=tl.float32)
        for nb in tl.static_range(N_BLOCKS):
            rn = nb * BN + tl.arange(0, BN)
            dz_mask = (rm[:, None] < M) & (rn[None, :] < N)
            dz = tl.load(dz_ptr + g * sdg + rm[:, None] * sdm + rn[None, :] * sdn, mask=dz_mask, other=0.0)
            yt_mask = (rn[:, None] < N) & (rk[None, :] < K)
            yt = tl.load(y_ptr + g * syg + rk[None, :] * syk + rn[:, None] * syn, mask=yt_mask, other=0.0)
            acc += tl.dot(dz, yt)
        da_mask = (rm[:, None] < M) & (rk[None, :] < K)
        da_ptrs = da_ptr + g * sag + rm[:, None] * sam + rk[None, :] * sak
        tl.store(da_ptrs, acc.to(da_ptr.dtype.element_ty), da_mask)


def _tile(k: int, n: int) -> tuple[int, int]:
    """Power-of-two reduction and column tiles (≥ 16, tl.dot's minimum) that fit ``k`` and ``n``."""
    return max(16, triton.next_power_of_2(k)), max(16, min(_BN, triton.next_power_of_2(n)))


def _launch_product(a: Tensor, y: Tensor) -> Tensor:
    """``a @ y`` per frame with :func:`_forward_kernel`, for any strides (views like ``aᵀ`` included).

    Row tile 32 for the forward (M = 25 rows), 128 for ``aᵀ`` in the ``y`` gradient (K = 75 rows).
    """
    g, m, k = a.shape
    n = y.shape[2]
    z = torch.empty(g, m, n, device=a.device, dtype=a.dtype)
    if g:
        bk, bn = _tile(k, n)
        bm = max(16, triton.next_power_of_2(m))
        grid = (g, triton.cdiv(n, bn))
        _forward_kernel[grid](a, y, z, m, k, n, *a.stride(), *y.stride(), *z.stride(), bm, bk, bn)
    return z


def _check(a: Tensor, y: Tensor) -> None:
    if a.dim() != 3 or y.dim() != 3 or a.shape[0] != y.shape[0] or a.shape[2] != y.shape[1]:
        raise ValueError(f"frame_matmul needs [G, M, K] @ [G, K, N], got {list(a.shape)} @ {list(y.shape)}")


@torch.library.custom_op("crossglg::frame_matmul", mutates_args=())
def frame_matmul(a: Tensor, y: Tensor) -> Tensor:
    """``torch.bmm(a, y)`` for ``a [G, M, K]``, ``y [G, K, N]`` (M ≤ 32, K ≤ 128 on the Triton path)."""
    _check(a, y)
    if not kernels_available(a, y):
        return torch.bmm(a, y)
    return _launch_product(a, y)


@frame_matmul.register_fake
def _frame_matmul_fake(a: Tensor, y: Tensor) -> Tensor:
    _check(a, y)
    return a.new_empty(a.shape[0], a.shape[1], y.shape[2])


@torch.library.custom_op("crossglg::frame_matmul_grad_a", mutates_args=())
def frame_matmul_grad_a(dz: Tensor, y: Tensor, k: int) -> Tensor:
    """``dz @ yᵀ`` (the gradient of :func:`frame_matmul` with respect to ``a``), ``[G, M, K]``."""
    if not kernels_available(dz, y):
        return torch.bmm(dz, y.transpose(1, 2))
    g, m, n = dz.shape
    da = torch.empty(g, m, k, device=dz.device, dtype=dz.dtype)
    if g:
        bk, bn = _tile(k, n)
        _grad_a_kernel[(g,)](
            dz, y, da, m, k, n, *dz.stride(), *y.stride(), *da.stride(), _BM, bk, bn, triton.cdiv(n, bn)
        )
    return da


@frame_matmul_grad_a.register_fake
def _grad_a_fake(dz: Tensor, y: Tensor, k: int) -> Tensor:
    return dz.new_empty(dz.shape[0], dz.shape[1], k)


@torch.library.custom_op("crossglg::frame_matmul_grad_y", mutates_args=())
def frame_matmul_grad_y(a: Tensor, dz: Tensor) -> Tensor:
    """``aᵀ @ dz`` (the gradient of :func:`frame_matmul` with respect to ``y``), ``[G, K, N]``."""
    if not kernels_available(a, dz):
        return torch.bmm(a.transpose(1, 2), dz)
    return _launch_product(a.transpose(1, 2), dz)  # the forward kernel on the transposed view


@frame_matmul_grad_y.register_fake
def _grad_y_fake(a: Tensor, dz: Tensor) -> Tensor:
    return a.new_empty(a.shape[0], a.shape[2], dz.shape[2])


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    a, y = inputs
    ctx.save_for_backward(a, y)


def _backward(ctx, dz: Tensor) -> tuple[Tensor | None, Tensor | None]:  # noqa: ANN001
    a, y = ctx.saved_tensors
    dz = dz.to(a.dtype)
    da = frame_matmul_grad_a(dz, y, a.shape[2]) if ctx.needs_input_grad[0] else None
    dy = frame_matmul_grad_y(a, dz) if ctx.needs_input_grad[1] else None
    return da, dy


frame_matmul.register_autograd(_backward, setup_context=_setup_context)


def check_kernels(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    frames: int = 6,
    n: int = 80,
    k: int = 75,
    seed: int = 0,
) -> dict[str, float | bool]:
    """Relative errors of the forward and both gradients against float64 ``torch.bmm``.

    Uses SA-GC's shapes (M = 25 rows; K = 75 for the topology product, K = 8…32 and N = 25 for the
    attention logits) on random non-contiguous inputs; ``n`` not a multiple of the tile exercises
    the masks. ``used_kernels`` says whether the Triton path ran (False: the fallback was checked).
    """
    g = torch.Generator().manual_seed(seed)
    a64 = torch.randn(frames, 25, k + 5, generator=g, dtype=torch.float64)[:, :, :k]  # padded row stride
    y64 = torch.randn(frames, n, k, generator=g, dtype=torch.float64).transpose(1, 2)  # K-major
    dz64 = torch.randn(frames, 25, n, generator=g, dtype=torch.float64)
    a = a64.to(device, dtype).requires_grad_()
    y = y64.to(device, dtype).requires_grad_()
    z = frame_matmul(a, y)
    z.backward(dz64.to(device, dtype))
    a_ref, y_ref = a.detach().double().cpu().requires_grad_(), y.detach().double().cpu().requires_grad_()
    z_ref = torch.bmm(a_ref, y_ref)
    z_ref.backward(dz64.to(dtype).double())

    errors = {
        "z": relative_error(z, z_ref),
        "grad_a": relative_error(a.grad, a_ref.grad),
        "grad_y": relative_error(y.grad, y_ref.grad),
    }
    return {
        **errors,
        "used_kernels": kernels_available(a.detach(), y.detach()),
        "finite": bool(z.isfinite().all()),
    }


if __name__ == "__main__":  # python -m trainer.models.frame_matmul [cpu|cuda]: the kernel check as JSON
    dev = sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps(check_kernels(dev)))


def _register_flop_formulas() -> None:
    """Teach ``torch.utils.flop_counter`` the ops' useful FLOPs (2·G·M·K·N each); MFU counts them."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.crossglg.frame_matmul)
    def _forward_flops(a_shape, y_shape, *_, **__) -> int:  # noqa: ANN001
        g, m, k = a_shape
        return 2 * g * m * k * y_shape[2]

    @register_flop_formula(torch.ops.crossglg.frame_matmul_grad_a)
    def _grad_a_flops(dz_shape, y_shape, k, *_, **__) -> int:  # noqa: ANN001
        g, m, n = dz_shape
        return 2 * g * m * k * n

    @register_flop_formula(torch.ops.crossglg.frame_matmul_grad_y)
    def _grad_y_flops(a_shape, dz_shape, *_, **__) -> int:  # noqa: ANN001
        g, m, k = a_shape
        return 2 * g * m * k * dz_shape[2]


_register_flop_formulas()

"""SA-GC for inference: the channel mixing inside the attention kernel, so its 3×-wide input is never written.

In :class:`trainer.models.infogcn.SelfAttentionGraphConv` one GEMM first mixes the channels for all
heads, ``y_h = x W_hᵀ`` (``[G, V·H, C']``, three times the block's width), and the fused attention
kernel (:mod:`trainer.models.sagc_attention`) then reads it per frame. Per block and batch of 256
in eval that tensor is ~0.3 GB written and read again (docs/performance.md, session 7). Without
autograd nothing needs it later, so here each program takes its frames (``pack`` of them as one
block-diagonal tile) and, per head, computes the attention map ``M_h = softmax(scale · q_h k_hᵀ) ⊙
A_h``, then ``u_h = M_h x`` (``[V, C]`` per frame, in registers), and accumulates ``z += u_h W_hᵀ``
over column tiles: the same function, ``Σ_h M_h (x W_hᵀ)``, reading only ``x``, ``q/k`` and the
weights. The products' order differs from the two-step path (``M_h x`` is rounded to the half
dtype, not ``x W_hᵀ``), which is within half-precision rounding.

Used in eval / ``torch.no_grad()`` only (no backward is registered); training keeps the two-step
path, whose backward needs ``y`` anyway. Opt-in (``fused_mixing`` of InfoGCN) until timed on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.models import sagc_epilogue
from trainer.models.sagc_attention import JOINT_TILE, head_tile
from trainer.models.sagc_attention import kernels_apply as attention_kernels_apply
from trainer.models.sagc_attention import reference as attention_reference
from trainer.models.sagc_epilogue import Epilogue, from_op_arguments, kernel_arguments, op_arguments
from trainer.models.triton_support import relative_error, tl, triton, triton_applies

if triton is not None:
    from trainer.models.sagc_epilogue import apply_epilogue


@dataclass(frozen=True)
class MixedLaunch:
    """How the kernel is launched (untuned defaults).

    ``pack`` frames share one program as one ``[pack·32, ·]`` tile: the attention maps become one
    block-diagonal ``[pack·32, pack·32]`` matrix, and each weight tile loaded serves ``pack`` frames
    (larger tensor-core tiles, fewer weight reads; ``pack``× the FLOPs in the map product); ``groups``
    packs per program one after the other (the weight tiles stay in cache between them). Then
    ``block_k`` input channels per chunk, ``block_n`` output columns per program, warps, stages.
    """

    pack: int = 1
    groups: int = 1
    block_k: int = 64
    block_n: int = 128
    num_warps: int = 4
    num_stages: int = 2


MIXED_LAUNCH = MixedLaunch()
# Per (C, C') of the model's blocks: the fastest launch found by bench/sagc_inference_tuning.py at
# eval batch 256 on the GPU it will run on; other shapes take MIXED_LAUNCH. Measured on an H100
# (2026-12-06, bench/results/sagc_inference_tuning_2026-12-06_s9_partial.log): at 128 → 128 this
# launch takes 0.758 ms for the forward's two calls against 0.819 ms for the two-step path (0.06 ms of a
# ~11 ms eval forward: fused_mixing stays off); the other shapes' sweeps did not finish in 70 s each.
TUNED_MIXED: dict[tuple[int, int], MixedLaunch] = {
    (128, 128): MixedLaunch(pack=2, groups=1, block_k=64, block_n=256, num_warps=4, num_stages=2),
}


def mixed_launch(c: int, n: int) -> MixedLaunch:
    """The kernel's launch for ``c`` input channels and ``n`` output columns."""
    return TUNED_MIXED.get((c, n), MIXED_LAUNCH)


def mix_heads(x: Tensor, weight: Tensor) -> Tensor:
    """``y[g, j·H + h, n] = Σ_c x[g, j, c] · W[h, n, c]``: the two-step path's mixed features.

    Args:
        x: ``[G, V, C]`` joint features of each frame.
        weight: ``[H, C', C]`` per-head mixing weights.
    """
    g, v, _ = x.shape
    heads, n, _ = weight.shape
    return torch.einsum("gjc,hnc->gjhn", x, weight).reshape(g, v * heads, n)


def reference(qk: Tensor, topology: Tensor, x: Tensor, weight: Tensor, heads: int, scale: float) -> Tensor:
    """The same function in PyTorch: mix, then the attention path (:func:`sagc_attention.reference`)."""
    return attention_reference(qk, topology, mix_heads(x, weight), heads, scale)


def kernels_apply(qk: Tensor, topology: Tensor, x: Tensor, weight: Tensor, heads: int) -> bool:
    """Where the attention kernel applies (:func:`sagc_attention.kernels_apply`, with ``x`` as its
    features), with ``weight`` a half-precision device tensor too and all three of one dtype."""
    return (
        attention_kernels_apply(qk, topology, x, heads)
        and triton_applies(weight)
        and qk.dtype == x.dtype == weight.dtype
    )


if triton is not None:

    @triton.jit
    def _sagc_mixed_forward_kernel(
        qk_ptr, topo_ptr, x_ptr, w_ptr, z_ptr, G, V, C, N, D, scale,
        sqg, sqv, sqc, sth, sti, stj, sxg, sxv, sxc, swh, swn, swc, szg, szv, szn,
        ep_scale, ep_shift, res_ptr, srg, srv, srn, jw_ptr, sjs, sjv, frames,
        AFFINE: tl.constexpr, RESIDUAL: tl.constexpr, RELU: tl.constexpr, JOINT_WEIGHT: tl.constexpr,
        H: tl.constexpr, BV: tl.constexpr, PACK: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr,
        BN: tl.constexpr, K_BLOCKS: tl.constexpr, GROUPS: tl.constexpr,
    ):  # fmt: skip
        r = tl.arange(0, BV * PACK)  # tile row: frame r // BV of this program's pack, joint r % BV
        j = r % BV
        same = (r[:, None] // BV) == (r[None, :] // BV)  # the block diagonal: pairs within one frame
        pair = same & (j[:, None] < V) & (j[None, :] < V)
        rd = tl.arange(0, BD)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        nmask = rn < N
        # GROUPS packs one after the other: the weight tiles a pack loads are the next pack's too
        # (served from L1/L2 instead of being fetched anew by another program).
        for grp in range(GROUPS):
            g = (tl.program_id(0).to(tl.int64) * GROUPS + grp) * PACK + r // BV
            row = (j < V) & (g < G)
            qmask = row[:, None] & (rd[None, :] < D)
            qk_rows = qk_ptr + g[:, None] * sqg + j[:, None] * sqv
            acc = tl.zeros((BV * PACK, BN), dtype=tl.float32)
            for h in tl.static_range(H):
                q = tl.load(qk_rows + (h * D + rd[None, :]) * sqc, mask=qmask, other=0.0)
                k = tl.load(qk_rows + ((H + h) * D + rd[None, :]) * sqc, mask=qmask, other=0.0)
                s = tl.dot(q, tl.trans(k)) * scale
                # A finite floor, not -inf: the rows of a frame past the end have no key at all.
                s = tl.where(pair & row[None, :], s, -1.0e30)
                p = tl.exp(s - tl.max(s, axis=1)[:, None])
                p = p / tl.sum(p, axis=1)[:, None]
                topo = tl.load(topo_ptr + h * sth + j[:, None] * sti + j[None, :] * stj, mask=pair, other=0.0)
                m = (p * topo).to(x_ptr.dtype.element_ty)  # zero off the block diagonal
                for kb in tl.static_range(K_BLOCKS):
                    rk = kb * BK + tl.arange(0, BK)
                    kmask = rk < C
                    xk = tl.load(
                        x_ptr + g[:, None] * sxg + j[:, None] * sxv + rk[None, :] * sxc,
                        mask=row[:, None] & kmask[None, :],
                        other=0.0,
                    )
                    u = tl.dot(m, xk).to(x_ptr.dtype.element_ty)  # M_h x for this chunk of C
                    wt = tl.load(
                        w_ptr + h * swh + rk[:, None] * swc + rn[None, :] * swn,
                        mask=kmask[:, None] & nmask[None, :],
                        other=0.0,
                    )
                    acc += tl.dot(u, wt)  # (M_h x) W_hᵀ: this chunk's share
            acc = apply_epilogue(
                acc, g, j, rn, row, nmask, ep_scale, ep_shift, res_ptr, srg, srv, srn,
                jw_ptr, sjs, sjv, frames, AFFINE, RESIDUAL, RELU, JOINT_WEIGHT,
            )  # fmt: skip
            zmask = row[:, None] & nmask[None, :]
            tl.store(
                z_ptr + g[:, None] * szg + j[:, None] * szv + rn[None, :] * szn,
                acc.to(z_ptr.dtype.element_ty),
                zmask,
            )


def sagc_mixed_attention(
    qk: Tensor,
    topology: Tensor,
    x: Tensor,
    weight: Tensor,
    heads: int,
    scale: float,
    epilogue: Epilogue | None = None,
) -> Tensor:
    """``Σ_h (softmax(scale·q_h k_hᵀ) ⊙ A_h) @ (x W_hᵀ)`` per frame, ``[G, V, C']`` in ``x``'s dtype.

    Args:
        qk: ``[G, V, 2·H·d]`` query/key rows (as :func:`sagc_attention.reference` takes them).
        topology: ``[H, V, V]`` shared topology.
        x: ``[G, V, C]`` joint features of each frame.
        weight: ``[H, C', C]`` per-head mixing weights.
        epilogue: the layer's eval tail applied before the write (:mod:`trainer.models.sagc_epilogue`).

    The kernel where it applies (:func:`kernels_apply`) and no gradient is asked for (the kernel has
    no backward), else :func:`reference` (PyTorch's autograd).
    """
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (qk, topology, x, weight))
    if kernels_apply(qk, topology, x, weight, heads) and not wants_grad:
        return _sagc_mixed_attention_op(qk, topology, x, weight, heads, scale, *op_arguments(epilogue))
    z = reference(qk, topology, x, weight, heads, scale)
    return z if epilogue is None else sagc_epilogue.reference(z, epilogue)


@torch.library.custom_op("crossglg::sagc_mixed_attention", mutates_args=())
def _sagc_mixed_attention_op(
    qk: Tensor,
    topology: Tensor,
    x: Tensor,
    weight: Tensor,
    heads: int,
    scale: float,
    ep_scale: Tensor | None,
    ep_shift: Tensor | None,
    residual: Tensor | None,
    joint_weight: Tensor | None,
    frames: int,
    relu: bool,
) -> Tensor:
    epilogue = from_op_arguments(ep_scale, ep_shift, residual, joint_weight, frames, relu)
    launch = mixed_launch(x.shape[2], weight.shape[1])
    return mixed_forward(qk, topology, x, weight, heads, scale, launch, epilogue)


def mixed_forward(
    qk: Tensor,
    topology: Tensor,
    x: Tensor,
    weight: Tensor,
    heads: int,
    scale: float,
    launch: MixedLaunch,
    epilogue: Epilogue | None = None,
) -> Tensor:
    """The kernel with an explicit launch (the op and the checks call this)."""
    g, v, width = qk.shape
    d, c, n = width // (2 * heads), x.shape[2], weight.shape[1]
    z = torch.empty(g, v, n, device=x.device, dtype=x.dtype)
    if g:
        bk = max(16, min(launch.block_k, triton.next_power_of_2(c)))
        bn = max(16, min(launch.block_n, triton.next_power_of_2(n)))
        grid = (triton.cdiv(g, launch.pack * launch.groups), triton.cdiv(n, bn))
        _sagc_mixed_forward_kernel[grid](
            qk, topology, x, weight, z, g, v, c, n, d, scale,
            *qk.stride(), *topology.stride(), *x.stride(), *weight.stride(), *z.stride(),
            *kernel_arguments(epilogue, z),
            heads, JOINT_TILE, launch.pack, head_tile(d), bk, bn, triton.cdiv(c, bk), launch.groups,
            num_warps=launch.num_warps, num_stages=launch.num_stages,
        )  # fmt: skip
    return z


@_sagc_mixed_attention_op.register_fake
def _sagc_mixed_attention_fake(
    qk: Tensor,
    topology: Tensor,
    x: Tensor,
    weight: Tensor,
    heads: int,
    scale: float,
    ep_scale: Tensor | None,
    ep_shift: Tensor | None,
    residual: Tensor | None,
    joint_weight: Tensor | None,
    frames: int,
    relu: bool,
) -> Tensor:
    return x.new_empty(qk.shape[0], qk.shape[1], weight.shape[1])


def check_operands(
    g: torch.Generator, frames: int, d: int, c: int, n: int, heads: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Float64 ``(qk, topology, x, weight)`` of the kernel checks, laid out as the layer passes them:
    ``qk`` and ``x`` slices of wider rows, ``weight`` a transposed view ``[H, C', C]``."""
    v = 25
    qk = torch.randn(frames, v, 2 * heads * d + 4, generator=g, dtype=torch.float64)[:, :, : 2 * heads * d]
    topology = torch.randn(heads, v, v, generator=g, dtype=torch.float64)
    x = torch.randn(frames, v, c + 8, generator=g, dtype=torch.float64)[:, :, :c]
    weight = (torch.randn(n, heads, c, generator=g, dtype=torch.float64) * c**-0.5).transpose(0, 1)
    return qk, topology, x, weight


def check_kernels(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    frames: int = 5,
    d: int = 8,
    c: int = 64,
    n: int = 64,
    heads: int = 3,
    seed: int = 0,
    launch: MixedLaunch = MIXED_LAUNCH,
) -> dict[str, float | bool]:
    """Relative error of the kernel against the float64 reference, on strided inputs (``x`` a slice
    of wider rows, ``weight`` a transposed view as the layer passes it); ``used_kernels``: whether
    Triton ran."""
    qk64, topo64, x64, w64 = check_operands(torch.Generator().manual_seed(seed), frames, d, c, n, heads)
    qk, x, w = (t.to(device, dtype) for t in (qk64, x64, w64))
    topo = topo64.to(device, torch.float32)
    scale = d**-0.5
    used = kernels_apply(qk, topo, x, w, heads)
    z = (
        mixed_forward(qk, topo, x, w, heads, scale, launch)
        if used
        else sagc_mixed_attention(qk, topo, x, w, heads, scale)
    )
    ref = reference(*(t.detach().double().cpu() for t in (qk, topo, x, w)), heads, scale)
    return {"z": relative_error(z, ref), "used_kernels": used, "finite": bool(z.isfinite().all())}


def _register_flop_formula() -> None:
    """Useful FLOPs for ``torch.utils.flop_counter``: per frame and head the V×V×d logits, ``M_h x``
    (V×V×C) and the mixing (V×C×C')."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.crossglg.sagc_mixed_attention)
    def _flops(qk_shape, topology_shape, x_shape, weight_shape, heads, *_, **__) -> int:  # noqa: ANN001
        g, v, width = qk_shape
        c, n = x_shape[2], weight_shape[1]
        return 2 * g * heads * v * (v * (width // (2 * heads)) + v * c + c * n)


_register_flop_formula()

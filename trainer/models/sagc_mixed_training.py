"""SA-GC's channel mixing inside the attention kernel in training too: the 3×-wide ``y`` never exists.

The default training path (:class:`trainer.models.infogcn.SelfAttentionGraphConv`) runs a cuBLAS
GEMM ``y_h = x W_hᵀ`` (``[G, V·H, C']``, three times the block's width), the fused attention kernel
reads it and autograd keeps it; the backward then writes ``dy`` (3× wide again) and two cuBLAS GEMMs
read it twice. Per C = 64 block that is ~25 activation units of traffic (session 11's floors: the
mixing GEMM and the attention kernels move 14 of the 22.9 GB per training step of 128 that
Inductor's kernels do not).

Here, per frame ``g`` and head ``h`` with ``M_h = softmax(scale · q_h k_hᵀ) ⊙ A_h``:

- forward: ``z = Σ_h M_h (x W_hᵀ)``, the inference kernel of :mod:`trainer.models.sagc_inference`
  (reads ``x``, ``q/k`` and the weights, writes ``z``); nothing 3× wide is kept for the backward.
- backward, one kernel per group of frames: ``e_h = dz W_h`` (``[V, C]``), then ``dM_h = e_h xᵀ``
  (so the topology, query and key gradients as in the attention backward), ``dx = Σ_h M_hᵀ e_h``,
  and ``u_h = M_h x`` written once; the weight gradient ``dW_h = Σ_g dzᵀ u_h`` is one cuBLAS GEMM
  over all rows. The kernel works in two phases over chunks of C (``dM_h`` first, then ``dx`` and
  ``u_h`` with ``e_h`` computed again), so only ``[rows, block_c]`` tiles are live: built for sm_90
  it then spills at most 16 bytes per thread instead of 320–1,544 (``bench/kernel_resources.py``).

Bytes per C = 64 block in activation units (prediction, session 11): forward 8.75 → 2.75, backward
16.5 → ~11.5. The products are rounded in another order than the two-step path's (``e_h`` and
``M_h x`` to the half dtype instead of ``y`` and ``dy``): within half-precision rounding.

Opt-in (InfoGCN ``fused_mixing_train``) until timed on a GPU: the forward kernel lost to cuBLAS +
attention at most shapes in eval (sessions 8–9), so whether this pays is a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.models.sagc_attention import JOINT_TILE, head_tile
from trainer.models.sagc_inference import (
    MixedLaunch,
    check_operands,
    kernels_apply,
    mixed_forward,
    mixed_launch,
    reference,
)
from trainer.models.triton_support import relative_error, tl, triton


@dataclass(frozen=True)
class MixedBackwardLaunch:
    """How the backward kernel is launched (untuned defaults).

    ``pack`` frames share one tile (``[pack·32, ·]`` rows: each weight chunk loaded serves ``pack``
    frames, and ``dz W_h`` is a taller tensor-core product; the maps become block-diagonal, ``pack``×
    their FLOPs); ``groups`` packs per program one after the other (fewer topology-gradient slots);
    then the chunk of C kept live at a time, the output-column chunk of ``dz W_h``, warps and stages.
    """

    pack: int = 1
    groups: int = 4
    block_c: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 1


# Per (C, C'): the fastest backward launch found by bench/sagc_mixed_training_tuning.py --rounds 1 on an
# H100 (2026-12-07). The wider shapes have none: their sweeps faulted the GPU at pack 2 (see below).
TUNED_BACKWARD: dict[tuple[int, int], MixedBackwardLaunch] = {
    (64, 64): MixedBackwardLaunch(pack=1, groups=16, block_c=128, block_n=128, num_warps=4, num_stages=3),
    (64, 128): MixedBackwardLaunch(pack=1, groups=16, block_c=64, block_n=64, num_warps=4, num_stages=1),
}


# Per (C, C'): the forward kernel's launch for training where the sweep's ``--tune-forward`` found one
# better than the eval table's (trainer.models.sagc_inference.TUNED_MIXED); empty: not yet run.
TUNED_FORWARD: dict[tuple[int, int], MixedLaunch] = {}


def forward_launch(c: int, n: int) -> MixedLaunch:
    """The forward kernel's launch in training: the training table's, else the eval table's."""
    return TUNED_FORWARD.get((c, n)) or mixed_launch(c, n)


def backward_launch(c: int, n: int) -> MixedBackwardLaunch:
    """The backward's launch for ``c`` input channels and ``n`` output columns: the tuned one, else
    the defaults with eight warps. Compiled for sm_90 (``bench/kernel_resources.py --sweep``, Triton
    3.5), four warps spill 80–360 bytes per thread at every block shape unless one pack per program;
    eight warps at most 16 (the default path's attention backward: 0–96)."""
    if (c, n) in TUNED_BACKWARD:
        return TUNED_BACKWARD[(c, n)]
    return MixedBackwardLaunch(num_warps=8)


if triton is not None:

    @triton.jit
    def _softmax_map(
        qk_rows, topo_ptr, h, j, rd, qmask, pair, row, scale, D, sqc, sth, sti, stj,
        H: tl.constexpr,
    ):  # fmt: skip
        """Per head: q, k, the softmax ``p`` (zero off the pack's diagonal blocks), the topology and
        ``M_h = p ⊙ A_h``, all for the tile's rows."""
        q = tl.load(qk_rows + (h * D + rd[None, :]) * sqc, mask=qmask, other=0.0)
        k = tl.load(qk_rows + ((H + h) * D + rd[None, :]) * sqc, mask=qmask, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(pair & row[None, :], s, -1.0e30)  # finite: rows past the end have no key
        p = tl.exp(s - tl.max(s, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        topo = tl.load(topo_ptr + h * sth + j[:, None] * sti + j[None, :] * stj, mask=pair, other=0.0)
        p = tl.where(pair & row[None, :], p, 0.0)
        return q, k, p, topo

    @triton.jit
    def _dz_times_weight(
        dz_rows, w_ptr, h, rc, cmask, row, N, sdn, swh, swn, swc,
        ROWS: tl.constexpr, BC: tl.constexpr, BN: tl.constexpr, N_BLOCKS: tl.constexpr,
    ):  # fmt: skip
        """``e_h = dz W_h`` for one chunk of C: ``[rows, C']`` @ ``[C', BC]``, C' in BN chunks."""
        e = tl.zeros((ROWS, BC), dtype=tl.float32)
        for nb in range(N_BLOCKS):  # a loop on the GPU, not unrolled: less code, fewer live values
            rn = nb * BN + tl.arange(0, BN)
            nmask = rn < N
            dz = tl.load(dz_rows + rn[None, :] * sdn, mask=row[:, None] & nmask[None, :], other=0.0)
            wt = tl.load(
                w_ptr + h * swh + rn[:, None] * swn + rc[None, :] * swc,
                mask=nmask[:, None] & cmask[None, :],
                other=0.0,
            )
            e += tl.dot(dz, wt)
        return e

    @triton.jit
    def _sagc_mixed_backward_kernel(
        qk_ptr, topo_ptr, x_ptr, w_ptr, dz_ptr, dqk_ptr, dx_ptr, u_ptr, part_ptr, G, V, C, N, D, scale,
        sqg, sqv, sqc, sth, sti, stj, sxg, sxv, sxc, swh, swn, swc, sdg, sdv, sdn,
        s2g, s2v, s2c, s4g, s4v, s4c, sug, suv, suh, suc,
        H: tl.constexpr, BV: tl.constexpr, PACK: tl.constexpr, BD: tl.constexpr, BC: tl.constexpr,
        BN: tl.constexpr, C_BLOCKS: tl.constexpr, N_BLOCKS: tl.constexpr, GROUPS: tl.constexpr,
    ):  # fmt: skip
        # One tile holds PACK frames (rows r: frame r // BV of the pack, joint r % BV), so dz W_h is one
        # [PACK·32, C'] @ [C', BC] product per weight chunk, and the per-frame maps are one block-
        # diagonal [PACK·32, PACK·32] matrix (zero off the diagonal blocks, as in the forward kernel).
        # GROUPS packs per program, one after the other. Two phases per pack keep only chunks of C
        # live (registers, not local memory): (1) per head, dM_h = Σ_chunks (dz W_h) xᵀ, then the
        # topology and q/k gradients; (2) per chunk of C, dx = Σ_h M_hᵀ (dz W_h) and M_h x, with
        # dz W_h computed again (FLOPs are cheap here; the bytes are what this kernel saves).
        pid = tl.program_id(0)
        r = tl.arange(0, BV * PACK)
        j = r % BV
        same = (r[:, None] // BV) == (r[None, :] // BV)
        pair = same & (j[:, None] < V) & (j[None, :] < V)
        rd = tl.arange(0, BD)
        dtype = x_ptr.dtype.element_ty
        jv = tl.arange(0, BV)
        tmask = (jv[:, None] < V) & (jv[None, :] < V)
        for grp in range(GROUPS):
            g = (pid.to(tl.int64) * GROUPS + grp) * PACK + r // BV
            row = (j < V) & (g < G)
            qmask = row[:, None] & (rd[None, :] < D)
            qk_rows = qk_ptr + g[:, None] * sqg + j[:, None] * sqv
            x_rows = x_ptr + g[:, None] * sxg + j[:, None] * sxv
            dz_rows = dz_ptr + g[:, None] * sdg + j[:, None] * sdv
            for h in tl.static_range(H):
                q, k, p, topo = _softmax_map(
                    qk_rows, topo_ptr, h, j, rd, qmask, pair, row, scale, D, sqc, sth, sti, stj, H
                )
                dm = tl.zeros((BV * PACK, BV * PACK), dtype=tl.float32)
                for cb in range(C_BLOCKS):
                    rc = cb * BC + tl.arange(0, BC)
                    cmask = rc < C
                    e = _dz_times_weight(
                        dz_rows, w_ptr, h, rc, cmask, row, N, sdn, swh, swn, swc, BV * PACK, BC, BN, N_BLOCKS
                    )
                    x = tl.load(x_rows + rc[None, :] * sxc, mask=row[:, None] & cmask[None, :], other=0.0)
                    dm += tl.dot(e.to(dtype), tl.trans(x))  # dL/dM_h = dz y_hᵀ = e_h xᵀ
                # The topology gradient: the pack's diagonal blocks summed (the others are zero, as p
                # is), added to this program's own slot (no atomics). Triton orders no global store
                # before a later load of the same address by another thread of the program (triton-
                # lang/triton#1097, #9887), so a barrier follows the store: the next group's load of
                # the slot then sees it whatever thread holds which element.
                dtp = tl.sum(tl.sum(tl.reshape(dm * p, (PACK, BV, PACK, BV)), axis=2), axis=0)
                slot = part_ptr + (pid * H + h) * V * V + jv[:, None] * V + jv[None, :]
                tl.store(slot, tl.load(slot, mask=tmask, other=0.0) + dtp, mask=tmask)
                tl.debug_barrier()
                dp = dm * topo
                ds = (p * (dp - tl.sum(dp * p, axis=1)[:, None]) * scale).to(dtype)
                base = dqk_ptr + g[:, None] * s2g + j[:, None] * s2v
                tl.store(base + (h * D + rd[None, :]) * s2c, tl.dot(ds, k).to(dtype), qmask)
                tl.store(base + ((H + h) * D + rd[None, :]) * s2c, tl.dot(tl.trans(ds), q).to(dtype), qmask)
            for cb in range(C_BLOCKS):
                rc = cb * BC + tl.arange(0, BC)
                cmask = rc < C
                xmask = row[:, None] & cmask[None, :]
                x = tl.load(x_rows + rc[None, :] * sxc, mask=xmask, other=0.0)
                dx = tl.zeros((BV * PACK, BC), dtype=tl.float32)
                for h in tl.static_range(H):
                    _, _, p, topo = _softmax_map(
                        qk_rows, topo_ptr, h, j, rd, qmask, pair, row, scale, D, sqc, sth, sti, stj, H
                    )
                    m = (p * topo).to(dtype)
                    e = _dz_times_weight(
                        dz_rows, w_ptr, h, rc, cmask, row, N, sdn, swh, swn, swc, BV * PACK, BC, BN, N_BLOCKS
                    )
                    dx += tl.dot(tl.trans(m), e.to(dtype))  # dx = Σ_h M_hᵀ e_h
                    u = tl.dot(m, x)  # M_h x, the weight gradient's operand
                    urow = u_ptr + g[:, None] * sug + j[:, None] * suv + h * suh
                    tl.store(urow + rc[None, :] * suc, u.to(dtype), mask=xmask)
                tl.store(
                    dx_ptr + g[:, None] * s4g + j[:, None] * s4v + rc[None, :] * s4c, dx.to(dtype), mask=xmask
                )


def check_backward_launch(launch: MixedBackwardLaunch, device: torch.device) -> None:
    """Refuse launches known to fault the GPU: correct in Triton's interpreter, but on an H100
    (2026-12-07) every pack-2 launch of the backward at C >= 128 ended in an illegal memory access
    (not investigated further: pack 1 already lost 2-3x to the two-step path)."""
    if launch.pack > 1 and device.type == "cuda":
        raise ValueError(f"{launch}: pack > 1 faults the GPU in this backward kernel; use pack=1")


def mixed_backward(
    qk: Tensor,
    topology: Tensor,
    x: Tensor,
    weight: Tensor,
    dz: Tensor,
    heads: int,
    scale: float,
    launch: MixedBackwardLaunch,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(d qk, d topology, d x, d weight)`` by the kernel with an explicit launch."""
    g, v, width = qk.shape
    d, c, n = width // (2 * heads), x.shape[2], weight.shape[1]
    check_backward_launch(launch, qk.device)
    dz = dz.to(x.dtype)
    dqk = torch.empty_like(qk, memory_format=torch.contiguous_format)
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    if not g:
        return dqk, torch.zeros_like(topology), dx, torch.zeros_like(weight)
    u = torch.empty(g, v, heads, c, device=x.device, dtype=x.dtype)
    programs = triton.cdiv(g, launch.pack * launch.groups)
    bn = max(16, min(launch.block_n, triton.next_power_of_2(n)))
    bc = max(16, min(launch.block_c, triton.next_power_of_2(c)))
    partial = torch.zeros(programs, heads, v, v, device=qk.device, dtype=torch.float32)
    _sagc_mixed_backward_kernel[(programs,)](
        qk, topology, x, weight, dz, dqk, dx, u, partial, g, v, c, n, d, scale,
        *qk.stride(), *topology.stride(), *x.stride(), *weight.stride(), *dz.stride(),
        *dqk.stride(), *dx.stride(), *u.stride(),
        heads, JOINT_TILE, launch.pack, head_tile(d), bc, bn, triton.cdiv(c, bc), triton.cdiv(n, bn),
        launch.groups,
        num_warps=launch.num_warps, num_stages=launch.num_stages,
    )  # fmt: skip
    # dW_h = Σ_rows dzᵀ (M_h x): one GEMM [C', G·V] @ [G·V, H·C] → [C', H, C] → [H, C', C]
    dweight = (dz.reshape(g * v, n).t() @ u.view(g * v, heads * c)).view(n, heads, c).transpose(0, 1)
    # in the weight's own layout, as the fake promises (the weights are small: the copy is free)
    return dqk, partial.sum(0).to(topology.dtype), dx, torch.empty_like(weight).copy_(dweight)


def sagc_mixed_attention_training(
    qk: Tensor, topology: Tensor, x: Tensor, weight: Tensor, heads: int, scale: float
) -> Tensor:
    """``Σ_h (softmax(scale·q_h k_hᵀ) ⊙ A_h) @ (x W_hᵀ)`` per frame with a gradient for every input.

    Shapes as :func:`trainer.models.sagc_inference.sagc_mixed_attention`. The kernels where they
    apply (:func:`trainer.models.sagc_inference.kernels_apply`), else the PyTorch reference.
    """
    if kernels_apply(qk, topology, x, weight, heads):
        return _mixed_training_op(qk, topology, x, weight, heads, scale)
    return reference(qk, topology, x, weight, heads, scale)


@torch.library.custom_op("crossglg::sagc_mixed_attention_training", mutates_args=())
def _mixed_training_op(
    qk: Tensor, topology: Tensor, x: Tensor, weight: Tensor, heads: int, scale: float
) -> Tensor:
    return mixed_forward(qk, topology, x, weight, heads, scale, forward_launch(x.shape[2], weight.shape[1]))


@_mixed_training_op.register_fake
def _mixed_training_fake(
    qk: Tensor, topology: Tensor, x: Tensor, weight: Tensor, heads: int, scale: float
) -> Tensor:
    return x.new_empty(qk.shape[0], qk.shape[1], weight.shape[1])


@torch.library.custom_op("crossglg::sagc_mixed_attention_backward", mutates_args=())
def sagc_mixed_attention_backward(
    qk: Tensor, topology: Tensor, x: Tensor, weight: Tensor, dz: Tensor, heads: int, scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(d qk, d topology, d x, d weight)`` of the fused path for the output gradient."""
    return mixed_backward(
        qk, topology, x, weight, dz, heads, scale, backward_launch(x.shape[2], weight.shape[1])
    )


@sagc_mixed_attention_backward.register_fake
def _backward_fake(
    qk: Tensor, topology: Tensor, x: Tensor, weight: Tensor, dz: Tensor, heads: int, scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    contiguous = torch.contiguous_format
    return (
        torch.empty_like(qk, memory_format=contiguous),
        torch.empty_like(topology),
        torch.empty_like(x, memory_format=contiguous),
        torch.empty_like(weight),
    )


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    qk, topology, x, weight, heads, scale = inputs
    ctx.save_for_backward(qk, topology, x, weight)
    ctx.heads, ctx.scale = heads, scale


def _backward(ctx, dz: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, None, None]:  # noqa: ANN001
    qk, topology, x, weight = ctx.saved_tensors
    grads = sagc_mixed_attention_backward(qk, topology, x, weight, dz, ctx.heads, ctx.scale)
    return (*grads, None, None)


_mixed_training_op.register_autograd(_backward, setup_context=_setup_context)


def check_kernels(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    frames: int = 7,
    d: int = 8,
    c: int = 64,
    n: int = 80,
    heads: int = 3,
    seed: int = 0,
    launches: tuple[MixedLaunch, MixedBackwardLaunch] | None = None,
) -> dict[str, float | bool]:
    """Relative errors of the output and the four gradients against float64 (strided ``x`` and a
    transposed ``weight`` view, as the layer passes them; ``frames`` not a multiple of the backward's
    frame group and ``n`` not of its column chunk exercise the masks). ``launches``: (forward,
    backward) launches to call the kernels with directly; None: through the autograd op."""
    g = torch.Generator().manual_seed(seed)
    qk64, topo64, x64, w64 = check_operands(g, frames, d, c, n, heads)
    dz64 = torch.randn(frames, qk64.shape[1], n, generator=g, dtype=torch.float64)
    scale = d**-0.5
    qk, x, w = (t.to(device, dtype).requires_grad_() for t in (qk64, x64, w64))
    topo = topo64.to(device, torch.float32).requires_grad_()
    used = kernels_apply(qk, topo, x, w, heads)
    if launches is None:
        z = sagc_mixed_attention_training(qk, topo, x, w, heads, scale)
        z.backward(dz64.to(device, dtype))
    else:
        z = mixed_forward(qk, topo, x, w, heads, scale, launches[0])
        qk.grad, topo.grad, x.grad, w.grad = mixed_backward(
            qk, topo, x, w, dz64.to(device, dtype), heads, scale, launches[1]
        )
    leaves = [t.detach().double().cpu().requires_grad_() for t in (qk, topo, x, w)]
    z_ref = reference(*leaves, heads, scale)
    z_ref.backward(dz64.to(dtype).double())
    grads = (qk.grad, topo.grad, x.grad, w.grad)
    names = ("qk", "topology", "x", "weight")
    return {
        "z": relative_error(z, z_ref),
        **{f"grad_{k}": relative_error(a, b.grad) for k, a, b in zip(names, grads, leaves, strict=True)},
        "used_kernels": used,
        "finite": all(bool(t.isfinite().all()) for t in (z, *grads)),
    }


def _register_flop_formulas() -> None:
    """Useful FLOPs for ``torch.utils.flop_counter``: the forward as the inference op counts it; the
    backward per frame and head recomputes the logits and does ``dz W_h``, ``e_h xᵀ``, ``M_hᵀ e_h``,
    ``M_h x`` and the two logit gradients, plus the weight-gradient GEMM."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.crossglg.sagc_mixed_attention_training)
    def _forward_flops(qk_shape, topology_shape, x_shape, weight_shape, heads, *_, **__) -> int:  # noqa: ANN001
        g, v, width = qk_shape
        c, n = x_shape[2], weight_shape[1]
        return 2 * g * heads * v * (v * (width // (2 * heads)) + v * c + c * n)

    @register_flop_formula(torch.ops.crossglg.sagc_mixed_attention_backward)
    def _backward_flops(qk_shape, topology_shape, x_shape, weight_shape, dz_shape, heads, *_, **__) -> int:  # noqa: ANN001
        g, v, width = qk_shape
        c, n, d = x_shape[2], weight_shape[1], width // (2 * heads)
        per_frame_head = v * v * 3 * d + v * n * c + 3 * v * v * c + v * c * n  # the last: dW's share
        return 2 * g * heads * per_frame_head


_register_flop_formulas()

"""SA-GC's whole attention path as one kernel per frame, forward and backward (the default).

For one frame ``g`` (a batch element at one time step) and heads ``h``::

    P_h = softmax(scale · q_h k_hᵀ)            q_h, k_h: [V, d] rows of the to_qk projection
    z   = Σ_h (P_h ⊙ A_h) @ y_h                A_h: the shared topology [V, V]; y_h: [V, C'] mixed features

The unfused layer (:class:`trainer.models.infogcn.SelfAttentionGraphConv` with ``fused=False``)
writes every ``P_h`` to memory in fp32, multiplies, permutes and casts it, and keeps it for the
backward — per frame and block about as many bytes as the features, several times over. Here each
program recomputes the 25 × 25 maps of its frame in registers (flash-attention style: V = 25 fits on
chip), in the forward and again in the backward, and the maps never reach memory. The gradient of
the shared topology is summed over a group of frames in registers, then over programs.

Measured (docs/performance.md): +11.6% training samples/s at batch 128 on an H200 against the
unfused layer (4,623 vs 4,143); the layer's default since. Each kernel's launch (frames per program,
column tile, warps, stages) comes from a sweep at the model's shapes, ``bench/sagc_attention_tuning.py``
(the tuned launches: 4,623 -> 5,003 samples/s, +8%).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.models import sagc_epilogue
from trainer.models.sagc_epilogue import Epilogue, from_op_arguments, kernel_arguments, op_arguments
from trainer.models.triton_support import relative_error, tl, triton, triton_applies

if triton is not None:
    from trainer.models.sagc_epilogue import apply_epilogue

JOINT_TILE = 32  # joints per tile (V ≤ 32)


@dataclass(frozen=True)
class Launch:
    """How one kernel is launched: frames per program, feature columns per tile, warps, stages.

    ``block_n`` is capped at the feature width (one tile covers all columns when it is ≥ C'), so the
    attention maps of a frame are computed once per program instead of once per column tile.
    """

    frames: int = 1
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3

    def columns(self, n: int) -> int:
        """The column tile for ``n`` feature columns (a power of two, 16 … ``block_n``)."""
        return max(16, min(self.block_n, triton.next_power_of_2(n)))


# Launches before tuning (session 3's kernels: one frame per forward program and 64-column tiles,
# eight frames per backward program); kept as the fallback for widths the table below lacks.
FORWARD_LAUNCH = Launch(frames=1, block_n=64)
BACKWARD_LAUNCH = Launch(frames=8, block_n=64)
# Per feature width C': the fastest launch measured by bench/sagc_attention_tuning.py at the
# model's shapes for batch 128 on an H200 (2026-11-22, bench/results/sagc_attention_tuning.json).
# Per training step: forward 2.11 -> 1.34 ms, backward 3.53 -> 2.59 ms; every tuned launch was
# checked against float64 (relative error 2.3-2.4e-3 in bf16).
TUNED_FORWARD: dict[int, Launch] = {
    64: Launch(frames=1, block_n=128, num_warps=1, num_stages=1),
    128: Launch(frames=1, block_n=256, num_warps=1, num_stages=3),
    256: Launch(frames=16, block_n=256, num_warps=4, num_stages=2),
}
TUNED_BACKWARD: dict[int, Launch] = {
    64: Launch(frames=4, block_n=32, num_warps=2, num_stages=2),
    128: Launch(frames=16, block_n=64, num_warps=2, num_stages=3),
    256: Launch(frames=16, block_n=64, num_warps=4, num_stages=3),
}


# Per C': the forward kernel with the eval epilogue at eval batch 256 (bench/sagc_attention_tuning.py
# --eval); widths it lacks run at the training forward's launch. Empty on purpose: the sweep on an
# H100 (2026-12-06, bench/results/sagc_eval_tuning.json) found the training launches within 0.5% of
# the best at every width (3.457 → 3.450 ms per eval forward).
TUNED_EVAL_FORWARD: dict[int, Launch] = {}


def eval_launch(n: int) -> Launch:
    """The eval forward's launch (the kernel with its epilogue) for ``n`` feature columns."""
    return TUNED_EVAL_FORWARD.get(n, forward_launch(n))


def forward_launch(n: int) -> Launch:
    """The forward kernel's launch for ``n`` feature columns."""
    return TUNED_FORWARD.get(n, FORWARD_LAUNCH)


def backward_launch(n: int) -> Launch:
    """The backward kernel's launch for ``n`` feature columns."""
    return TUNED_BACKWARD.get(n, BACKWARD_LAUNCH)


def reference(qk: Tensor, topology: Tensor, y: Tensor, heads: int, scale: float) -> Tensor:
    """The same function in PyTorch (the fallback and the tests' reference).

    Args:
        qk: ``[G, V, 2·H·d]`` query/key rows (layout ``(q|k, head, d)``, as the to_qk Linear gives).
        topology: ``[H, V, V]`` shared topology.
        y: ``[G, V·H, C']`` mixed features, row ``j·H + h`` = joint ``j`` of head ``h``.
        heads: H.
        scale: logit scale (``d^-1/2``).

    Returns:
        ``[G, V, C']`` in ``y``'s dtype.
    """
    g, v, width = qk.shape
    d = width // (2 * heads)
    q, k = qk.view(g, v, 2, heads, d).permute(2, 0, 3, 1, 4)  # [G, H, V, d]
    wide = torch.promote_types(qk.dtype, torch.float32)  # softmax in ≥ fp32, as under autocast
    p = torch.softmax((q @ k.transpose(-1, -2)).to(wide) * scale, dim=-1)
    m = (p * topology.to(wide)).to(y.dtype)
    yh = y.view(g, v, heads, -1).transpose(1, 2)  # [G, H, V, C']
    return (m @ yh).sum(dim=1).to(y.dtype)


def kernels_apply(qk: Tensor, topology: Tensor, y: Tensor, heads: int) -> bool:
    """Triton path: half-precision CUDA ``qk``/``y``, V ≤ 32, d ≤ 64."""
    d = qk.shape[2] // (2 * heads)
    return (
        triton_applies(qk, y)
        and qk.shape[1] <= JOINT_TILE
        and d <= 64
        and (topology.is_cuda or not qk.is_cuda)
    )


if triton is not None:

    @triton.jit
    def attention_scores(qk_ptr, g, rv, rd, vmask, qmask, h, scale, D, sqg, sqv, sqc, H: tl.constexpr):
        """Softmax rows of one frame and head, fp32 ``[BV, BV]``, and its q, k tiles.

        ``qmask`` masks the q/k loads (all false for a frame past the end: q = k = 0 gives finite,
        uniform rows, harmless since that frame's output gradient is loaded as zeros); ``vmask``
        masks the key columns past V.
        """
        base = qk_ptr + g * sqg + rv[:, None] * sqv
        q = tl.load(base + (h * D + rd[None, :]) * sqc, mask=qmask, other=0.0)
        k = tl.load(base + ((H + h) * D + rd[None, :]) * sqc, mask=qmask, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(vmask[None, :], s, float("-inf"))
        p = tl.exp(s - tl.max(s, axis=1)[:, None])
        return p / tl.sum(p, axis=1)[:, None], q, k

    @triton.jit
    def _sagc_forward_kernel(
        qk_ptr, topo_ptr, y_ptr, z_ptr, G, V, N, D, scale,
        sqg, sqv, sqc, sth, sti, stj, syg, syr, syn, szg, szv, szn,
        ep_scale, ep_shift, res_ptr, srg, srv, srn, jw_ptr, sjs, sjv, frames,
        AFFINE: tl.constexpr, RESIDUAL: tl.constexpr, RELU: tl.constexpr, JOINT_WEIGHT: tl.constexpr,
        H: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, FRAMES: tl.constexpr,
    ):  # fmt: skip
        # The ep_* / res / jw arguments: the eval epilogue (trainer/models/sagc_epilogue.py), compiled
        # out when its flags are off (training).
        rv = tl.arange(0, BV)
        rd = tl.arange(0, BD)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        vmask = rv < V
        tmask = vmask[:, None] & vmask[None, :]
        for f in range(FRAMES):
            g = (tl.program_id(0) * FRAMES + f).to(tl.int64)
            live = g < G
            qmask = vmask[:, None] & (rd[None, :] < D) & live
            ymask = vmask[:, None] & (rn[None, :] < N) & live
            acc = tl.zeros((BV, BN), dtype=tl.float32)
            for h in tl.static_range(H):
                p, q, k = attention_scores(qk_ptr, g, rv, rd, vmask, qmask, h, scale, D, sqg, sqv, sqc, H)
                tp = topo_ptr + h * sth + rv[:, None] * sti + rv[None, :] * stj
                topo = tl.load(tp, mask=tmask, other=0.0)
                m = (p * topo).to(y_ptr.dtype.element_ty)
                yh = tl.load(
                    y_ptr + g * syg + (rv[:, None] * H + h) * syr + rn[None, :] * syn, mask=ymask, other=0.0
                )
                acc += tl.dot(m, yh)
            acc = apply_epilogue(
                acc, g, rv, rn, vmask & live, rn < N, ep_scale, ep_shift, res_ptr, srg, srv, srn,
                jw_ptr, sjs, sjv, frames, AFFINE, RESIDUAL, RELU, JOINT_WEIGHT,
            )  # fmt: skip
            tl.store(
                z_ptr + g * szg + rv[:, None] * szv + rn[None, :] * szn, acc.to(z_ptr.dtype.element_ty), ymask
            )

    @triton.jit
    def _sagc_backward_kernel(
        qk_ptr, topo_ptr, y_ptr, dz_ptr, dqk_ptr, part_ptr, dy_ptr, G, V, N, D, scale,
        sqg, sqv, sqc, sth, sti, stj, syg, syr, syn, sdg, sdv, sdn,
        s2g, s2v, s2c, s3g, s3r, s3n,
        H: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
        N_BLOCKS: tl.constexpr, FRAMES: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        rv = tl.arange(0, BV)
        rd = tl.arange(0, BD)
        vmask = rv < V
        tmask = vmask[:, None] & vmask[None, :]
        qmask = vmask[:, None] & (rd[None, :] < D)
        for h in tl.static_range(H):
            topo = tl.load(topo_ptr + h * sth + rv[:, None] * sti + rv[None, :] * stj, mask=tmask, other=0.0)
            dtopo = tl.zeros((BV, BV), dtype=tl.float32)
            for f in range(FRAMES):
                g = (pid * FRAMES + f).to(tl.int64)
                live = g < G
                p, q, k = attention_scores(
                    qk_ptr, g, rv, rd, vmask, qmask & live, h, scale, D, sqg, sqv, sqc, H
                )
                m = (p * topo).to(y_ptr.dtype.element_ty)
                dm = tl.zeros((BV, BV), dtype=tl.float32)
                for nb in tl.static_range(N_BLOCKS):
                    rn = nb * BN + tl.arange(0, BN)
                    nmask = vmask[:, None] & (rn[None, :] < N) & live
                    dz = tl.load(
                        dz_ptr + g * sdg + rv[:, None] * sdv + rn[None, :] * sdn, mask=nmask, other=0.0
                    )
                    yrow = (rv[:, None] * H + h) * syr + rn[None, :] * syn
                    yh = tl.load(y_ptr + g * syg + yrow, mask=nmask, other=0.0)
                    dm += tl.dot(dz, tl.trans(yh))
                    dyh = tl.dot(tl.trans(m), dz)
                    dyrow = (rv[:, None] * H + h) * s3r + rn[None, :] * s3n
                    tl.store(dy_ptr + g * s3g + dyrow, dyh.to(dy_ptr.dtype.element_ty), nmask)
                dtopo += dm * p
                dp = dm * topo
                ds = (p * (dp - tl.sum(dp * p, axis=1)[:, None]) * scale).to(qk_ptr.dtype.element_ty)
                dq = tl.dot(ds, k)
                dk = tl.dot(tl.trans(ds), q)
                base = dqk_ptr + g * s2g + rv[:, None] * s2v
                tl.store(base + (h * D + rd[None, :]) * s2c, dq.to(dqk_ptr.dtype.element_ty), qmask & live)
                tl.store(
                    base + ((H + h) * D + rd[None, :]) * s2c, dk.to(dqk_ptr.dtype.element_ty), qmask & live
                )
            # This program's share of the topology gradient; summed over programs afterwards (no
            # atomics: the result does not depend on the order programs finish in).
            tl.store(part_ptr + (pid * H + h) * V * V + rv[:, None] * V + rv[None, :], dtopo, mask=tmask)


def head_tile(d: int) -> int:
    """The tile over a head's query/key width ``d`` (a power of two, at least 16 for ``tl.dot``)."""
    return max(16, triton.next_power_of_2(d))


def sagc_attention(
    qk: Tensor, topology: Tensor, y: Tensor, heads: int, scale: float, epilogue: Epilogue | None = None
) -> Tensor:
    """``Σ_h (softmax(scale·q_h k_hᵀ) ⊙ A_h) @ y_h`` per frame (see :func:`reference` for the shapes).

    The Triton kernels where they apply (:func:`kernels_apply`), else :func:`reference` (PyTorch's
    own autograd). ``epilogue`` (eval, no gradient): the layer's BatchNorm, shortcut, ReLU and joint
    weight applied before the write (:mod:`trainer.models.sagc_epilogue`).
    """
    if epilogue is not None:
        if kernels_apply(qk, topology, y, heads) and not torch.is_grad_enabled():
            return _sagc_attention_eval_op(qk, topology, y, heads, scale, *op_arguments(epilogue))
        return sagc_epilogue.reference(reference(qk, topology, y, heads, scale), epilogue)
    if kernels_apply(qk, topology, y, heads):
        return _sagc_attention_op(qk, topology, y, heads, scale)
    return reference(qk, topology, y, heads, scale)


@torch.library.custom_op("crossglg::sagc_attention", mutates_args=())
def _sagc_attention_op(qk: Tensor, topology: Tensor, y: Tensor, heads: int, scale: float) -> Tensor:
    return attention_forward(qk, topology, y, heads, scale, forward_launch(y.shape[2]))


def attention_forward(
    qk: Tensor,
    topology: Tensor,
    y: Tensor,
    heads: int,
    scale: float,
    launch: Launch,
    epilogue: Epilogue | None = None,
) -> Tensor:
    """The forward kernel with an explicit launch (the ops and the tuning bench call this)."""
    g, v, width = qk.shape
    d, n = width // (2 * heads), y.shape[2]
    z = torch.empty(g, v, n, device=y.device, dtype=y.dtype)
    if g:
        bn = launch.columns(n)
        grid = (triton.cdiv(g, launch.frames), triton.cdiv(n, bn))
        _sagc_forward_kernel[grid](
            qk, topology, y, z, g, v, n, d, scale,
            *qk.stride(), *topology.stride(), *y.stride(), *z.stride(), *kernel_arguments(epilogue, z),
            heads, JOINT_TILE, head_tile(d), bn, launch.frames,
            num_warps=launch.num_warps, num_stages=launch.num_stages,
        )  # fmt: skip
    return z


@torch.library.custom_op("crossglg::sagc_attention_eval", mutates_args=())
def _sagc_attention_eval_op(
    qk: Tensor,
    topology: Tensor,
    y: Tensor,
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
    return attention_forward(qk, topology, y, heads, scale, eval_launch(y.shape[2]), epilogue)


@_sagc_attention_eval_op.register_fake
def _sagc_attention_eval_fake(
    qk: Tensor,
    topology: Tensor,
    y: Tensor,
    heads: int,
    scale: float,
    ep_scale: Tensor | None,
    ep_shift: Tensor | None,
    residual: Tensor | None,
    joint_weight: Tensor | None,
    frames: int,
    relu: bool,
) -> Tensor:
    return y.new_empty(qk.shape[0], qk.shape[1], y.shape[2])


@_sagc_attention_op.register_fake
def _sagc_attention_fake(qk: Tensor, topology: Tensor, y: Tensor, heads: int, scale: float) -> Tensor:
    return y.new_empty(qk.shape[0], qk.shape[1], y.shape[2])


@torch.library.custom_op("crossglg::sagc_attention_backward", mutates_args=())
def sagc_attention_backward(
    qk: Tensor, topology: Tensor, y: Tensor, dz: Tensor, heads: int, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(d qk, d topology, d y)`` of the kernel path for the output gradient ``dz``."""
    return attention_backward(qk, topology, y, dz, heads, scale, backward_launch(y.shape[2]))


def attention_backward(
    qk: Tensor, topology: Tensor, y: Tensor, dz: Tensor, heads: int, scale: float, launch: Launch
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward kernel with an explicit launch (the op and the tuning bench call this)."""
    g, v, width = qk.shape
    d, n = width // (2 * heads), y.shape[2]
    dz = dz.to(y.dtype)
    dqk = torch.empty_like(qk, memory_format=torch.contiguous_format)
    dy = torch.empty_like(y, memory_format=torch.contiguous_format)
    if not g:
        return dqk, torch.zeros_like(topology), dy
    programs, bn = triton.cdiv(g, launch.frames), launch.columns(n)
    partial = torch.empty(programs, heads, v, v, device=qk.device, dtype=torch.float32)
    _sagc_backward_kernel[(programs,)](
        qk, topology, y, dz, dqk, partial, dy, g, v, n, d, scale,
        *qk.stride(), *topology.stride(), *y.stride(), *dz.stride(), *dqk.stride(), *dy.stride(),
        heads, JOINT_TILE, head_tile(d), bn, triton.cdiv(n, bn), launch.frames,
        num_warps=launch.num_warps, num_stages=launch.num_stages,
    )  # fmt: skip
    return dqk, partial.sum(0).to(topology.dtype), dy


@sagc_attention_backward.register_fake
def _backward_fake(
    qk: Tensor, topology: Tensor, y: Tensor, dz: Tensor, heads: int, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    # the layouts the kernel path returns (contiguous gradients), also for strided inputs
    contiguous = torch.contiguous_format
    return (
        torch.empty_like(qk, memory_format=contiguous),
        torch.empty_like(topology),
        torch.empty_like(y, memory_format=contiguous),
    )


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    qk, topology, y, heads, scale = inputs
    ctx.save_for_backward(qk, topology, y)
    ctx.heads, ctx.scale = heads, scale


def _backward(ctx, dz: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:  # noqa: ANN001
    qk, topology, y = ctx.saved_tensors
    dqk, dtopo, dy = sagc_attention_backward(qk, topology, y, dz, ctx.heads, ctx.scale)
    return dqk, dtopo, dy, None, None


_sagc_attention_op.register_autograd(_backward, setup_context=_setup_context)


def check_kernels(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    frames: int = 11,
    d: int = 8,
    n: int = 80,
    heads: int = 3,
    seed: int = 0,
    launches: tuple[Launch, Launch] | None = None,
) -> dict[str, float | bool]:
    """Relative errors of the output and the three gradients against the float64 reference.

    ``frames`` not a multiple of the backward's frame group and ``n`` not a multiple of the column
    tile exercise the masks; the inputs are strided views. ``used_kernels``: whether Triton ran.
    ``launches``: (forward, backward) launches to call the kernels with directly; None: through
    the autograd op with the tuned launches.
    """
    g = torch.Generator().manual_seed(seed)
    v = 25
    qk64 = torch.randn(frames, v, 2 * heads * d + 4, generator=g, dtype=torch.float64)[:, :, : 2 * heads * d]
    topo64 = torch.randn(heads, v, v, generator=g, dtype=torch.float64)
    y64 = torch.randn(frames, v * heads, n, generator=g, dtype=torch.float64)
    dz64 = torch.randn(frames, v, n, generator=g, dtype=torch.float64)
    scale = d**-0.5
    qk = qk64.to(device, dtype).requires_grad_()
    topo = topo64.to(device, torch.float32).requires_grad_()
    y = y64.to(device, dtype).requires_grad_()
    if launches is None:
        z = sagc_attention(qk, topo, y, heads, scale)
        z.backward(dz64.to(device, dtype))
    else:
        z = attention_forward(qk, topo, y, heads, scale, launches[0])
        dz = dz64.to(device, dtype)
        qk.grad, topo.grad, y.grad = attention_backward(qk, topo, y, dz, heads, scale, launches[1])
    leaves = [t.detach().double().cpu().requires_grad_() for t in (qk, topo, y)]
    z_ref = reference(*leaves, heads, scale)
    z_ref.backward(dz64.to(dtype).double())

    grads = (qk.grad, topo.grad, y.grad)
    errors = {
        "z": relative_error(z, z_ref),
        **{
            f"grad_{k}": relative_error(a, b.grad)
            for k, a, b in zip(("qk", "topology", "y"), grads, leaves, strict=True)
        },
    }
    finite = all(bool(t.isfinite().all()) for t in (z, *grads))
    return {
        **errors,
        "used_kernels": kernels_apply(qk.detach(), topo.detach(), y.detach(), heads),
        "finite": finite,
    }


def _register_flop_formulas() -> None:
    """Useful FLOPs for ``torch.utils.flop_counter``: per frame and head, the V×V×d logits and the
    V×V×C' product (forward); the backward recomputes the logits and does two products of each kind.
    """
    from torch.utils.flop_counter import register_flop_formula

    def per_frame_head(qk_shape, y_shape, heads: int) -> tuple[int, int, int]:  # noqa: ANN001
        g, v, width = qk_shape
        return g * heads * v * v, width // (2 * heads), y_shape[2]

    @register_flop_formula([torch.ops.crossglg.sagc_attention, torch.ops.crossglg.sagc_attention_eval])
    def _forward_flops(qk_shape, topology_shape, y_shape, heads, *_, **__) -> int:  # noqa: ANN001
        maps, d, n = per_frame_head(qk_shape, y_shape, heads)
        return 2 * maps * (d + n)

    @register_flop_formula(torch.ops.crossglg.sagc_attention_backward)
    def _backward_flops(qk_shape, topology_shape, y_shape, dz_shape, heads, *_, **__) -> int:  # noqa: ANN001
        maps, d, n = per_frame_head(qk_shape, y_shape, heads)
        return 2 * maps * (3 * d + 2 * n)


_register_flop_formulas()

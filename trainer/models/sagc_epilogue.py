"""SA-GC's eval tail inside its attention kernels: BatchNorm, shortcut, ReLU and joint weight, then one write.

In eval the layer ends in ``relu(BN(z + b) + shortcut) · w``: BatchNorm with its running statistics
(an affine map per output column), the block's shortcut, a ReLU and CrossGLG's per-(sample, joint)
weight. Two-step, the attention kernel writes ``z`` and an Inductor kernel reads it back with the
shortcut to write the result: per block two activation-sized passes of the ~22 of an eval forward
(docs/performance.md). With an :class:`Epilogue` the attention kernels
(:mod:`trainer.models.sagc_attention`, :mod:`trainer.models.sagc_inference`) apply all four to their
fp32 accumulator and write the block's SA-GC output once; ``z`` never reaches memory.

Eval only: training BatchNorm needs the batch statistics of ``z`` first. The numbers differ from the
two-step path by rounding only (``z`` is not rounded to the half dtype before the BatchNorm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainer.models.triton_support import relative_error, tl, triton


@dataclass(frozen=True)
class Epilogue:
    """``out = relu(z · scale + shift + residual) · joint_weight`` per frame row, applied in the kernel.

    Attributes:
        scale, shift: ``[C']`` (fp32 for the kernels), the BatchNorm as an affine map
            (:func:`batchnorm_affine`).
        residual: ``[G, V, C']`` shortcut rows (frame, joint, column), or None.
        joint_weight: ``[S, V]`` weight of joint ``j`` in sample ``s``, whose frames are the rows
            ``g`` with ``g // frames == s``; or None.
        frames: frames per sample (T), to find a row's sample.
        relu: clamp at zero before the joint weight.
    """

    scale: Tensor
    shift: Tensor
    residual: Tensor | None = None
    joint_weight: Tensor | None = None
    frames: int = 1
    relu: bool = True


def batchnorm_affine(bn: nn.BatchNorm2d, input_bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``bn(z + input_bias)`` with the running statistics as ``z · scale + shift`` (``[C]`` each, ≥ fp32)."""
    wide = torch.promote_types(bn.running_var.dtype, torch.float32)
    scale = torch.rsqrt(bn.running_var.to(wide) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(wide)
    mean = bn.running_mean.to(wide)
    if input_bias is not None:
        mean = mean - input_bias.to(wide)
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(wide)
    return scale, shift


def uses_running_statistics(bn: nn.BatchNorm2d) -> bool:
    """Whether ``bn`` normalises with its running statistics (eval mode, statistics tracked)."""
    return not bn.training and bn.running_mean is not None and bn.running_var is not None


def reference(z: Tensor, epilogue: Epilogue) -> Tensor:
    """The epilogue in PyTorch (in ≥ fp32, rounded once to ``z``'s dtype): the kernels' fallback and
    reference."""
    wide = torch.promote_types(z.dtype, torch.float32)
    out = z.to(wide) * epilogue.scale.to(wide) + epilogue.shift.to(wide)
    if epilogue.residual is not None:
        out = out + epilogue.residual.to(wide)
    if epilogue.relu:
        out = out.clamp_min(0.0)
    if epilogue.joint_weight is not None:
        weight = epilogue.joint_weight.to(wide).repeat_interleave(epilogue.frames, dim=0)  # [G, V]
        out = out * weight[:, :, None]
    return out.to(z.dtype)


OpArguments = tuple["Tensor | None", "Tensor | None", "Tensor | None", "Tensor | None", int, bool]


def op_arguments(epilogue: Epilogue | None) -> OpArguments:
    """The epilogue flattened for a custom op (``scale, shift, residual, joint_weight, frames, relu``;
    all None for no epilogue); :func:`from_op_arguments` rebuilds it."""
    if epilogue is None:
        return None, None, None, None, 1, False
    e = epilogue
    return e.scale, e.shift, e.residual, e.joint_weight, e.frames, e.relu


def from_op_arguments(
    scale: Tensor | None,
    shift: Tensor | None,
    residual: Tensor | None,
    joint_weight: Tensor | None,
    frames: int,
    relu: bool,
) -> Epilogue | None:
    """The :class:`Epilogue` of :func:`op_arguments`' tuple (None where it had no affine part)."""
    if scale is None or shift is None:
        return None
    return Epilogue(scale, shift, residual, joint_weight, frames, relu)


def kernel_arguments(epilogue: Epilogue | None, out: Tensor) -> tuple:
    """The epilogue's launch arguments, in the order of the kernels' epilogue parameters::

        scale, shift, residual, srg, srv, srn, joint_weight, sjs, sjv, frames,
        AFFINE, RESIDUAL, RELU, JOINT_WEIGHT

    Absent parts get ``out`` as a never-read placeholder pointer and zero strides.
    """
    if epilogue is None:
        return (out, out, out, 0, 0, 0, out, 0, 0, 1, False, False, False, False)
    res, jw = epilogue.residual, epilogue.joint_weight
    return (
        epilogue.scale,
        epilogue.shift,
        res if res is not None else out,
        *(res.stride() if res is not None else (0, 0, 0)),
        jw if jw is not None else out,
        *(jw.stride() if jw is not None else (0, 0)),
        epilogue.frames,
        True,
        res is not None,
        epilogue.relu,
        jw is not None,
    )


if triton is not None:

    @triton.jit
    def apply_epilogue(
        acc, g, j, rn, rmask, cmask, scale_ptr, shift_ptr, res_ptr, srg, srv, srn, jw_ptr, sjs, sjv, frames,
        AFFINE: tl.constexpr, RESIDUAL: tl.constexpr, RELU: tl.constexpr, JOINT_WEIGHT: tl.constexpr,
    ):  # fmt: skip
        """The epilogue on an fp32 ``[rows, columns]`` tile: row ``r`` is joint ``j[r]`` of frame ``g``
        (a scalar or one frame per row), columns ``rn``; masked rows/columns load zeros."""
        if AFFINE:
            scale = tl.load(scale_ptr + rn, mask=cmask, other=0.0)
            shift = tl.load(shift_ptr + rn, mask=cmask, other=0.0)
            acc = acc * scale[None, :] + shift[None, :]
        if RESIDUAL:
            rows = g * srg + j * srv
            res = tl.load(
                res_ptr + rows[:, None] + rn[None, :] * srn, mask=rmask[:, None] & cmask[None, :], other=0.0
            )
            acc = acc + res.to(tl.float32)
        if RELU:
            acc = tl.maximum(acc, 0.0)
        if JOINT_WEIGHT:
            weight = tl.load(jw_ptr + (g // frames) * sjs + j * sjv, mask=rmask, other=0.0)
            acc = acc * weight.to(tl.float32)[:, None]
        return acc


def check_kernels(
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    mixing: bool = False,
    frames: int = 6,
    per_sample: int = 3,
    d: int = 8,
    c: int = 64,
    n: int = 80,
    heads: int = 3,
    seed: int = 0,
    launch: Any = None,
) -> dict[str, float | bool]:
    """Relative error of an attention kernel with the full epilogue against float64 PyTorch.

    ``mixing``: the inference kernel (:mod:`trainer.models.sagc_inference`, features ``x`` and the
    mixing weights) instead of the attention kernel (mixed features ``y``). ``frames`` rows in samples
    of ``per_sample`` frames; the residual is a strided view; ``used_kernels``: whether Triton ran.
    ``launch``: call the attention kernel at this :class:`~trainer.models.sagc_attention.Launch`
    directly (the tuning bench's check) instead of through the op's launch table.
    """
    from trainer.models import sagc_attention, sagc_inference  # they import this module

    g = torch.Generator().manual_seed(seed)
    v = 25
    scale = d**-0.5

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    qk = draw(frames, v, 2 * heads * d)
    topo = draw(heads, v, v)
    x = draw(frames, v, c)
    weight = draw(heads, n, c) * c**-0.5
    epi = Epilogue(
        scale=draw(n).abs() + 0.5,
        shift=draw(n),
        residual=draw(frames, v, n + 8)[:, :, :n],
        joint_weight=draw(frames // per_sample, v).abs(),
        frames=per_sample,
    )
    z64 = (
        sagc_inference.reference(qk, topo, x, weight, heads, scale)
        if mixing
        else sagc_attention.reference(qk, topo, sagc_inference.mix_heads(x, weight), heads, scale)
    )
    ref = reference(z64, epi)
    cast = {"qk": qk, "x": x, "weight": weight, "y": sagc_inference.mix_heads(x, weight)}
    qk_d, x_d, w_d, y_d = (cast[k].to(device, dtype) for k in ("qk", "x", "weight", "y"))
    epi_d = Epilogue(
        epi.scale.to(device, torch.float32),
        epi.shift.to(device, torch.float32),
        epi.residual.to(device, dtype),  # type: ignore[union-attr]
        epi.joint_weight.to(device, dtype),  # type: ignore[union-attr]
        per_sample,
    )
    topo_d = topo.to(device, torch.float32)
    with torch.no_grad():
        if mixing:
            used = sagc_inference.kernels_apply(qk_d, topo_d, x_d, w_d, heads)
            out = sagc_inference.sagc_mixed_attention(qk_d, topo_d, x_d, w_d, heads, scale, epi_d)
        else:
            used = sagc_attention.kernels_apply(qk_d, topo_d, y_d, heads)
            out = (
                sagc_attention.attention_forward(qk_d, topo_d, y_d, heads, scale, launch, epi_d)
                if used and launch is not None
                else sagc_attention.sagc_attention(qk_d, topo_d, y_d, heads, scale, epi_d)
            )
    return {"out": relative_error(out, ref), "used_kernels": used, "finite": bool(out.isfinite().all())}

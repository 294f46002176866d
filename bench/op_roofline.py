"""The training step's GEMMs, convolutions and SA-GC attention kernels one by one, against their floors.

Session 11's bandwidth profile (``bench/train_throughput.py --sections bandwidth``, H100, batch 128)
found Inductor's kernels — the BatchNorm / LayerNorm / ReLU / add family, half of the step — at 84%
of the copy rate. The other half of the step is the ops Inductor does not write: cuBLAS GEMMs (the
1×1 convolutions), cuDNN's dilated temporal convolutions and our SA-GC attention kernels. This bench
times each of them alone, per distinct block shape of InfoGCN, forward and forward + backward as GPU
time (``--iters`` calls replayed in a CUDA graph, ``batchnorm_bandwidth.time_call``), beside the
least bytes each must move (its inputs read and output written; in the backward the output gradient
read by both gradient products, the input read, the input gradient written) and its FLOPs, so each
op's distance from the copy rate and from the matrix rate is a number, not a guess. No model
compile: about a minute on a GPU::

    python bench/op_roofline.py                   # batch 128, bf16, the H100's measured rates
    python bench/op_roofline.py --quick           # tiny shapes on the CPU (script check)

Writes ``bench/results/op_roofline.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batchnorm_bandwidth import time_call  # noqa: E402
from block_throughput import NUM_JOINTS, PERSONS, WINDOW, BlockShape, block_shapes, replot_saved  # noqa: E402

from trainer.models.sagc_attention import sagc_attention  # noqa: E402
from trainer.models.sagc_mixed_training import sagc_mixed_attention_training  # noqa: E402
from trainer.plots import pyplot, save_figure  # noqa: E402

HEADS = 3
BYTES = 2  # bf16


@dataclass
class Op:
    """One op of a block: a closure per direction and what it must move and compute at least."""

    name: str
    forward: Callable[[], object]
    train: Callable[[], None]
    forward_bytes: float  # inputs read + output written
    train_bytes: float  # forward + the backward's least traffic
    train_flop: float  # forward + backward
    candidate: bool = False  # an alternative to ops of the default path (not in the step's total)


def _leaf(*shape: int, device: torch.device, scale: float = 1.0) -> Tensor:
    return (torch.randn(*shape, device=device) * scale).to(torch.bfloat16).requires_grad_()


def linear_op(name: str, rows: int, k: int, n: int, device: torch.device) -> Op:
    """``[rows, k] @ [k, n]`` as ``F.linear`` (a 1×1 convolution over channels-last rows)."""
    x, w = _leaf(rows, k, device=device), _leaf(n, k, device=device, scale=k**-0.5)
    grad = torch.randn(rows, n, device=device).to(torch.bfloat16)

    def train() -> None:
        F.linear(x, w).backward(grad)

    io = (rows * k + rows * n + n * k) * BYTES
    # backward: dx = dout W (reads dout, writes dx), dW = doutᵀ x (reads dout and x)
    backward = (2 * rows * n + 2 * rows * k + n * k) * BYTES
    return Op(name, lambda: F.linear(x, w), train, io, io + backward, 6.0 * rows * k * n)


def conv_op(
    name: str,
    batch: int,
    c: int,
    frames: int,
    stride: int,
    dilation: int,
    device: torch.device,
    candidate: bool = False,
) -> Op:
    """A multi-scale TCN branch: ``c → c`` temporal convolution, kernel 5, channels-last (cuDNN)."""
    x = torch.randn(batch, c, frames, NUM_JOINTS, device=device).to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = _leaf(c, c, 5, 1, device=device, scale=(5 * c) ** -0.5)
    pad = 2 * dilation

    def run() -> Tensor:
        return F.conv2d(x, w, None, (stride, 1), (pad, 0), (dilation, 1))

    out_frames = (frames + stride - 1) // stride
    grad = torch.randn(batch, c, out_frames, NUM_JOINTS, device=device).to(torch.bfloat16)
    grad = grad.contiguous(memory_format=torch.channels_last)

    def train() -> None:
        run().backward(grad)

    n_in, n_out = x.numel(), grad.numel()
    io = (n_in + n_out) * BYTES
    flop = 2.0 * n_out * c * 5
    return Op(name, run, train, io, io + (2 * n_out + 2 * n_in) * BYTES, 3 * flop, candidate)


def dilated_pair_op(
    name: str, batch: int, bc: int, frames: int, stride: int, device: torch.device, triton_op: bool
) -> Op:
    """The TCN's two dilated branches (d = 1, 2, ``bc → bc`` each) together: the merged kernel-9 cuDNN
    convolution of the training default (``triton_op`` False), or the Triton implicit-GEMM op
    (:mod:`trainer.models.temporal_conv`), which reads its input as a channel slice of the
    ``3·bc``-channel activation, as in the TCN."""
    from trainer.models.infogcn import merged_dilated_weight
    from trainer.models.temporal_conv import dilated_branches

    wide = torch.randn(batch, 3 * bc, frames, NUM_JOINTS, device=device).to(torch.bfloat16)
    wide = wide.contiguous(memory_format=torch.channels_last)
    x = (
        wide[:, : 2 * bc].detach().requires_grad_()
        if triton_op
        else wide[:, : 2 * bc].contiguous(memory_format=torch.channels_last).requires_grad_()
    )
    convs = [torch.nn.Conv2d(bc, bc, (5, 1)).to(device, torch.bfloat16) for _ in range(2)]
    for conv in convs:
        conv.weight.requires_grad_()

    def run() -> Tensor:
        if triton_op:
            return dilated_branches(x, [c.weight for c in convs], [c.bias for c in convs], [1, 2], stride)
        weight, bias = merged_dilated_weight(convs, (1, 2))
        return F.conv2d(x, weight, bias, (stride, 1), (4, 0))

    out_frames = (frames + stride - 1) // stride
    grad = torch.randn(batch, 2 * bc, out_frames, NUM_JOINTS, device=device).to(torch.bfloat16)
    grad = grad.contiguous(memory_format=torch.channels_last)

    def train() -> None:
        run().backward(grad)

    n_in, n_out = batch * 2 * bc * frames * NUM_JOINTS, grad.numel()
    io = (n_in + n_out) * BYTES
    flop = 2.0 * n_out * bc * 5  # the real taps
    return Op(name, run, train, io, io + (2 * n_out + 2 * n_in) * BYTES, 3 * flop, candidate=triton_op)


def attention_op(frames_total: int, cin: int, cout: int, device: torch.device) -> Op:
    """SA-GC's fused attention kernel (ours) at one block's shape."""
    d = max(cin // 8, 1)
    qk = _leaf(frames_total, NUM_JOINTS, 2 * HEADS * d, device=device)
    topology = (torch.eye(NUM_JOINTS, device=device).repeat(HEADS, 1, 1)).requires_grad_()
    y = _leaf(frames_total, NUM_JOINTS * HEADS, cout, device=device)
    grad = torch.randn(frames_total, NUM_JOINTS, cout, device=device).to(torch.bfloat16)

    def run() -> Tensor:
        return sagc_attention(qk, topology, y, HEADS, d**-0.5)

    def train() -> None:
        run().backward(grad)

    io = (qk.numel() + y.numel() + grad.numel()) * BYTES
    backward = (2 * qk.numel() + 2 * y.numel() + grad.numel()) * BYTES  # qk, y, dz read; dqk, dy written
    flop = 2.0 * frames_total * HEADS * NUM_JOINTS * NUM_JOINTS * (2 * d + cout)
    return Op("attention (ours)", run, train, io, io + backward, 3 * flop)


def fused_mixing_op(frames_total: int, cin: int, cout: int, device: torch.device) -> Op:
    """The candidate that replaces the mixing GEMM and the attention kernels: the mixing inside
    the attention kernels, forward and backward (InfoGCN ``fused_mixing_train``)."""
    d = max(cin // 8, 1)
    qk = _leaf(frames_total, NUM_JOINTS, 2 * HEADS * d, device=device)
    topology = (torch.eye(NUM_JOINTS, device=device).repeat(HEADS, 1, 1)).requires_grad_()
    x = _leaf(frames_total, NUM_JOINTS, cin, device=device)
    weight = _leaf(HEADS, cout, cin, device=device, scale=cin**-0.5)
    grad = torch.randn(frames_total, NUM_JOINTS, cout, device=device).to(torch.bfloat16)

    def run() -> Tensor:
        return sagc_mixed_attention_training(qk, topology, x, weight, HEADS, d**-0.5)

    def train() -> None:
        run().backward(grad)

    rows = frames_total * NUM_JOINTS
    io = (qk.numel() + x.numel() + weight.numel() + grad.numel()) * BYTES
    # backward kernel: qk, x, dz read; dqk, dx and M_h x (H·C per row) written; then the weight
    # gradient's GEMM reads dz and M_h x
    backward = (2 * qk.numel() + 2 * x.numel() + grad.numel() + 2 * rows * HEADS * cin + rows * cout) * BYTES
    mix_flop = 2.0 * rows * cin * HEADS * cout
    maps_flop = 2.0 * frames_total * HEADS * NUM_JOINTS * NUM_JOINTS * (2 * d + cin)
    return Op(
        "mixing + attention fused (candidate)",
        run,
        train,
        io,
        io + backward,
        3 * (mix_flop + maps_flop),
        True,
    )


def block_ops(shape: BlockShape, batch: int, device: torch.device) -> list[Op]:
    """The non-Inductor ops of one block, in the order the forward runs them."""
    seqs = batch * PERSONS
    rows_in = seqs * shape.frames * NUM_JOINTS
    out_frames = (shape.frames + shape.stride - 1) // shape.stride
    rows_out = seqs * out_frames * NUM_JOINTS
    cin, cout, bc = shape.in_channels, shape.out_channels, shape.out_channels // 4
    ops = [
        linear_op("to_qk GEMM", rows_in, cin, 2 * HEADS * max(cin // 8, 1), device),
        linear_op("mixing GEMM (3 heads)", rows_in, cin, HEADS * cout, device),
        attention_op(seqs * shape.frames, cin, cout, device),
        fused_mixing_op(seqs * shape.frames, cin, cout, device),
        linear_op("TCN entry GEMM", rows_in, cout, cout, device),
    ]
    ops += [
        conv_op(f"dilated conv d={d} (separate)", seqs, bc, shape.frames, shape.stride, d, device, True)
        for d in (1, 2)
    ]
    ops.append(
        dilated_pair_op("dilated convs merged (cuDNN)", seqs, bc, shape.frames, shape.stride, device, False)
    )
    if device.type == "cuda":  # on the CPU the op is the cuDNN-free fallback: nothing to time
        ops.append(
            dilated_pair_op("dilated branches (Triton)", seqs, bc, shape.frames, shape.stride, device, True)
        )
    if cin != cout:
        ops.append(linear_op("SA-GC shortcut GEMM", rows_in, cin, cout, device))
    if cin != cout or shape.stride != 1:
        ops.append(linear_op("block shortcut GEMM (strided)", rows_out, cin, cout, device))
    return ops


def _figure(x: float) -> float:
    """Three significant digits (the CPU's tiny fractions stay non-zero)."""
    return float(f"{x:.3g}")


def measure(op: Op, device: torch.device, iters: int, copy_tb_s: float, matmul_tflops: float) -> dict:
    """One op's times, its floors at the given rates and the fraction of the floor it reaches."""
    with torch.no_grad():
        forward_s = time_call(op.forward, device, iters)
    train_s = time_call(op.train, device, iters)
    byte_floor_s = op.train_bytes / (copy_tb_s * 1e12)
    flop_floor_s = op.train_flop / (matmul_tflops * 1e12)
    return {
        "op": op.name,
        "forward_ms": round(1e3 * forward_s, 4),
        "train_ms": round(1e3 * train_s, 4),
        "train_gb": round(op.train_bytes / 1e9, 4),
        "train_gflop": round(op.train_flop / 1e9, 2),
        "train_tb_s": _figure(op.train_bytes / train_s / 1e12),
        "train_tflops": _figure(op.train_flop / train_s / 1e12),
        "floor_ms": _figure(1e3 * max(byte_floor_s, flop_floor_s)),
        "of_floor": _figure(max(byte_floor_s, flop_floor_s) / train_s),
    }


def plot_op_floors(result: dict, path: Path) -> Path | None:
    """Bars per op: its measured ms per training step against its byte floor (None without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return None
    ops = sorted(result["per_op"].items(), key=lambda kv: kv[1]["train_ms_per_step"])
    names = [name + (" *" if t["candidate"] else "") for name, t in ops]
    y = np.arange(len(ops))
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(ops) + 1.4))
    ax.barh(y + 0.2, [t["train_ms_per_step"] for _, t in ops], 0.4, label="measured (fwd + bwd)")
    ax.barh(y - 0.2, [t["floor_ms_per_step"] for _, t in ops], 0.4, label="floor: bytes at the copy rate")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("ms per training step")
    ax.set_title(
        f"{result['gpu']}, batch {result['batch']}: default path {result['train_ms_per_step']:.2f} ms, "
        f"floor {result['floor_ms_per_step']:.2f} ms (* candidate)",
        fontsize=8,
    )
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, plt, path)


def split_temporal_conv(shapes: list, device: torch.device, iters: int) -> dict[str, float]:
    """ms per training step of each kernel of the Triton dilated-branches op alone, at the current
    ``temporal_conv.LAUNCH``: the forward, the input gradient and the weight gradient (its partial
    sums included), each summed over the TCN shapes ``(BlockShape, sequences, C_b)`` × their counts."""
    totals = {"forward": 0.0, "input_gradient": 0.0, "weight_gradient": 0.0}
    for shape, seqs, bc in shapes:
        calls = temporal_conv_kernels(temporal_conv_inputs(shape, seqs, bc, device), shape)
        for name, call in calls.items():
            totals[name] += 1e3 * time_call(call, device, iters) * shape.count
    return {name: round(ms, 4) for name, ms in totals.items()}


def temporal_conv_inputs(
    shape: BlockShape, seqs: int, bc: int, device: torch.device, dtype: torch.dtype = torch.bfloat16
) -> dict[str, Tensor]:
    """One TCN shape's operands of the dilated-branches op (d = 1, 2): ``x`` a channel slice of
    the ``3·C_b``-channel activation (as in the TCN), ``dy`` its output gradient, ``weight`` in the
    op's ``[branch, out, in, tap]`` layout."""
    from trainer.models.temporal_conv import TAPS

    def rows(channels: int, frames: int) -> Tensor:
        t = torch.randn(seqs, channels, frames, NUM_JOINTS, device=device).to(dtype)
        return t.contiguous(memory_format=torch.channels_last)

    return {
        "x": rows(3 * bc, shape.frames)[:, : 2 * bc],
        "dy": rows(2 * bc, (shape.frames + shape.stride - 1) // shape.stride),
        "weight": (0.1 * torch.randn(2, bc, bc, TAPS, device=device)).to(dtype),
    }


def temporal_conv_kernels(inputs: dict[str, Tensor], shape: BlockShape) -> dict[str, Callable[[], object]]:
    """The op's three kernel calls on :func:`temporal_conv_inputs`, as its forward and backward make
    them: the forward, the input gradient (the mirrored GEMM) and the fp32 weight and bias gradients."""
    from trainer.models import temporal_conv as tc

    x, dy, weight, s = inputs["x"], inputs["dy"], inputs["weight"], shape.stride
    forward_w, mirrored_w = tc._tap_major(weight, x.dtype), tc._tap_major(weight, x.dtype, mirrored=True)
    bias = torch.zeros(weight.shape[0] * weight.shape[1], device=x.device, dtype=x.dtype)
    return {
        "forward": lambda: tc._shifted_gemm(x, forward_w, bias, (1, 2), dy.shape[2], s, grad=False),
        "input_gradient": lambda: tc._shifted_gemm(dy, mirrored_w, None, (1, 2), x.shape[2], s, grad=True),
        "weight_gradient": lambda: tc._weight_grad(x, dy, weight.shape[0], (1, 2), s),
    }


def sweep_temporal_conv(batch: int, device: torch.device, iters: int) -> list[dict]:
    """Training time (fwd + bwd) of the Triton dilated-branches op per TCN shape and launch: first the
    forward / input-gradient kernel's rows and warps, then, at the best so far, the weight-gradient
    kernel's rows per step and pipeline stages, then its warps and program count
    (``temporal_conv.LAUNCH``); last, at the best launch, each kernel alone (:func:`split_temporal_conv`)."""
    from trainer.models import temporal_conv

    default = dict(temporal_conv.LAUNCH)
    shapes = [(s, batch * PERSONS, s.out_channels // 4) for s in block_shapes(WINDOW)]

    # the inputs once per shape; each launch is then timed on the same tensors
    ops = [dilated_pair_op("t", seqs, bc, s.frames, s.stride, device, True) for s, seqs, bc in shapes]

    def total_ms(launch: dict) -> tuple[float, list[float]]:
        temporal_conv.LAUNCH.update(launch)
        per_shape = [1e3 * time_call(op.train, device, iters) for op in ops]
        return sum(ms * shape.count for ms, (shape, _, _) in zip(per_shape, shapes, strict=True)), per_shape

    rows = []
    try:
        best, best_ms = dict(default), float("inf")
        stages = [
            [{"rows": r, "warps": w} for r in (32, 64, 128) for w in (4, 8)],
            [{"wgrad_rows": r, "wgrad_stages": st} for r in (32, 64, 128) for st in (1, 2, 3)],
            [{"wgrad_warps": w, "wgrad_programs": p} for w in (4, 8) for p in (128, 256, 512)],
        ]
        for stage in stages:
            base = dict(best)
            for change in stage:
                launch = {**base, **change}
                try:
                    ms, per_shape = total_ms(launch)
                except Exception as err:  # a launch that does not fit (shared memory, registers)
                    rows.append({"launch": launch, "failed": f"{type(err).__name__}: {str(err)[:120]}"})
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                rows.append({"launch": launch, "ms_per_step": round(ms, 4), "per_shape_ms": per_shape})
                print(json.dumps(rows[-1]), flush=True)
                if ms < best_ms:
                    best, best_ms = launch, ms
        rows.append({"best": best, "ms_per_step": round(best_ms, 4)})
        print(json.dumps(rows[-1]), flush=True)
        temporal_conv.LAUNCH.update(best)
        rows.append({"split_at_best": split_temporal_conv(shapes, device, iters)})
        print(json.dumps(rows[-1]), flush=True)
    finally:
        temporal_conv.LAUNCH.update(default)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=10, help="calls per timed CUDA graph")
    parser.add_argument("--copy-tb-s", type=float, default=3.02, help="copy rate (H100, session 11: 3.02)")
    parser.add_argument("--matmul-tflops", type=float, default=800.0, help="bf16 matrix rate (H100: ~800)")
    parser.add_argument("--quick", action="store_true", help="batch 1, 16 frames, CPU: checks the script")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "op_roofline.json")
    parser.add_argument("--replot", action="store_true", help="only draw --out's saved result as its .png")
    parser.add_argument(
        "--sweep-tconv",
        action="store_true",
        help="only sweep the Triton dilated-branches op's launches, then time its three kernels alone at the "
        "best (CUDA); written beside --out",
    )
    args = parser.parse_args()
    if args.replot:
        replot_saved(args.out, plot_op_floors)
        return
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer runs (trainer/engine/loop.py)
    if args.sweep_tconv:
        sweep = sweep_temporal_conv(args.batch, device, args.iters)
        path = args.out.with_name("temporal_conv_launches.json")
        path.write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "rows": sweep}, indent=1) + "\n")
        print(f"wrote {path}")
        return
    if args.quick:
        args.batch, args.iters = 1, 1
    shapes = block_shapes(16 if args.quick else WINDOW)
    rows, per_op = [], {}
    for shape in shapes:
        for op in block_ops(shape, args.batch, device):
            row = {"block": shape.label, "count": shape.count}
            row.update(measure(op, device, args.iters, args.copy_tb_s, args.matmul_tflops))
            rows.append(row)
            row["candidate"] = op.candidate
            total = per_op.setdefault(op.name, {"train_ms_per_step": 0.0, "floor_ms_per_step": 0.0})
            total["candidate"] = op.candidate
            total["train_ms_per_step"] += row["train_ms"] * shape.count
            total["floor_ms_per_step"] += row["floor_ms"] * shape.count
            print(json.dumps(row), flush=True)
    default_path = [t for t in per_op.values() if not t["candidate"]]
    step_ms = sum(t["train_ms_per_step"] for t in default_path)
    floor_ms = sum(t["floor_ms_per_step"] for t in default_path)
    result = {
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "copy_tb_s": args.copy_tb_s,
        "matmul_tflops": args.matmul_tflops,
        "ops": rows,
        "per_op": {
            k: {kk: vv if isinstance(vv, bool) else round(vv, 3) for kk, vv in v.items()}
            for k, v in per_op.items()
        },
        # the default path's ops (candidates left out)
        "train_ms_per_step": round(step_ms, 3),
        "floor_ms_per_step": round(floor_ms, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['gpu']}, bf16, batch {args.batch}: per training step (each op × its blocks), fwd + bwd")
    print("| op | ms per step | floor ms | of floor |")
    print("| --- | --- | --- | --- |")
    for name, t in sorted(per_op.items(), key=lambda kv: -kv[1]["train_ms_per_step"]):
        share = t["floor_ms_per_step"] / t["train_ms_per_step"] if t["train_ms_per_step"] else 0.0
        print(f"| {name} | {t['train_ms_per_step']:.3f} | {t['floor_ms_per_step']:.3f} | {share:.0%} |")
    share = floor_ms / step_ms if step_ms else 0.0
    print(f"| all (default path) | {step_ms:.3f} | {floor_ms:.3f} | {share:.0%} |")
    picture = plot_op_floors(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}" + (f" and {picture}" if picture else ""))


if __name__ == "__main__":
    main()

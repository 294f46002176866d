"""How far the training step's BatchNorms (and LayerNorms) run from the memory bandwidth, per shape.

The compiled training step spends about half of its kernel time in Inductor kernels built around
BatchNorm (docs/performance.md, "What bounds it now"). Whether a BatchNorm of our own would pay
depends on how far those kernels are from the bandwidth floor: this bench records every BatchNorm
call — and each LayerNorm call (SA-GC's attention input) — of one training forward of the
benchmarked model (InfoGCN + CrossGLG, NTU-120 shapes, batch ``--batch``) with its exact shape and
strides (channels-last, slices included), then times each
distinct call alone — forward in training mode plus backward, eager and ``torch.compile``d — and
sets the time against the floor of the bytes it must move at the measured copy rate:

    BatchNorm forward:  read x (statistics), read x + write y (normalise)       = 3 passes
    BatchNorm backward: read dy, x (two channel sums), read dy, x + write dx    = 5 passes
    LayerNorm (per row, statistics in registers; under autocast its output and gradient are
              fp32, twice the input's bf16 bytes): forward read x + write y = 1 + 2,
              backward read dy, x + write dx = 2 + 1 + 1 (the weight gradients' sums ride along)

so 8 passes of the input's bytes for a BatchNorm, 7 for a LayerNorm (on the GPU; on the CPU
everything is fp32 and the LayerNorm floor is loose).
Prints a table per shape and the totals per training step::

    python bench/batchnorm_bandwidth.py --device cuda          # ~2-3 min on an H100/H200 (compiles)
    python bench/batchnorm_bandwidth.py --device cpu --quick   # tiny sizes, eager: checks the script

Writes ``bench/results/batchnorm_bandwidth.json`` (``--out`` elsewhere).

On CUDA each call's forward + backward is timed as GPU time, captured in a CUDA graph and replayed
(since session 7; not yet run on a GPU). Session 6's run (``batchnorm_bandwidth_2026-12-04_s6.json``)
timed the calls one by one with Python autograd between them, so its times were host-bound — all
norms compiled summed to 41.7 ms per step, while the CUDA-graphed step's profile put the whole norm
family at 12.3 ms; its ×floor columns are upper bounds only. Each shape alone still differs from the
step (no neighbouring elementwise work fused in, data reused in L2 across the replayed calls):
``bench/train_throughput.py --sections compare`` (the real step) decides, and ``--sections bandwidth``
measures the Inductor kernels inside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataspec import load_spec  # noqa: E402
from trainer.models.batchnorm_kernels import KernelBatchNorm2d, kernels_apply  # noqa: E402
from trainer.models.crossglg import CrossGLG  # noqa: E402

Call = tuple[str, tuple[int, ...], tuple[int, ...]]  # module kind, input shape, input strides
TEXT_DIM = 384  # the text embeddings' width in train_throughput.py
PASSES = {"BatchNorm1d": 8, "BatchNorm2d": 8, "LayerNorm": 7}  # input-sized passes of the floor


def model_calls(batch: int, frames: int, device: torch.device) -> Counter[Call]:
    """The BatchNorm and LayerNorm calls of one training forward of the model, by shape and strides."""
    spec = load_spec("ntu120")
    model = CrossGLG("infogcn", 100, spec, g2l=True, l2g=True).to(device).train()
    seen: Counter[Call] = Counter()

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        seen[(type(module).__name__, tuple(x.shape), tuple(x.stride()))] += 1

    hooks = [
        m.register_forward_pre_hook(record)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.LayerNorm)
    ]
    x = torch.randn(batch, 3, frames, spec.num_joints, 2, device=device)
    text = torch.randn(batch, spec.num_joints, TEXT_DIM, device=device).half()  # joint texts
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model(x, text)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def storage_size(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements a strided view of ``shape``/``stride`` spans (its last element's offset + 1)."""
    return 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))


def time_call(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Mean seconds of ``fn`` after three warm-up calls (which compile it where it is compiled).

    On CUDA the GPU time alone: ``reps`` calls captured in one CUDA graph and replayed between
    events, so the host's Python, autograd and launch costs are not in it (session 6 timed the calls
    one by one and measured the host). Where ``fn`` cannot be captured, and off CUDA, wall-clock.
    """
    for _ in range(3):
        fn()
    if device.type == "cuda":
        try:
            return graph_replay_seconds(fn, reps)
        except RuntimeError as exc:
            print(f"  CUDA graph capture failed ({str(exc).splitlines()[0][:80]}): wall-clock", flush=True)
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def graph_replay_seconds(fn: Callable[[], object], reps: int, replays: int = 3) -> float:
    """Seconds per call of ``fn``: ``reps`` calls captured in one CUDA graph (after a warm-up on a
    side stream, as capture requires), replayed ``replays`` times between CUDA events."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / (replays * reps)


def bench_call(call: Call, device: torch.device, dtype: torch.dtype, mode: str, reps: int) -> float | None:
    """Seconds of one norm forward (training) + backward of ``call``'s input layout.

    ``mode``: ``eager``, ``compiled`` (Inductor) or ``kernels`` (our candidate BatchNorm kernels,
    :mod:`trainer.models.batchnorm_kernels`; None where they do not apply: other norms, CPU tensors).
    """
    kind, shape, stride = call
    channels = shape[1]
    norm: nn.Module
    if kind == "LayerNorm":
        norm = nn.LayerNorm(shape[-1])
    else:
        norm = (nn.BatchNorm1d if kind == "BatchNorm1d" else nn.BatchNorm2d)(channels)
    if mode == "kernels":
        if kind != "BatchNorm2d":
            return None
        norm = KernelBatchNorm2d(channels)
    norm = norm.to(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    base = torch.randn(storage_size(shape, stride), generator=gen).to(device, dtype)
    x = base.as_strided(shape, stride).detach().requires_grad_(True)  # a leaf with the recorded strides
    dy = torch.randn(shape, generator=gen).to(device, dtype)
    if mode == "kernels" and not kernels_apply(x):
        return None
    inputs = [x, *norm.parameters()]

    def step(x: torch.Tensor, dy: torch.Tensor) -> None:
        # Under autocast as in the training step: BN keeps bf16 activations (fp32 statistics),
        # LayerNorm computes in fp32.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            y = norm(x)
        torch.autograd.grad(y, inputs, dy.to(y.dtype))  # the gradients, without accumulating them

    fn = torch.compile(step, dynamic=False) if mode == "compiled" else step
    return time_call(lambda: fn(x, dy), device, reps)


def copy_rate(device: torch.device) -> float:
    """Device copy rate in bytes/s (read + write of 1 GiB; 256 MiB on the CPU)."""
    n = (2**30 if device.type == "cuda" else 2**28) // 2
    src = torch.randn(n, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / time_call(lambda: dst.copy_(src), device, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, eager only (script check)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--modes", nargs="+", choices=("eager", "compiled", "kernels"), default=None)
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float16", "float32"),
        help="activations (default: bf16 on CUDA, fp32)",
    )
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.frames, args.reps = 2, 16, 2
    modes = args.modes or (["eager"] if args.quick else ["eager", "compiled", "kernels"])
    device = torch.device(args.device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else torch.bfloat16
        if device.type == "cuda"
        else torch.float32
    )

    calls = model_calls(args.batch, args.frames, device)
    rate = copy_rate(device)
    rows: list[dict[str, Any]] = []
    for call, count in sorted(calls.items(), key=lambda kv: -kv[1] * torch.Size(kv[0][1]).numel()):
        kind, shape, stride = call
        nbytes = torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
        row: dict[str, Any] = {
            "module": kind,
            "shape": list(shape),
            "stride": list(stride),
            "calls_per_step": count,
            "mb": round(nbytes / 1e6, 2),
            "floor_ms": round(PASSES[kind] * nbytes / rate * 1e3, 4),
        }
        for mode in modes:
            seconds = bench_call(call, device, dtype, mode, args.reps)
            row[f"{mode}_ms"] = None if seconds is None else round(seconds * 1e3, 4)
            row[f"{mode}_of_floor"] = (
                None if seconds is None else round(row[f"{mode}_ms"] / row["floor_ms"], 2)
            )
        rows.append(row)
        print(json.dumps(row), flush=True)

    def per_step(subset: list[dict[str, Any]]) -> dict[str, float | None]:
        """Summed ms per training step of each column over ``subset`` (None where a mode skipped a row)."""
        out: dict[str, float | None] = {}
        for key in ["floor_ms", *[f"{m}_ms" for m in modes]]:
            values = [r[key] for r in subset]
            out[key] = (
                None
                if None in values
                else round(sum(v * r["calls_per_step"] for v, r in zip(values, subset, strict=True)), 3)
            )
        return out

    bn2d = [r for r in rows if r["module"] == "BatchNorm2d"]
    totals = {"all": per_step(rows), "BatchNorm2d": per_step(bn2d)}
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "batch": args.batch,
        "frames": args.frames,
        "copy_tb_s": round(rate / 1e12, 3),
        "passes": PASSES,
        "rows": rows,
        "per_step_ms": totals,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batchnorm_bandwidth.json").write_text(json.dumps(result, indent=1) + "\n")

    def cell(value: float | None, fmt: str) -> str:
        return " — |" if value is None else f" {value:{fmt}} |"

    head = "| norm | input | calls | MB | floor ms |" + "".join(f" {m} ms | {m} ×floor |" for m in modes)
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        shape = "×".join(map(str, r["shape"]))
        first = f"| {r['module']} | {shape} | {r['calls_per_step']} | {r['mb']:.1f} | {r['floor_ms']:.3f} |"
        lines.append(
            first + "".join(cell(r[f"{m}_ms"], ".3f") + cell(r[f"{m}_of_floor"], ".1f") for m in modes)
        )
    for name, subset in (("all norms", rows), ("BatchNorm2d", bn2d)):
        t = totals["all" if subset is rows else "BatchNorm2d"]
        cells = "".join(cell(t[f"{m}_ms"], ".2f") + " |" for m in modes)
        calls_in = sum(r["calls_per_step"] for r in subset)
        lines.append(f"| **per step, {name}** | | {calls_in} | | {t['floor_ms']:.2f} |{cells}")
    print()
    print(
        f"{result['device']}, {result['dtype']}, batch {args.batch}, copy rate {result['copy_tb_s']} TB/s, "
        "floor = 8 input passes per BatchNorm, 7 per LayerNorm; forward (training) + backward per call"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

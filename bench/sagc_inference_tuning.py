"""SA-GC in eval: the channel mixing inside the attention kernel against the two-step path, per block shape.

The two-step path (the default) writes the 3×-wide mixed features ``y = x W_hᵀ`` with one GEMM and
reads them back in the fused attention kernel; :mod:`trainer.models.sagc_inference` computes
``(M_h x) W_hᵀ`` inside one kernel instead. This bench records the SA-GC calls of one feature
extraction of the benchmarked model (batch ``--batch``, NTU-120 shapes), times per call shape

- the two-step path: the GEMM plus the attention forward at its tuned launch, and
- the one-kernel path at its default launch, then at the launch found by coordinate descent over
  frames packed per program, channel chunk, column tile, warps and stages,

checks the chosen launches against float64 on the device, and prints the summed times per eval
forward: the prediction for ``model.options={fused_mixing: true}`` before a whole-model run. On CUDA
each shape is tuned in a child process (``--shape-timeout`` seconds each): a launch that faults the
GPU loses its shape only (``pack=4`` did at 256 → 256 on an H100, 2026-12-06)::

    python bench/sagc_inference_tuning.py --device cuda           # ~3-5 min on an H100/H200
    TRITON_INTERPRET=1 python bench/sagc_inference_tuning.py --device cpu --quick   # checks the script

Writes ``bench/results/sagc_inference_tuning.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagc_attention_tuning import (  # noqa: E402
    child_arguments,
    run_header,
    sweep_arguments,
    timer,
    tune,
    tune_shape_in_child,
)

from dataspec import load_spec  # noqa: E402
from trainer.models import infogcn, sagc_attention, sagc_inference  # noqa: E402
from trainer.models.crossglg import CrossGLG  # noqa: E402
from trainer.models.sagc_inference import MixedLaunch, mixed_launch  # noqa: E402

Shape = tuple[int, int, int, int, int, int]  # frames G, joints V, qk width, channels C, columns C', heads
SPACE = {
    # pack 4 hit an illegal memory access at C = C' = 256 on an H100 (2026-12-06) and the CUDA context
    # was lost for every later launch; left out until that is understood
    "pack": (1, 2),
    "groups": (1, 4, 16),
    "block_n": (32, 64, 128, 256),
    "block_k": (32, 64, 128),
    "num_warps": (2, 4, 8),
    "num_stages": (1, 2, 3),
}
QUICK_SPACE = {
    "pack": (1, 2),
    "groups": (1, 2),
    "block_n": (32, 64),
    "block_k": (32,),
    "num_warps": (4,),
    "num_stages": (1,),
}


def eval_calls(batch: int, frames: int, device: torch.device) -> Counter[Shape]:
    """The SA-GC calls of one feature extraction of the benchmarked model (fused mixing on)."""
    seen: Counter[Shape] = Counter()
    original = infogcn.sagc_mixed_attention

    def record(
        qk: torch.Tensor,
        topology: torch.Tensor,
        x: torch.Tensor,
        weight: torch.Tensor,
        heads: int,
        scale: float,
        epilogue: Any = None,
    ) -> torch.Tensor:
        seen[(qk.shape[0], qk.shape[1], qk.shape[2], x.shape[2], weight.shape[1], heads)] += 1
        return original(qk, topology, x, weight, heads, scale, epilogue)

    spec = load_spec("ntu120")
    model = CrossGLG("infogcn", 100, spec, g2l=True, l2g=True, fused_mixing=True).to(device).eval()
    x = torch.randn(batch, 3, frames, spec.num_joints, 2, device=device)
    infogcn.sagc_mixed_attention = record
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model.extract_features(x)
    finally:
        infogcn.sagc_mixed_attention = original
    return seen


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Random operands of one call, laid out as the layer passes them (rows of x, a transposed weight)."""
    g, v, width, c, n, heads = shape
    gen = torch.Generator(device="cpu").manual_seed(0)
    weight = (torch.randn(n, heads, c, generator=gen) * c**-0.5).to(device, dtype)  # mix.weight's layout
    return {
        "qk": torch.randn(g, v, width, generator=gen).to(device, dtype),
        "topology": torch.randn(heads, v, v, generator=gen).to(device),
        "x": torch.randn(g, v, c, generator=gen).to(device, dtype),
        "weight": weight.transpose(0, 1),  # [H, C', C]
        "heads": heads,
        "scale": (width // (2 * heads)) ** -0.5,
    }


def two_step(i: dict[str, Any]) -> Any:
    """The default path of one call: the mixing GEMM, then the attention kernel at its tuned launch."""
    heads, n, c = i["weight"].shape
    flat = i["weight"].reshape(heads * n, c)

    def call() -> torch.Tensor:
        y = F.linear(i["x"], flat).reshape(i["x"].shape[0], -1, n)
        launch = sagc_attention.forward_launch(n)
        return sagc_attention.attention_forward(i["qk"], i["topology"], y, heads, i["scale"], launch)

    return call


def one_kernel(i: dict[str, Any], launch: MixedLaunch) -> Any:
    """One call of the inference kernel at ``launch``."""
    return lambda: sagc_inference.mixed_forward(
        i["qk"], i["topology"], i["x"], i["weight"], i["heads"], i["scale"], launch
    )


def tune_shape(
    shape: Shape, count: int, device: torch.device, space: dict[str, tuple[int, ...]]
) -> dict[str, Any]:
    """One shape's row: the two-step path, the kernel at its current and its searched launch, and the
    searched launch's check against float64."""
    time_ms = timer(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    inputs = make_inputs(shape, device, dtype)
    start = mixed_launch(shape[3], shape[4])  # the current table's launch (or the default)
    best, costs = tune(
        lambda _, launch, i=inputs: one_kernel(i, launch),
        {shape: count},
        start,
        space,
        time_ms,
        label=str(shape),
    )
    g, v, width, c, n, heads = shape
    check = sagc_inference.check_kernels(
        device.type, dtype, frames=37, d=width // (2 * heads), c=c, n=n, heads=heads, launch=best
    )
    return {
        "shape": dict(zip(("G", "V", "qk", "C", "C_out", "heads"), shape, strict=True)),
        "calls": count,
        "ms_two_step": round(count * time_ms(two_step(inputs)), 4),
        "ms_one_kernel_default": costs[repr(start)],
        "ms_one_kernel_tuned": costs[repr(best)],
        "tuned": dataclasses.asdict(best),
        "check": check,
        "timed_launches": costs,
    }


def main() -> None:
    args = sweep_arguments(
        __doc__, 256, "eval batch (2 persons each)", "sagc_inference_tuning.json", extra=child_arguments
    )
    device = torch.device(args.device)
    if args.one_shape:
        shape, count = json.loads(args.one_shape)
        space = QUICK_SPACE if args.quick else SPACE
        print("ROW " + json.dumps(tune_shape(tuple(shape), count, device, space)), flush=True)
        return
    if args.quick:
        calls: Counter[Shape] = Counter({(7, 25, 48, 64, 40, 3): 2, (5, 25, 96, 128, 64, 3): 1})
        space = QUICK_SPACE
    else:
        calls = eval_calls(args.batch, args.frames, device)
        space = SPACE
    rows = []
    for shape, count in sorted(calls.items()):
        isolate = args.isolate or (device.type == "cuda" and not args.quick)
        row = (
            tune_shape_in_child(__file__, args, shape, count)
            if isolate
            else tune_shape(shape, count, device, space)
        )
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "timed_launches"}), flush=True)

    failed = [r for r in rows if "failed" in r]
    rows = [r for r in rows if "failed" not in r]
    keys = ("ms_two_step", "ms_one_kernel_default", "ms_one_kernel_tuned")
    totals = {key: round(sum(r[key] for r in rows), 3) for key in keys}
    result = {
        **run_header(args),
        "rows": rows,
        "failed": failed,
        "ms_per_eval_forward": totals,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| C → C' | calls | two-step ms | one kernel ms (default) | tuned | tuned launch | check rel |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        t, sh = r["tuned"], r["shape"]
        launch = ", ".join(
            f"{k} {t[k]}" for k in ("pack", "groups", "block_k", "block_n", "num_warps", "num_stages")
        )
        times = " | ".join(f"{r[k]:.3f}" for k in keys)
        print(f"| {sh['C']} → {sh['C_out']} | {r['calls']} | {times} | {launch} | {r['check']['z']:.1e} |")
    print(
        f"\nper eval forward (batch {args.batch}): two-step {totals['ms_two_step']} ms, one kernel "
        f"{totals['ms_one_kernel_default']} ms at the default launch, "
        f"{totals['ms_one_kernel_tuned']} ms tuned"
        if rows
        else "no SA-GC calls recorded"
    )
    table = ", ".join(
        f"({r['shape']['C']}, {r['shape']['C_out']}): MixedLaunch(**{r['tuned']})"
        for r in rows
        if r["ms_one_kernel_tuned"] < r["ms_one_kernel_default"]
    )
    print(f"TUNED_MIXED entries (paste into trainer/models/sagc_inference.py): {{{table}}}")
    for f in failed:
        print(f"not tuned: {f['shape']}: {f['failed']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

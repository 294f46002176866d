"""Inductor's own count of the bytes each encoding block's compiled training step moves, per setting.

No GPU needed: each distinct InfoGCN block (``bench/block_throughput.py``'s shapes) is compiled for
the CPU, forward + backward under bf16 autocast, and Inductor's scheduler reports the bytes every
node of the two graphs reads and writes (``GraphLowering.count_bytes``: fused kernels and extern
GEMMs / convolutions alike, recomputed reads counted where they happen). The figure is in
*activation units* (one bf16 tensor of the block's output size), the unit of
``bench/block_throughput.py`` and ``docs/performance.md``.

What it is for: Inductor's store-versus-recompute decisions (``realize_*`` thresholds) are made
before code generation and do not depend on the device — the bench pins the CPU-only thresholds to
their GPU values — so a setting that makes Inductor keep fewer intermediates in memory shows here as
fewer units, before any GPU time is spent. Two parts of the graph are not the GPU's: SA-GC's
attention is PyTorch on the CPU (its maps in memory), not our Triton kernel, and the CPU backend
fuses a little differently (the model's other CUDA-only choices are made as on a GPU:
:func:`as_on_a_gpu`); compare settings with each other, not with GPU time::

    python bench/inductor_bytes.py                                   # default and remat, ~3 min on 2 cores
    python bench/inductor_bytes.py --settings default remat nosplit --shapes 1

Writes ``bench/results/inductor_bytes.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")  # a cache hit skips the count
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import torch  # noqa: E402
import torch._inductor.config as inductor_config  # noqa: E402
from torch._inductor import compile_fx, metrics  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from block_throughput import BlockShape, block_shapes, block_step  # noqa: E402
from train_throughput import INDUCTOR_FLAGS as INDUCTOR_SETTINGS  # noqa: E402

from trainer.models import infogcn  # noqa: E402
from trainer.plots import plot_grouped_bars  # noqa: E402

# The CPU backend's own store-versus-recompute thresholds, set to what Inductor uses on a GPU
# (torch/_inductor/config.py: _realize_opcount_threshold_default, _realize_acc_reads_threshold_default).
GPU_THRESHOLDS = {"realize_opcount_threshold": 30, "realize_acc_reads_threshold": 8}


def as_on_a_gpu() -> None:
    """Make the model take its CUDA-only paths on the CPU too where they change the graph: the
    merged dilated convolution with autograd on (:func:`trainer.models.infogcn.merge_dilations_here`)."""
    infogcn.merge_dilations_here = lambda x: torch.is_grad_enabled()


def count_bytes_on() -> None:
    """Make Inductor count each compiled graph's bytes (it does so only when its metrics log is on)."""
    compile_fx.inductor_metrics_log.isEnabledFor = lambda level: True  # type: ignore[method-assign]
    compile_fx.inductor_metrics_log.info = lambda *args, **kwargs: None  # type: ignore[method-assign]


def block_units(shape: BlockShape, options: dict[str, object], batch: int) -> dict[str, float]:
    """Units one block's compiled forward + backward moves by Inductor's count, and its kernels."""
    torch._dynamo.reset()
    metrics.reset()
    t0 = time.perf_counter()
    with inductor_config.patch({**GPU_THRESHOLDS, **options}):
        _, train, out_elements = block_step(shape, batch, torch.device("cpu"), {}, True)
        train()
    return {
        "units": round(metrics.num_bytes_accessed / (2 * out_elements), 1),
        "kernels": metrics.generated_kernel_count,
        "compile_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["default", "remat"],
        help=f"'default' and names of INDUCTOR_SETTINGS ({', '.join(INDUCTOR_SETTINGS)})",
    )
    parser.add_argument("--shapes", type=int, help="only the first N block shapes")
    parser.add_argument(
        "--batch", type=int, default=1, help="samples (two persons each); units do not depend on it"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inductor_bytes.json")
    args = parser.parse_args()
    unknown = [s for s in args.settings if s != "default" and s not in INDUCTOR_SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting(s) {unknown}: choose from default, {', '.join(INDUCTOR_SETTINGS)}")
    count_bytes_on()
    as_on_a_gpu()
    shapes = block_shapes()[: args.shapes]
    rows = []
    for shape in shapes:
        row: dict[str, object] = {"label": shape.label, "count": shape.count}
        for name in args.settings:
            row[name] = block_units(shape, INDUCTOR_SETTINGS.get(name, {}), args.batch)
            print(f"{shape.label} {name}: {row[name]}", flush=True)
        rows.append(row)
    totals = {
        name: round(sum(r[name]["units"] * r["count"] for r in rows) / sum(r["count"] for r in rows), 1)
        for name in args.settings
    }
    settings = {n: INDUCTOR_SETTINGS.get(n, {}) for n in args.settings}
    result = {"torch": torch.__version__, "settings": settings, "thresholds_pinned": GPU_THRESHOLDS}
    result |= {"blocks": rows, "units_per_block": totals}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| block | count | " + " | ".join(args.settings) + " |")
    print("| --- | --- |" + " --- |" * len(args.settings))
    for r in rows:
        units = " | ".join(str(r[n]["units"]) for n in args.settings)
        print(f"| {r['label']} | {r['count']} | {units} |")
    print("| per block (weighted) | 9 | " + " | ".join(str(totals[n]) for n in args.settings) + " |")
    labels = [f"{r['label']} (×{r['count']})" for r in rows]
    series = {f"{n}: {totals[n]} per block": [r[n]["units"] for r in rows] for n in args.settings}
    title = f"Inductor's byte count, training fwd + bwd per block (CPU compile, torch {torch.__version__})"
    picture = plot_grouped_bars(labels, series, "activation units moved", title, args.out.with_suffix(".png"))
    print(f"wrote {args.out}" + (f" and {picture}" if picture else ""))


if __name__ == "__main__":
    main()

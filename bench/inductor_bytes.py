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
    python bench/inductor_bytes.py --whole-model                     # CrossGLG's whole step, ~5 min

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

from block_throughput import WINDOW, BlockShape, block_shapes, block_step  # noqa: E402
from train_throughput import INDUCTOR_FLAGS as INDUCTOR_SETTINGS  # noqa: E402

from trainer.models import infogcn  # noqa: E402
from trainer.plots import plot_grouped_bars  # noqa: E402

# The CPU backend's own store-versus-recompute thresholds, set to what Inductor uses on a GPU
# (torch/_inductor/config.py: _realize_opcount_threshold_default, _realize_acc_reads_threshold_default).
GPU_THRESHOLDS = {"realize_opcount_threshold": 30, "realize_acc_reads_threshold": 8}


def as_on_a_gpu() -> None:
    """Make the model take its CUDA-only paths on the CPU too where they change the graph: the
    merged dilated convolution with autograd on (:func:`trainer.models.infogcn.merge_dilations_here`).
    Since 2026-12-07 a GPU runs the Triton op of ``triton_dilations`` there instead (no CPU kernel
    outside the interpreter). The count here is the merged convolution's path: it also includes the
    dense copy of the branches' input that path writes and the op reads in place."""
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


def model_megabytes(options: dict[str, object], batch: int, classes: int) -> dict[str, float]:
    """MB per sample Inductor's count says CrossGLG's whole training forward + loss + backward moves
    (``bench/train_throughput.py``'s model, its text branch fed random embeddings), and its kernels."""
    from train_throughput import Knowledge, build

    from trainer.engine.step import make_forward_loss

    torch._dynamo.reset()
    metrics.reset()
    t0 = time.perf_counter()
    cpu = torch.device("cpu")
    model = build("crossglg", classes, cpu).to(memory_format=torch.channels_last).train()
    knowledge = Knowledge(classes, cpu)
    x = torch.randn(batch, 3, WINDOW, 25, 2)
    labels = torch.randint(0, classes, (batch,))
    forward_loss = torch.compile(make_forward_loss(model, cpu, "off"))  # the trainer's step, for the CPU
    with inductor_config.patch({**GPU_THRESHOLDS, **options}):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _, _ = forward_loss(x, knowledge.text[labels], labels, knowledge.k_gt[labels])
        loss.backward()
    return {
        "mb_per_sample": round(metrics.num_bytes_accessed / batch / 1e6, 1),
        "kernels": metrics.generated_kernel_count,
        "compile_s": round(time.perf_counter() - t0, 1),
    }


def whole_model(settings: list[str], batch: int, out: Path) -> None:
    """``--whole-model``: the count for the whole training step per setting, as a table and JSON."""
    rows = {name: model_megabytes(INDUCTOR_SETTINGS.get(name, {}), batch, 120) for name in settings}
    result = {"torch": torch.__version__, "batch": batch, "thresholds_pinned": GPU_THRESHOLDS}
    result |= {"settings": {n: INDUCTOR_SETTINGS.get(n, {}) for n in settings}, "whole_model": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nCrossGLG training forward + loss + backward, CPU compile, batch {batch}")
    print("| setting | MB per sample | kernels |\n| --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['mb_per_sample']} | {row['kernels']} |")
    print(f"wrote {out}")


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
        "--batch",
        type=int,
        help="samples, two persons each (blocks: 1, their units do not depend on it; --whole-model: 8)",
    )
    parser.add_argument(
        "--whole-model",
        action="store_true",
        help="count CrossGLG's whole training step (MB per sample) instead of the blocks (~2 min a setting)",
    )
    parser.add_argument(
        "--out", type=Path, help="result JSON (default bench/results/inductor_bytes[_model].json)"
    )
    args = parser.parse_args()
    unknown = [s for s in args.settings if s != "default" and s not in INDUCTOR_SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting(s) {unknown}: choose from default, {', '.join(INDUCTOR_SETTINGS)}")
    results = Path(__file__).parent / "results"
    count_bytes_on()
    as_on_a_gpu()
    if args.whole_model:
        whole_model(args.settings, args.batch or 8, args.out or results / "inductor_bytes_model.json")
        return
    args.out = args.out or results / "inductor_bytes.json"
    shapes = block_shapes()[: args.shapes]
    rows = []
    for shape in shapes:
        row: dict[str, object] = {"label": shape.label, "count": shape.count}
        for name in args.settings:
            row[name] = block_units(shape, INDUCTOR_SETTINGS.get(name, {}), args.batch or 1)
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

"""Launch sweep of the fused SA-GC attention kernels at the shapes InfoGCN trains with.

The fused kernels (:mod:`trainer.models.sagc_attention`) run one small problem per frame — V = 25
joints, d = C/8 query width, C' feature columns — tens of thousands of times per step; how many frames
a program handles, how wide its column tile is and how many warps and pipeline stages it gets decide
whether it runs near the memory bandwidth or far below it. This bench records the kernels' calls in
one forward of the benchmarked model (batch ``--batch``, NTU-120 shapes), then, per feature width C',
searches the launch by coordinate descent (each parameter in turn over its values, the others held;
two rounds) minimising the summed time of that width's calls, and prints the result as the table
to paste into ``TUNED_FORWARD`` / ``TUNED_BACKWARD``. It also times the launches used before the sweep,
checks the chosen ones against float64 on the device, and estimates the saving per training step.
``--eval`` sweeps the forward kernel with the eval epilogue (:mod:`trainer.models.sagc_epilogue`) at the
eval batch instead, for ``TUNED_EVAL_FORWARD``::

    python bench/sagc_attention_tuning.py --device cuda        # ~2-4 min on an H100/H200 (compiles)
    python bench/sagc_attention_tuning.py --device cuda --from-tables   # does the table still hold here?
    python bench/sagc_attention_tuning.py --device cuda --eval --out bench/results/sagc_eval_tuning.json
    TRITON_INTERPRET=1 python bench/sagc_attention_tuning.py --device cpu --quick   # checks the script

Writes ``bench/results/sagc_attention_tuning.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataspec import load_spec  # noqa: E402
from trainer.models import infogcn, sagc_attention, sagc_epilogue  # noqa: E402
from trainer.models.crossglg import CrossGLG  # noqa: E402
from trainer.models.sagc_attention import Launch  # noqa: E402
from trainer.models.sagc_epilogue import Epilogue  # noqa: E402

Shape = tuple[int, int, int, int, int]  # frames G, joints V, qk width, feature columns C', heads
SPACE = {
    "block_n": (32, 64, 128, 256),
    "frames": (1, 2, 4, 8, 16),
    "num_warps": (1, 2, 4, 8),
    "num_stages": (1, 2, 3),
}
QUICK_SPACE = {"block_n": (32, 64), "frames": (1, 3), "num_warps": (4,), "num_stages": (1,)}


def model_calls(batch: int, frames: int, device: torch.device) -> Counter[Shape]:
    """The attention calls of one forward of the benchmarked model (InfoGCN + CrossGLG, NTU-120)."""
    seen: Counter[Shape] = Counter()
    original = infogcn.sagc_attention

    def record(
        qk: torch.Tensor,
        topology: torch.Tensor,
        y: torch.Tensor,
        heads: int,
        scale: float,
        epilogue: Epilogue | None = None,
    ) -> torch.Tensor:
        seen[(qk.shape[0], qk.shape[1], qk.shape[2], y.shape[2], heads)] += 1
        return original(qk, topology, y, heads, scale, epilogue)

    spec = load_spec("ntu120")
    model = CrossGLG("infogcn", 100, spec, g2l=True, l2g=True).to(device)
    x = torch.randn(batch, 3, frames, spec.num_joints, 2, device=device)
    infogcn.sagc_attention = record
    try:
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            model.extract_features(x)
    finally:
        infogcn.sagc_attention = original
    return seen


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Random operands of one call, laid out as the layer passes them (contiguous rows)."""
    g, v, width, n, heads = shape
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=gen).to(device, dtype)

    return {
        "qk": rnd(g, v, width),
        "topology": torch.randn(heads, v, v, generator=gen).to(device),
        "y": rnd(g, v * heads, n),
        "dz": rnd(g, v, n),
        "heads": heads,
        "scale": (width // (2 * heads)) ** -0.5,
        # the eval epilogue's operands (a joint weight per frame: the same loads as per sample)
        "epilogue": Epilogue(
            torch.rand(n, generator=gen).to(device) + 0.5,
            torch.randn(n, generator=gen).to(device),
            rnd(g, v, n),
            rnd(g, v).abs(),
            frames=1,
        ),
    }


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Milliseconds per call: Triton's ``do_bench`` median on CUDA, a few wall-clock calls elsewhere."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=10, rep=40, return_mode="median"))

    def wall(fn: Callable[[], object]) -> float:
        fn()
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    return wall


def kernel_call(kind: str, inputs: dict[str, Any], launch: Launch) -> Callable[[], object]:
    """One launch of the forward or backward kernel on prepared operands."""
    i = inputs
    if kind in ("forward", "eval"):
        epilogue = i["epilogue"] if kind == "eval" else None
        return lambda: sagc_attention.attention_forward(
            i["qk"], i["topology"], i["y"], i["heads"], i["scale"], launch, epilogue
        )
    return lambda: sagc_attention.attention_backward(
        i["qk"], i["topology"], i["y"], i["dz"], i["heads"], i["scale"], launch
    )


def tune(
    make_call: Callable[[Any, Any], Callable[[], object]],
    calls: dict[Any, int],
    start: Any,
    space: dict[str, tuple[int, ...]],
    time_ms: Callable[[Callable[[], object]], float],
    rounds: int = 2,
    label: str = "",
) -> tuple[Any, dict[str, float]]:
    """Coordinate descent over ``space`` from the launch ``start`` (a frozen dataclass); the cost is
    Σ calls × ms over the shapes, ``make_call(shape, launch)`` giving one call to time.

    Returns the best launch and every timed launch's cost (keyed by its repr), so the results show
    how flat or steep each parameter is.
    """
    costs: dict[Any, float] = {}

    def cost(launch: Any) -> float:
        if launch not in costs:
            try:
                costs[launch] = sum(count * time_ms(make_call(s, launch)) for s, count in calls.items())
            except Exception as exc:  # noqa: BLE001 - a launch that does not compile (registers, shared memory)
                print(
                    f"  {label} {launch}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})",
                    flush=True,
                )
                costs[launch] = float("inf")
        return costs[launch]

    best = start
    cost(best)
    for _ in range(rounds):
        for name, values in space.items():
            for value in values:
                candidate = dataclasses.replace(best, **{name: value})
                if cost(candidate) < cost(best):
                    best = candidate
    return best, {repr(k): round(v, 4) for k, v in sorted(costs.items(), key=lambda kv: kv[1])}


def check(best: dict[str, Launch], n: int, d: int, device: torch.device) -> dict[str, float | bool]:
    """The chosen launches against float64 (37 frames: a tail for every frame group)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    if "eval" in best:  # the kernel with its epilogue at the tuned launch
        return sagc_epilogue.check_kernels(
            device.type, dtype, frames=37, per_sample=37, d=d, c=n, n=n, launch=best["eval"]
        )
    return sagc_attention.check_kernels(
        device.type, dtype, frames=37, d=d, n=n, launches=(best["forward"], best["backward"])
    )


def run_header(args: argparse.Namespace) -> dict[str, Any]:
    """What a sweep's result starts with: the device, torch, and the shapes it was run at."""
    device = torch.device(args.device)
    return {
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else device.type,
        "torch": torch.__version__,
        "batch": args.batch,
        "frames": args.frames,
        "quick": args.quick,
    }


def save(args: argparse.Namespace, calls: Counter[Shape], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the results so far to ``args.out``; returns them."""
    result = {
        **run_header(args),
        "calls": [{"shape": list(s), "count": c} for s, c in sorted(calls.items())],
        "rows": rows,
        "forward_ms_per_forward": {
            "before": round(sum(r["ms_before"] for r in rows if r["kind"] == "forward"), 3),
            "tuned": round(sum(r["ms_tuned"] for r in rows if r["kind"] == "forward"), 3),
        },
        "backward_ms_per_backward": {
            "before": round(sum(r["ms_before"] for r in rows if r["kind"] == "backward"), 3),
            "tuned": round(sum(r["ms_tuned"] for r in rows if r["kind"] == "backward"), 3),
        },
        "eval_ms_per_forward": {
            "before": round(sum(r["ms_before"] for r in rows if r["kind"] == "eval"), 3),
            "tuned": round(sum(r["ms_tuned"] for r in rows if r["kind"] == "eval"), 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


def tune_shape_in_child(
    script: str, args: argparse.Namespace, shape: Any, count: int, extra: list[str] | None = None
) -> dict[str, Any]:
    """Run ``script --one-shape [shape, count]`` in a fresh process and return the row it prints
    (``ROW {json}``): a launch that faults the GPU (an illegal address kills the CUDA context for
    every later launch) or hangs loses that shape only. ``extra``: the child's own arguments."""
    command = [sys.executable, script, "--device", args.device, "--one-shape", json.dumps([shape, count])]
    command += (["--quick"] if args.quick else []) + (extra or [])
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.shape_timeout)
    except subprocess.TimeoutExpired:
        return {"shape": list(shape), "calls": count, "failed": f"no result in {args.shape_timeout} s"}
    print(proc.stdout, end="", flush=True)
    rows = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    if proc.returncode or not rows:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"shape": list(shape), "calls": count, "failed": f"exit {proc.returncode}: {tail}"}
    return json.loads(rows[-1])


def child_arguments(parser: argparse.ArgumentParser, shape_timeout: int = 150) -> None:
    """The arguments of a sweep that tunes one shape per child process on CUDA."""
    parser.add_argument("--one-shape", help=argparse.SUPPRESS)  # [shape, count]: tune it, print its row
    parser.add_argument(
        "--isolate", action="store_true", help="one child process per shape (the default on CUDA)"
    )
    parser.add_argument(
        "--shape-timeout", type=int, default=shape_timeout, help="seconds per shape's child process"
    )


def sweep_arguments(
    doc: str,
    batch: int,
    batch_help: str,
    result_name: str,
    eval_batch: int | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The command line the launch sweeps share: device, batch, clip length, ``--quick``, ``--out``;
    with ``eval_batch``, ``--eval`` too (then ``--batch`` defaults to ``eval_batch``); ``extra`` adds
    a sweep's own arguments."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if extra is not None:
        extra(parser)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=batch, help=batch_help)
    parser.add_argument("--frames", type=int, default=64, help="clip length (trainer's window)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny synthetic shapes, two values per parameter"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / result_name)
    if eval_batch is not None:
        parser.add_argument(
            "--eval", action="store_true", help=f"eval kernels (batch {eval_batch} unless given)"
        )
    args = parser.parse_args()
    if getattr(args, "eval", False) and "--batch" not in sys.argv:
        args.batch = eval_batch
    return args


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--from-tables",
            action="store_true",
            help="start each sweep at the launch the tables give now (its 'before' is then the table's)",
        )

    args = sweep_arguments(
        __doc__,
        128,
        "training batch (2 persons each)",
        "sagc_attention_tuning.json",
        eval_batch=256,
        extra=extra,
    )
    device = torch.device(args.device)
    if args.quick:
        calls: Counter[Shape] = Counter({(7, 25, 48, 40, 3): 2, (5, 25, 96, 64, 3): 1})
        space = QUICK_SPACE
    else:
        calls = model_calls(args.batch, args.frames, device)
        space = SPACE
    print(
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else device.type}; calls per forward:"
    )
    for shape, count in sorted(calls.items()):
        print(
            f"  G={shape[0]} V={shape[1]} qk={shape[2]} C'={shape[3]} heads={shape[4]}: x{count}", flush=True
        )

    time_ms = timer(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    inputs = {shape: make_inputs(shape, device, dtype) for shape in calls}
    by_width: dict[int, dict[Shape, int]] = {}
    for shape, count in calls.items():
        by_width.setdefault(shape[3], {})[shape] = count

    rows, tuned = [], {"forward": {}, "backward": {}, "eval": {}}
    for n, group in sorted(by_width.items()):
        best: dict[str, Launch] = {}
        starts = (
            (("eval", sagc_attention.eval_launch(n)),)  # from the launch it would run at now
            if args.eval
            else (
                ("forward", sagc_attention.forward_launch(n)),
                ("backward", sagc_attention.backward_launch(n)),
            )
            if args.from_tables
            else (("forward", sagc_attention.FORWARD_LAUNCH), ("backward", sagc_attention.BACKWARD_LAUNCH))
        )
        for kind, start in starts:
            t0 = time.perf_counter()
            best[kind], costs = tune(
                lambda shape, launch, kind=kind: kernel_call(kind, inputs[shape], launch),
                group,
                start,
                space,
                time_ms,
                label=kind,
            )
            before, after = costs[repr(start)], costs[repr(best[kind])]
            rows.append(
                {
                    "kind": kind,
                    "columns": n,
                    "calls": sum(group.values()),
                    "ms_before": before,
                    "ms_tuned": after,
                    "speedup": round(before / after, 2) if after else None,
                    "before": dataclasses.asdict(start),
                    "tuned": dataclasses.asdict(best[kind]),
                    "timed_launches": costs,
                    "search_s": round(time.perf_counter() - t0, 1),
                }
            )
            tuned[kind][n] = best[kind]
            print(
                f"C'={n} {kind}: {before:.3f} → {after:.3f} ms per step's calls with {best[kind]}", flush=True
            )
        d = max(shape[2] // (2 * shape[4]) for shape in group)
        rows[-1]["check"] = check(best, n, d, device)
        print(f"C'={n} check vs float64: {json.dumps(rows[-1]['check'])}", flush=True)
        save(args, calls, rows)  # after every width: a run cut short keeps what it measured

    result = save(args, calls, rows)
    print()
    for kind, table in (
        ("forward", "TUNED_FORWARD"),
        ("backward", "TUNED_BACKWARD"),
        ("eval", "TUNED_EVAL_FORWARD"),
    ):
        if tuned[kind]:
            print(f"{table} = {{" + ", ".join(f"{n}: {launch!r}" for n, launch in tuned[kind].items()) + "}")
    print("\n| kernel | C' | calls | ms before | ms tuned | speedup | tuned launch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        t = r["tuned"]
        launch = (
            f"frames {t['frames']}, block_n {t['block_n']}, warps {t['num_warps']}, stages {t['num_stages']}"
        )
        print(
            f"| {r['kind']} | {r['columns']} | {r['calls']} | {r['ms_before']:.3f} | {r['ms_tuned']:.3f} "
            f"| {r['speedup']} | {launch} |"
        )
    f, b, e = (
        result[k] for k in ("forward_ms_per_forward", "backward_ms_per_backward", "eval_ms_per_forward")
    )
    if args.eval:
        print(f"\nper eval forward (batch {args.batch}): {e['before']} → {e['tuned']} ms")
    else:
        print(f"\nper training step: forward {f['before']} → {f['tuned']} ms, ", end="")
        print(f"backward {b['before']} → {b['tuned']} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""SA-GC in training: the mixing inside the attention kernels against the two-step path, per block shape.

The two-step path (the default) runs, per SA-GC call of a training step, a cuBLAS GEMM for the 3×-wide
``y = x W_hᵀ``, the fused attention kernel forward, its backward (writing ``dy``) and two cuBLAS
GEMMs for ``dx`` and ``dW``. The candidate (:mod:`trainer.models.sagc_mixed_training`, InfoGCN
``fused_mixing_train``) runs the inference kernel forward and one backward kernel plus the ``dW``
GEMM. Per distinct block shape at a training batch this bench times

- the two-step path's five calls at their tuned launches,
- the candidate at its default launches, then with the backward's launch found by coordinate
  descent over frames packed per tile, packs per program, column chunk, warps and stages (and with
  ``--tune-forward`` the forward kernel's launch too, over the eval sweep's space),

checks the chosen launches against float64 on the device (on CUDA each shape in a child process,
``--shape-timeout`` seconds each: a launch that faults the GPU loses its shape only), and prints the
summed times per training step (each shape × its blocks): the prediction for
``model.options={fused_mixing_train: true}`` before a whole-model run, and the launch tables
``TUNED_BACKWARD`` (and ``TUNED_FORWARD``), which ``--write-tables`` writes into the module::

    python bench/sagc_mixed_training_tuning.py --device cuda --write-tables   # ~2-4 min, H100/H200
    TRITON_INTERPRET=1 python bench/sagc_mixed_training_tuning.py --device cpu --quick  # script check

Writes ``bench/results/sagc_mixed_training_tuning.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from block_throughput import NUM_JOINTS, PERSONS, block_shapes  # noqa: E402
from sagc_attention_tuning import (  # noqa: E402
    child_arguments,
    run_header,
    sweep_arguments,
    timer,
    tune,
    tune_shape_in_child,
)
from sagc_inference_tuning import QUICK_SPACE as QUICK_FORWARD_SPACE  # noqa: E402
from sagc_inference_tuning import SPACE as FORWARD_SPACE  # noqa: E402

from trainer.models import sagc_attention  # noqa: E402
from trainer.models.sagc_inference import MixedLaunch, mixed_forward  # noqa: E402
from trainer.models.sagc_mixed_training import (  # noqa: E402
    MixedBackwardLaunch,
    backward_launch,
    check_kernels,
    forward_launch,
    mixed_backward,
)

HEADS = 3
Shape = tuple[int, int, int]  # frames G, input channels C, output columns C'
SPACE = {
    # packs > 1 left out: the backward's pack 2 faulted the GPU at every shape with C >= 128 (H100,
    # 2026-12-07; the forward's pack 4 at 256 -> 256 in 2026-12-06); a fault loses the rest of its
    # shape's child process (the other shapes run in their own)
    "pack": (1,),
    "groups": (1, 4, 16),
    "block_c": (32, 64, 128),
    "block_n": (16, 32, 64, 128),
    "num_warps": (2, 4, 8),
    "num_stages": (1, 2, 3),
}
QUICK_SPACE = {"pack": (1, 2), "groups": (1, 2), "block_n": (16, 32), "num_warps": (4,), "num_stages": (1,)}


def step_shapes(batch: int, frames: int) -> dict[Shape, int]:
    """Each distinct SA-GC call of a training step and how many blocks make it."""
    return {
        (batch * PERSONS * s.frames, s.in_channels, s.out_channels): s.count for s in block_shapes(frames)
    }


def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Random operands of one call, laid out as the layer passes them."""
    g, c, n = shape
    d = max(c // 8, 1)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*size: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*size, generator=gen) * scale).to(device, dtype)

    x = rnd(g, NUM_JOINTS, c)
    weight = rnd(n, HEADS, c, scale=c**-0.5).transpose(0, 1)  # [H, C', C], a view as in the layer
    return {
        "qk": rnd(g, NUM_JOINTS, 2 * HEADS * d),
        "topology": torch.randn(HEADS, NUM_JOINTS, NUM_JOINTS, generator=gen).to(device),
        "x": x,
        "weight": weight,
        "flat_weight": weight.reshape(HEADS * n, c),
        "dz": rnd(g, NUM_JOINTS, n),
        "scale": d**-0.5,
    }


def two_step(i: dict[str, Any]) -> Any:
    """The default path's calls of one training step for one SA-GC: GEMM, attention forward and
    backward (tuned launches), then the two GEMMs of the mixing's backward."""
    g, v, c = i["x"].shape
    n = i["dz"].shape[2]
    forward, backward = sagc_attention.forward_launch(n), sagc_attention.backward_launch(n)

    def run() -> None:
        y = F.linear(i["x"], i["flat_weight"]).view(g, v * HEADS, n)  # rows (joint, head), as the layer
        sagc_attention.attention_forward(i["qk"], i["topology"], y, HEADS, i["scale"], forward)
        _, _, dy = sagc_attention.attention_backward(
            i["qk"], i["topology"], y, i["dz"], HEADS, i["scale"], backward
        )
        dy = dy.view(g * v, HEADS * n)
        torch.mm(dy, i["flat_weight"])  # dx
        torch.mm(dy.t(), i["x"].reshape(g * v, c))  # dW

    return run


def candidate(i: dict[str, Any], forward: MixedLaunch, backward: MixedBackwardLaunch) -> Any:
    """The fused path's calls: the forward kernel, then the backward kernel and its ``dW`` GEMM."""

    def run() -> None:
        mixed_forward(i["qk"], i["topology"], i["x"], i["weight"], HEADS, i["scale"], forward)
        mixed_backward(i["qk"], i["topology"], i["x"], i["weight"], i["dz"], HEADS, i["scale"], backward)

    return run


def tune_one(
    time_ms: Callable[[Callable[[], object]], float],
    start: Any,
    space: dict[str, tuple[int, ...]],
    call: Callable[[Any], Callable[[], object]],
    label: str,
    rounds: int = 2,
) -> tuple[Any, dict[str, float]]:
    """:func:`sagc_attention_tuning.tune` for one call shape: ``call(launch)`` gives the call to time."""
    return tune(lambda _, launch: call(launch), {None: 1}, start, space, time_ms, rounds, label)


MODULE_PATH = Path(__file__).resolve().parent.parent / "trainer" / "models" / "sagc_mixed_training.py"


def table_literal(rows: list[dict[str, Any]], key: str, launch_class: str) -> str:
    """The Python literal of one launch table: ``{(C, C'): Launch(field=value, ...), ...}``."""
    entries = (
        f"({r['shape'][1]}, {r['shape'][2]}): {launch_class}("
        + ", ".join(f"{k}={v}" for k, v in r[key].items())
        + ")"
        for r in rows
    )
    return "{" + ", ".join(entries) + "}"


def write_tables(module: Path, tables: dict[str, str]) -> None:
    """Replace each ``NAME: dict[...] = {...}`` assignment in ``module`` by ``tables[NAME]``."""
    source = module.read_text()
    for name, literal in tables.items():
        pattern = re.compile(rf"^({name}: dict\[.*?\] = )\{{[^{{}}]*\}}", re.MULTILINE)
        source, count = pattern.subn(lambda m, lit=literal: m.group(1) + lit, source)
        if count != 1:
            raise SystemExit(f"found {count} assignments of {name} in {module}; expected one")
    module.write_text(source)


def tune_shape(shape: Shape, count: int, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """One block shape: both paths timed, the backward's launch (and with ``--tune-forward`` the
    forward's) tuned, the pick checked against float64."""
    g, c, n = shape
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    time_ms = timer(device)
    inputs = make_inputs(shape, device, dtype)
    forward, backward = forward_launch(c, n), backward_launch(c, n)
    row: dict[str, Any] = {"shape": list(shape), "count": count}
    row["two_step_ms"] = round(time_ms(two_step(inputs)), 4)
    row["candidate_default_ms"] = round(time_ms(candidate(inputs, forward, backward)), 4)
    best_backward, costs = tune_one(
        time_ms,
        backward,
        QUICK_SPACE if args.quick else SPACE,
        lambda launch: candidate(inputs, forward, launch),
        f"backward {shape}",
        args.rounds,
    )
    row["backward_launch"] = vars(best_backward)
    row["backward_costs"] = dict(list(costs.items())[:8])
    if args.tune_forward:
        forward, _ = tune_one(
            time_ms,
            forward,
            QUICK_FORWARD_SPACE if args.quick else FORWARD_SPACE,
            lambda launch: candidate(inputs, launch, best_backward),
            f"forward {shape}",
            args.rounds,
        )
    row["forward_launch"] = vars(forward)
    row["candidate_tuned_ms"] = round(time_ms(candidate(inputs, forward, best_backward)), 4)
    small = {"frames": 7 if not args.quick else 5, "d": max(c // 8, 1), "c": c, "n": n}
    row["check"] = check_kernels(device.type, dtype, **small, launches=(forward, best_backward))
    return row


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--tune-forward", action="store_true", help="tune the forward kernel's launch too"
        )
        parser.add_argument(
            "--write-tables",
            action="store_true",
            help="write the found launches into trainer/models/sagc_mixed_training.py",
        )
        parser.add_argument("--rounds", type=int, default=2, help="coordinate-descent passes over the space")
        child_arguments(parser, shape_timeout=240)  # two rounds compile ~30 launches of ~3 s each

    args = sweep_arguments(
        __doc__, 128, "training batch (samples)", "sagc_mixed_training_tuning.json", extra=extra
    )
    device = torch.device(args.device)
    if args.one_shape:
        shape, count = json.loads(args.one_shape)
        print("ROW " + json.dumps(tune_shape(tuple(shape), count, device, args)), flush=True)
        return
    shapes = {(6, 24, 40): 1, (5, 48, 80): 2} if args.quick else step_shapes(args.batch, args.frames)
    isolate = args.isolate or (device.type == "cuda" and not args.quick)
    child_extra = ["--rounds", str(args.rounds)] + (["--tune-forward"] if args.tune_forward else [])
    rows, failed = [], []
    for shape, count in shapes.items():
        row = (
            tune_shape_in_child(__file__, args, shape, count, child_extra)
            if isolate
            else tune_shape(shape, count, device, args)
        )
        (failed if "failed" in row else rows).append(row)
        if not isolate:  # a child prints its own row
            print(json.dumps(row), flush=True)
    per_step = {
        key: round(sum(r[key] * r["count"] for r in rows), 3)
        for key in ("two_step_ms", "candidate_default_ms", "candidate_tuned_ms")
    }
    result = {**run_header(args), "rows": rows, "failed": failed, "ms_per_training_step": per_step}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['gpu']}, batch {args.batch}: SA-GC mixing + attention, forward + backward, ms per call")
    print("| G, C -> C' | blocks | two-step | fused, default launch | fused, tuned | check (max rel) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        worst = max(v for k, v in r["check"].items() if isinstance(v, float))
        cells = [r["two_step_ms"], r["candidate_default_ms"], r["candidate_tuned_ms"], f"{worst:.1e}"]
        label = f"{r['shape'][0]}, {r['shape'][1]} -> {r['shape'][2]}"
        print(f"| {label} | {r['count']} | " + " | ".join(str(x) for x in cells) + " |")
    blocks = sum(r["count"] for r in rows)
    totals = [per_step[k] for k in ("two_step_ms", "candidate_default_ms", "candidate_tuned_ms")]
    print(f"| per training step | {blocks} | " + " | ".join(str(x) for x in totals) + " | |")
    for r in failed:
        print(f"FAILED {r['shape']}: {r['failed']}")
    tables = {"TUNED_BACKWARD": table_literal(rows, "backward_launch", "MixedBackwardLaunch")}
    if args.tune_forward:
        tables["TUNED_FORWARD"] = table_literal(rows, "forward_launch", "MixedLaunch")
    for name, literal in tables.items():
        print(f"{name} = {literal}")
    if args.write_tables:
        write_tables(MODULE_PATH, tables)
        print(f"wrote {', '.join(tables)} into {MODULE_PATH}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

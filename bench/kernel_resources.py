"""Registers, spills and shared memory of our Triton kernels on Hopper, compiled on a machine without a GPU.

Triton compiles a kernel for any target it has a backend for, and its wheel carries ``ptxas`` and
``cuobjdump``: so each launch the training step makes can be built for ``sm_90`` (H100/H200) here, and
its resource use read from the cubin, before any device time is spent. A kernel that spills (a
per-thread stack: registers stored to and reloaded from local memory) or that needs more shared
memory than a block may have is slow or fails on the GPU whatever its launch; compile time matters
too, since a sweep compiles every launch it times.

How: the wrapper functions run on CPU tensors of the real shapes with every ``JITFunction`` launch
intercepted (:func:`recorded_launches`), so the arguments, constexprs and launch options are exactly
the ones the wrapper would pass on the GPU; each recorded launch is then compiled for the target
(:func:`compile_for`) and read (:func:`resource_usage`)::

    python bench/kernel_resources.py           # SA-GC's kernels of both training paths, each block shape,
                                               # and the TCN's dilated-branches op (temporal_conv.py)
    python bench/kernel_resources.py --sweep   # ... and the fused backward at every launch of its space

Writes ``bench/results/kernel_resources.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402
import triton.backends.nvidia  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)
CUOBJDUMP = Path(triton.backends.nvidia.__file__).parent / "bin" / "cuobjdump"


@dataclasses.dataclass
class RecordedLaunch:
    """One intercepted kernel launch: the kernel and the arguments it was called with."""

    kernel: JITFunction
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[RecordedLaunch]]:
    """Within the block, every ``kernel[grid](...)`` is recorded instead of run (outputs stay unset)."""
    launches: list[RecordedLaunch] = []
    original = JITFunction.run

    def record(self: JITFunction, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
        launches.append(RecordedLaunch(self, args, kwargs))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


def compile_for(launch: RecordedLaunch, target: GPUTarget = HOPPER) -> Any:
    """Compile one recorded launch for ``target`` as Triton's runtime would on that device (the same
    argument specialisation: dtypes, 16-byte alignment, integers equal to one)."""
    fn = launch.kernel
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, launch.kwargs, bound, specialization, options
    )
    source = ASTSource(fn, signature, constexprs, attrs)
    return triton.compile(source, target=target, options=options.__dict__)


def resource_usage(compiled: Any) -> dict[str, int]:
    """Registers per thread, spill stack bytes per thread and shared memory bytes of a compiled kernel."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        report = subprocess.run(
            [str(CUOBJDUMP), "-res-usage", cubin.name], capture_output=True, text=True, check=True
        ).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", report)
    if found is None:
        raise RuntimeError(f"no resource line in cuobjdump's report: {report[-300:]}")
    return {
        "registers": int(found[1]),
        "stack_bytes": int(found[2]),
        "shared_bytes": int(compiled.metadata.shared),
    }


def measure(call: Callable[[], object], target: GPUTarget = HOPPER) -> list[dict[str, Any]]:
    """Run ``call`` with launches recorded; compile each launch for ``target`` and report its use."""
    with recorded_launches() as launches:
        call()
    rows = []
    for launch in launches:
        start = time.perf_counter()
        try:
            usage: dict[str, Any] = resource_usage(compile_for(launch, target))
        except Exception as exc:  # noqa: BLE001 - a launch that does not compile is a result here
            usage = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
        usage["compile_s"] = round(time.perf_counter() - start, 1)
        rows.append({"kernel": launch.kernel.__name__, **usage})
    return rows


def shape_calls(c: int, n: int, sweep: bool) -> list[tuple[str, Any, Callable[[], object]]]:
    """(path, launch, call) of each SA-GC kernel launch one block of shape ``c → n`` makes in training:
    the default path's attention forward and backward (``two-step``), the fused path's forward and
    backward (``fused mixing``); with ``sweep`` the fused backward at every launch of its tuning
    space too (one parameter moved at a time from the chosen one, as the sweep moves)."""
    from sagc_mixed_training_tuning import HEADS, NUM_JOINTS, SPACE, make_inputs

    from trainer.models import sagc_attention
    from trainer.models.sagc_inference import mixed_forward
    from trainer.models.sagc_mixed_training import backward_launch, forward_launch, mixed_backward

    i = make_inputs((4, c, n), torch.device("cpu"), torch.bfloat16)
    qk, topo, x, w, dz, s = i["qk"], i["topology"], i["x"], i["weight"], i["dz"], i["scale"]
    y = torch.empty(4, NUM_JOINTS * HEADS, n, dtype=torch.bfloat16)
    attention = sagc_attention
    forward, backward = attention.forward_launch(n), attention.backward_launch(n)
    mixed = forward_launch(c, n)
    chosen = backward_launch(c, n)
    backward_launches = [chosen]
    if sweep:
        backward_launches += [
            dataclasses.replace(chosen, **{name: value})
            for name, values in SPACE.items()
            for value in values
            if value != getattr(chosen, name)
        ]
    return [
        ("two-step", forward, partial(attention.attention_forward, qk, topo, y, HEADS, s, forward)),
        ("two-step", backward, partial(attention.attention_backward, qk, topo, y, dz, HEADS, s, backward)),
        ("fused mixing", mixed, partial(mixed_forward, qk, topo, x, w, HEADS, s, mixed)),
    ] + [
        ("fused mixing", launch, partial(mixed_backward, qk, topo, x, w, dz, HEADS, s, launch))
        for launch in backward_launches
    ]  # fmt: skip


def block_rows(shapes: dict[tuple[int, int, int], int], sweep: bool) -> list[dict[str, Any]]:
    """:func:`shape_calls` of each block shape, compiled for Hopper and read."""
    rows = []
    for (_, c, n), count in shapes.items():
        for index, (path, launch, call) in enumerate(shape_calls(c, n, sweep)):
            for row in measure(call):
                row.update(path=path, c=c, n=n, blocks=count, launch=vars(launch), chosen=index < 4)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def temporal_conv_rows(batch: int, frames: int) -> list[dict[str, Any]]:
    """The Triton dilated-branches op's three launches (forward, input gradient, weight gradient) at
    each TCN shape of InfoGCN's training step (``C/4`` channels per branch, dilations 1 and 2)."""
    from trainer.models import temporal_conv as tc

    shapes = {(64, 1, frames): 3, (128, 2, frames): 1, (128, 1, frames // 2): 2, (256, 2, frames // 2): 1}
    shapes[(256, 1, frames // 4)] = 2
    rows = []
    for (c, stride, t), count in shapes.items():
        bc, seqs, t_out = c // 4, 2 * batch, (t + stride - 1) // stride
        wide = torch.empty(seqs, 3 * bc, t, 25, dtype=torch.bfloat16).contiguous(
            memory_format=torch.channels_last
        )
        x = wide[:, : 2 * bc]
        dy = torch.empty(seqs, 2 * bc, t_out, 25, dtype=torch.bfloat16).contiguous(
            memory_format=torch.channels_last
        )
        w = torch.empty(2, tc.TAPS, bc, bc, dtype=torch.bfloat16)
        bias = torch.empty(2 * bc, dtype=torch.bfloat16)
        calls = [
            partial(tc._shifted_gemm, x, w, bias, [1, 2], t_out, stride, False),
            partial(tc._shifted_gemm, dy, w, None, [1, 2], t, stride, True),
            partial(tc._weight_grad, x, dy, 2, [1, 2], stride),
        ]
        for call, direction in zip(calls, ("forward", "input gradient", "weight gradient"), strict=True):
            for row in measure(call):
                row.update(path=f"temporal conv, {direction}", c=c, n=f"{bc}/s{stride}", blocks=count)
                row.update(launch=dict(tc.LAUNCH), chosen=True)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="every launch of the sweep's space")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="the smallest block shape only")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "kernel_resources.json"
    )
    args = parser.parse_args()
    from sagc_mixed_training_tuning import step_shapes

    shapes = step_shapes(args.batch, args.frames)
    if args.quick:
        shapes = dict(list(shapes.items())[:1])
    with tempfile.TemporaryDirectory(prefix="kernel_resources_") as cache:
        # a fresh cache, so that each compile time is a compile's (Triton's cache would answer repeats)
        triton.knobs.cache.dir = cache
        rows = block_rows(shapes, args.sweep) + temporal_conv_rows(args.batch, args.frames)
    result = {"target": f"sm_{HOPPER.arch}", "triton": triton.__version__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nsm_{HOPPER.arch}, Triton {triton.__version__}: SA-GC kernels of a training step per block shape"
    )
    print("| C -> C' | path | kernel | launch | registers | spill stack B | shared KiB | compile s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        launch = ", ".join(f"{k} {v}" for k, v in r["launch"].items())
        head = f"| {r['c']} -> {r['n']} | {r['path']} | {r['kernel'].strip('_')} | {launch}"
        if "failed" in r:
            print(f"{head} | failed: {r['failed']} | | | {r['compile_s']} |")
            continue
        shared = r["shared_bytes"] / 1024
        cells = f"{r['registers']} | {r['stack_bytes']} | {shared:.0f} | {r['compile_s']}"
        print(f"{head}{'' if r['chosen'] else ' (swept)'} | {cells} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

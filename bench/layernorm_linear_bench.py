"""SA-GC's query/key path per block shape: the fused LayerNorm → Linear op against the two ops.

For each input width of InfoGCN's SA-GC layers at a training batch (rows = N·M·T·V), times forward and
forward + backward of (a) :func:`trainer.models.layernorm_linear.layernorm_linear` (one Triton kernel
per direction), (b) ``F.layer_norm`` + ``F.linear`` eagerly and (c) the same two ops through
``torch.compile`` (Inductor's LayerNorm kernels + cuBLAS), in bf16 as GPU time (``--iters`` calls
replayed in a CUDA graph, ``batchnorm_bandwidth.time_call``). The JSON also holds the bytes each
shape moves at least (``x`` read and the projection written; the backward reads both again and
writes ``dx``), to set against the times. No model compile, so it fits
in a short GPU call::

    python bench/layernorm_linear_bench.py                 # batch 128 shapes on the GPU
    python bench/layernorm_linear_bench.py --quick         # tiny shapes, checks the script (CPU)

Writes ``bench/results/layernorm_linear_bench.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batchnorm_bandwidth import time_call  # noqa: E402

from trainer.models.layernorm_linear import kernels_apply, layernorm_linear  # noqa: E402

# (C, frames) of the SA-GC inputs: blocks 1-5 at 64 channels and 64 frames, 6-8 at 128 and 32,
# 9-10 at 256 and 16 (InfoGCN's strides); N·M = 2·batch sequences of 25 joints.
SHAPES = ((64, 64), (128, 32), (256, 16))


def two_ops(
    x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, w: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """The unfused path in the rows' dtype (what SA-GC runs with ``fused_norm`` off)."""
    return F.linear(F.layer_norm(x, x.shape[-1:], g, b, 1e-5), w, bias)


def fused(
    x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, w: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """The fused op."""
    return layernorm_linear(x, g, b, w, bias, 1e-5)


def bench_shape(c: int, rows: int, device: torch.device, dtype: torch.dtype, iters: int) -> dict[str, object]:
    """Forward and forward + backward times of the three paths at one shape."""
    n = 3 * c // 4
    x = torch.randn(rows, c, device=device, dtype=dtype, requires_grad=True)
    params = [
        torch.ones(c, device=device, dtype=dtype, requires_grad=True),
        torch.zeros(c, device=device, dtype=dtype, requires_grad=True),
        (torch.randn(n, c, device=device, dtype=dtype) / c**0.5).requires_grad_(),
        torch.zeros(n, device=device, dtype=dtype, requires_grad=True),
    ]
    grad = torch.randn(rows, n, device=device, dtype=dtype)
    paths = {"fused": fused, "two_ops": two_ops, "two_ops_compiled": torch.compile(two_ops)}
    row: dict[str, object] = {"c": c, "n": n, "rows": rows, "fused_kernels": kernels_apply(x, params[2])}
    for name, fn in paths.items():
        with torch.no_grad():
            row[f"{name}_forward_ms"] = round(1e3 * time_call(lambda fn=fn: fn(x, *params), device, iters), 4)

        def step(fn: Callable = fn) -> None:
            fn(x, *params).backward(grad)

        row[f"{name}_train_ms"] = round(1e3 * time_call(step, device, iters), 4)
    size = torch.finfo(dtype).bits // 8
    forward_bytes = rows * (c + n) * size  # x read, projection written
    row["forward_min_mb"] = round(forward_bytes / 1e6, 1)
    row["train_min_mb"] = round((forward_bytes + rows * (2 * c + n) * size) / 1e6, 1)  # + dout, x; dx
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=20, help="calls per timed CUDA graph")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (checks the script on the CPU)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "layernorm_linear_bench.json"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    rows_out = []
    for c, frames in SHAPES:
        rows = (2 * args.batch * frames * 25) if not args.quick else 200
        row = bench_shape(
            c if not args.quick else c // 4, rows, device, dtype, 3 if args.quick else args.iters
        )
        rows_out.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "gpu": gpu,
        "torch": torch.__version__,
        "batch": args.batch,
        "dtype": "bfloat16",
        "shapes": rows_out,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{gpu}, bf16, batch {args.batch}: ms per call (forward / forward + backward)")
    print("| C | rows | fused | two ops | two ops compiled |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows_out:
        cells = [
            f"{r[f'{p}_forward_ms']} / {r[f'{p}_train_ms']}" for p in ("fused", "two_ops", "two_ops_compiled")
        ]
        print(f"| {r['c']} | {r['rows']:,} | " + " | ".join(cells) + " |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

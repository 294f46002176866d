"""Multi-GPU scaling of the trainer's DDP step: CrossGLG training samples/s on 1 and on N GPUs.

Each configuration runs under ``torchrun`` through the trainer's own pieces — ``setup_distributed``,
``DistributedDataParallel``, the compiled step of :mod:`trainer.engine.step` (``auto`` = Inductor + CUDA
graphs; ``--compile default`` for plain Inductor), fused SGD — and the same batch schedule
as :mod:`trainer.engine.loop` (rank ``r`` takes batches ``r, r + N, …`` of one epoch order), on the
synthetic NTU-120-shaped store of ``bench/train_throughput.py``. Per-GPU batch fixed (weak
scaling, the way DDP is used)::

    python bench/ddp_throughput.py --gpus 1 2 --batch 128      # on a 2-GPU machine

Prints a table last and writes ``bench/results/ddp_throughput.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import train_throughput as tt  # noqa: E402

from trainer.data.feeder import GPUFeeder  # noqa: E402
from trainer.engine.distributed import barrier, setup_distributed, teardown_distributed  # noqa: E402
from trainer.engine.step import (  # noqa: E402
    autocast_for,
    make_forward_loss,
    make_sgd,
    resolve_compile_mode,
    train_step,
)


def worker(args: argparse.Namespace) -> None:
    """One rank: warm up (compile), then time ``args.steps`` DDP steps; rank 0 writes the result."""
    ctx = setup_distributed("cuda" if torch.cuda.is_available() else "cpu")
    device = ctx.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    store = tt.synthetic_store(args.samples, args.classes)
    kb = tt.Knowledge(args.classes, device)
    model = tt.build("crossglg", args.classes, device)
    mode = resolve_compile_mode(args.compile)
    net: torch.nn.Module = model
    if ctx.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    forward_loss = make_forward_loss(net, device, mode, ctx.distributed)
    opt = make_sgd(model.parameters(), 0.01, 0.9, True, 5e-4, device)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    autocast = autocast_for(device, "bf16")
    feeder = GPUFeeder(store, np.arange(len(store)), device=device, train=True)
    model.train()

    def my_batches():  # noqa: ANN202 - the loop's schedule: every world-th batch of one epoch order
        epoch = 0
        while True:
            for i, batch in enumerate(feeder.epoch_batches(args.batch, epoch)):
                if i % ctx.world_size == ctx.rank:
                    yield batch
            epoch += 1

    stream = my_batches()

    def run(steps: int) -> torch.Tensor:
        loss = torch.zeros((), device=device)
        for _ in range(steps):
            x, y, _ = next(stream)
            loss, _, _ = train_step(forward_loss, opt, scaler, autocast, x, kb.text[y], y, kb.k_gt[y])
        return loss

    t0 = time.perf_counter()
    run(args.warmup)
    tt.sync(device)
    barrier(ctx)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss = run(args.steps)
    tt.sync(device)
    barrier(ctx)
    dt = time.perf_counter() - t0
    if ctx.is_main:
        result = {
            "gpus": ctx.world_size,
            "batch_per_gpu": args.batch,
            "compile_mode": mode,
            "samples_per_s": round(ctx.world_size * args.batch * args.steps / dt, 1),
            "warmup_s": round(warm, 1),
            "final_loss": round(float(loss.detach()), 4),
        }
        Path(args.result).write_text(json.dumps(result))
    teardown_distributed()


def launch(args: argparse.Namespace, gpus: int) -> dict:
    """Run the worker on ``gpus`` processes with torchrun; its rank-0 result."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            str(Path(__file__).resolve()), "--worker", "--result", str(result),
            "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--samples", str(args.samples), "--classes", str(args.classes), "--compile", args.compile,
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS="4")
        subprocess.run(cmd, check=True, env=env)
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=128, help="batch per GPU")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=12)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--compile", default="auto")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--merge", type=Path, help="earlier ddp_throughput.json: keep its runs, add these")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    runs = json.loads(args.merge.read_text())["runs"] if args.merge else []
    for n in args.gpus:
        r = launch(args, n)
        print(f"{n} GPU(s): {r}", flush=True)
        runs.append(r)
    base = runs[0]["samples_per_s"] / runs[0]["gpus"]
    lines = [
        f"GPU: {gpu}; torch {torch.__version__}; CrossGLG (InfoGCN) training, batch {args.batch} per GPU",
        "",
        "| GPUs | compile | samples/s | × one GPU |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['gpus']} | {r['compile_mode']} | {r['samples_per_s']:,.0f} | {r['samples_per_s'] / base:.2f} |"
        for r in runs
    ]
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ddp_throughput.json").write_text(
        json.dumps({"gpu": gpu, "runs": runs, "table": table}, indent=2)
    )
    print()
    print(table)


if __name__ == "__main__":
    main()

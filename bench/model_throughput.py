"""Training and inference throughput of the encoders and their CrossGLG variants (samples/s).

A training step = forward (both branches where enabled) + ``crossglg_loss`` + backward + SGD step,
on random NTU-shaped input ``[B, 3, T, 25, 2]`` with random joint texts and key joints; inference =
``extract_features`` in eval mode. bf16 autocast on CUDA; ``--compile`` adds ``torch.compile``.
Runs with torch, numpy and PyYAML from the checkout (the GPU machines)::

    python bench/model_throughput.py                          # CPU, tiny batch
    python bench/model_throughput.py --device cuda --batch 64 --compile

Prints a table and writes ``bench/results/model_throughput_<device>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataspec import load_spec  # noqa: E402
from trainer.models.crossglg import CrossGLG  # noqa: E402
from trainer.models.losses import crossglg_loss  # noqa: E402

VARIANTS = {"plain": (False, False), "g2l": (True, False), "l2g": (False, True), "both": (True, True)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(encoder: str, variant: str, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """Time ``args.steps`` training steps and inference batches after ``args.warmup`` untimed ones."""
    spec = load_spec("ntu120")
    g2l, l2g = VARIANTS[variant]
    torch.manual_seed(0)
    model = CrossGLG(encoder, args.classes, spec, g2l=g2l, l2g=l2g).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    b, v = args.batch, spec.num_joints
    x = torch.randn(b, 3, args.frames, v, spec.persons, device=device)
    text = torch.randn(b, v, 384, device=device, dtype=torch.float16)
    y = torch.randint(0, args.classes, (b,), device=device)
    k_gt = torch.softmax(torch.randn(b, v, device=device), -1)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    forward = torch.compile(model) if args.compile else model
    extract = torch.compile(model.extract_features) if args.compile else model.extract_features

    def train_step() -> None:
        with autocast:
            out = forward(x, text)
            loss, _ = crossglg_loss(out, y, k_gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step() -> None:
        with autocast:
            extract(x)

    result: dict[str, object] = {
        "encoder": encoder,
        "variant": variant,
        "training_parameters": model.training_parameters(),
        "inference_parameters": model.inference_parameters(),
    }
    for name, step, mode in (("train", train_step, model.train), ("infer", infer_step, model.eval)):
        mode()
        for _ in range(args.warmup):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        result[f"{name}_samples_per_s"] = round(b * args.steps / (time.perf_counter() - start), 1)
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 4 on CPU")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CUDA, 2 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (10 CUDA, 1 CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--encoders", nargs="+", default=["infogcn", "stgcn"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (64 if cuda else 4)
    args.steps = args.steps or (30 if cuda else 2)
    args.warmup = args.warmup or (10 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
    rows = [measure(e, v, args, device) for e in args.encoders for v in args.variants]
    print(f"{'encoder':8} {'variant':7} {'train/s':>9} {'infer/s':>9} {'train par':>13} {'infer par':>13}")
    for r in rows:
        print(
            f"{r['encoder']:8} {r['variant']:7} {r['train_samples_per_s']:>9} {r['infer_samples_per_s']:>9}"
            f" {r['training_parameters']:>13,} {r['inference_parameters']:>13,}"
        )
    meta = {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "batch": args.batch,
        "frames": args.frames,
        "compile": args.compile,
        "precision": "bf16 autocast" if cuda else "fp32",
    }
    print(json.dumps(meta))
    out = Path(__file__).resolve().parent / "results" / f"model_throughput_{device.type}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""End-to-end training and evaluation throughput of InfoGCN (+ CrossGLG), with a numerics check.

Measures the trainer's own path (:mod:`trainer.engine.step`): on-GPU feeder (crop, resample,
rotation) → forward + ``crossglg_loss`` (bf16 autocast, ``torch.compile``) → backward → fused SGD,
on a synthetic store with NTU-120's shapes (25 joints, 2 persons, 40–300 frames, 100 classes).
Also: the hardware ceilings (bf16 matmul, device copy), the FLOPs per sample, the numerics check
(fast path vs fp32 eager: losses and gradients, and a short training run's accuracy), the eval
(feature extraction) rate, the NTU-120 epoch and 110-epoch times, and MFU. Needs torch, numpy and
PyYAML only (runs on the GPU machines from the checkout)::

    python bench/train_throughput.py --device cuda                 # the full run (~8 min on an H200)
    python bench/train_throughput.py --device cpu --quick          # tiny sizes, checks the script

Prints a table last; writes ``bench/results/train_throughput.json`` and ``.md`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataspec import load_spec  # noqa: E402
from trainer.data.feeder import GPUFeeder  # noqa: E402
from trainer.data.store import PreparedStore  # noqa: E402
from trainer.engine.step import (  # noqa: E402
    autocast_for,
    make_feature_extractor,
    make_forward_loss,
    make_sgd,
    train_step,
)
from trainer.models import (  # noqa: E402
    frame_matmul,
    layernorm_linear,
    sagc_attention,
    sagc_epilogue,
    sagc_inference,
)
from trainer.models.batchnorm_kernels import use_kernel_batchnorm  # noqa: E402
from trainer.models.crossglg import CrossGLG  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inductor_bandwidth import format_large, format_summary, in_graph_rows, kernel_bytes, summarise  # noqa: E402

NTU120_TRAIN_SAMPLES = 95_001  # one-shot NTU-120 training split (issue 8)
EPOCHS = 110
VARIANTS = {"baseline": (False, False), "crossglg": (True, True)}
TEXT_DIM = 384


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ceilings(device: torch.device) -> dict[str, float]:
    """Measured bf16 matmul TFLOP/s (8192³, random data) and device copy TB/s (read + write)."""
    if device.type != "cuda":
        return {}
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    src = torch.randn(2**30 // 2, device=device, dtype=torch.bfloat16)  # 1 GiB
    dst = torch.empty_like(src)

    def timed(fn: Callable[[], object], reps: int) -> float:
        for _ in range(3):
            fn()
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        return (time.perf_counter() - t) / reps

    mm = timed(lambda: a @ b, 20)
    cp = timed(lambda: dst.copy_(src), 20)
    return {
        "matmul_bf16_tflops": round(2 * n**3 / mm / 1e12, 1),
        "copy_tb_s": round(2 * src.nbytes / cp / 1e12, 2),
    }


def synthetic_store(num_samples: int, num_classes: int, seed: int = 0) -> PreparedStore:
    """Learnable NTU-shaped samples: each class a smooth random trajectory, plus noise and a random length."""
    spec = load_spec("ntu120")
    rng = np.random.default_rng(seed)
    v = spec.num_joints
    base_t = np.linspace(0, 1, 300)[:, None, None, None]
    # Class templates: per joint/coordinate a low-frequency sinusoid with a class-specific frequency/phase.
    freq = rng.uniform(0.5, 3.0, (num_classes, 1, 2, v, 3))
    phase = rng.uniform(0, 2 * np.pi, (num_classes, 1, 2, v, 3))
    amp = rng.uniform(0.05, 0.3, (num_classes, 1, 2, v, 3))
    labels = rng.integers(0, num_classes, num_samples)
    lengths = rng.integers(40, 301, num_samples)
    samples = []
    for y, n in zip(labels, lengths, strict=True):
        clip = amp[y] * np.sin(2 * np.pi * freq[y] * base_t[:n] + phase[y])
        samples.append((clip + rng.normal(0, 0.02, clip.shape)).astype(np.float32))
    return PreparedStore.from_arrays(spec, samples, labels)


def build(
    variant: str, num_classes: int, device: torch.device, seed: int = 0, fused: bool | None = None
) -> CrossGLG:
    """The benchmarked model; ``fused``: SA-GC's attention path as one kernel (``fused_attention``;
    None: the model's default)."""
    g2l, l2g = VARIANTS[variant]
    torch.manual_seed(seed)
    spec = load_spec("ntu120")
    options = {} if fused is None else {"fused_attention": fused}
    if "mixfuse" in CANDIDATES["on"]:
        options["fused_mixing"] = True
    if "epi" in CANDIDATES["on"] or "noepi" in CANDIDATES["on"]:
        options["fused_epilogue"] = "noepi" not in CANDIDATES["on"]
    if "fp32dtypes" in CANDIDATES["on"]:
        options.update(stem_in_compute_dtype=False, norm_in_input_dtype=False)
    if "idxpool" in CANDIDATES["on"]:
        options["index_free_pool"] = False
    if "fusednorm" in CANDIDATES["on"]:
        options["fused_norm"] = True
    if "mixtrain" in CANDIDATES["on"]:
        options["fused_mixing_train"] = True
    if "sepdil" in CANDIDATES["on"]:
        options["merged_dilations"] = False
    if "densegrad" in CANDIDATES["on"]:
        options["dense_conv_gradients"] = True
    if {"tritonconv", "tritonconvtrain"} & CANDIDATES["on"]:
        options["triton_dilations"] = True
    if {"tritonconv", "tritonconveval"} & CANDIDATES["on"]:
        options["triton_dilations_eval"] = True
    if "dense" in CANDIDATES["on"] or "strided" in CANDIDATES["on"]:
        options["dense_branches"] = "strided" not in CANDIDATES["on"]
    model = CrossGLG("infogcn", num_classes, spec, g2l=g2l, l2g=l2g, **options).to(device)
    if "kbn" in CANDIDATES["on"]:
        use_kernel_batchnorm(model)
    return model


class Knowledge:
    """Random per-class joint-text embeddings (fp16) and key-joint distributions, on the device."""

    def __init__(self, num_classes: int, device: torch.device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.text = torch.randn(num_classes, 25, TEXT_DIM, generator=g).half().to(device)
        self.k_gt = torch.softmax(torch.randn(num_classes, 25, generator=g), -1).to(device)


def flops_per_sample(variant: str, num_classes: int, device: torch.device) -> float:
    """Forward + backward FLOPs per training sample (``torch.utils.flop_counter``, batch 4; eager, so
    the useful FLOPs: the merged dilated convolution's zero taps are a compiled step's only)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.models.losses import crossglg_loss

    model, kb = build(variant, num_classes, device), Knowledge(num_classes, device)
    y = torch.arange(4, device=device)
    x = torch.randn(4, 3, 64, 25, 2, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x, kb.text[y] if variant == "crossglg" else None)
        loss, _ = crossglg_loss(out, y, kb.k_gt[y] if variant == "crossglg" else None)
        loss.backward()
    return counter.get_total_flops() / 4


def make_step(
    model: CrossGLG, variant: str, device: torch.device, compile_mode: str, precision: str
) -> Callable[[torch.Tensor, torch.Tensor, Knowledge], tuple[torch.Tensor, dict, torch.Tensor]]:
    """The trainer's step (forward, loss, backward, fused SGD) for this model and path."""
    # lr 0.01: this model diverges at its full lr 0.1 without the trainer's 5-epoch warm-up.
    opt = make_sgd(model.parameters(), 0.01, 0.9, True, 5e-4, device)
    forward_loss = make_forward_loss(model, device, compile_mode)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    autocast = autocast_for(device, precision)
    use_text = variant == "crossglg"

    def step(x: torch.Tensor, y: torch.Tensor, kb: Knowledge) -> tuple[torch.Tensor, dict, torch.Tensor]:
        text = kb.text[y] if use_text else None
        k_gt = kb.k_gt[y] if use_text else None
        return train_step(forward_loss, opt, scaler, autocast, x, text, y, k_gt)

    return step


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def gradient_check(args: argparse.Namespace, device: torch.device, store: PreparedStore) -> dict[str, Any]:
    """One batch: loss and gradients of bf16 eager and of the fast path, each against fp32 eager."""
    kb = Knowledge(args.classes, device)
    feeder = GPUFeeder(store, np.arange(len(store)), device=device, train=True)
    x, y, _ = next(feeder.epoch_batches(args.check_batch, 0))
    ref = build("crossglg", args.classes, device)
    results: dict[str, Any] = {}
    # Inductor's own RNG would draw different z-noise than eager: use the eager RNG for this check.
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    paths = {"fp32_eager": ("fp32", "off"), "bf16_eager": ("bf16", "off"), "fast": ("bf16", args.compile)}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    losses: dict[str, torch.Tensor] = {}
    for name, (precision, mode) in paths.items():
        model = copy.deepcopy(ref)
        fl = make_forward_loss(model, device, mode)
        torch.manual_seed(123)  # same z-noise draw in every path
        with autocast_for(device, precision):
            loss, _, _ = fl(x, kb.text[y], y, kb.k_gt[y])
        loss.backward()
        losses[name] = loss.detach().float()
        # A parameter without a gradient counts as zeros: with the fused BatchNorm kernels SA-GC's
        # bias before its BatchNorm is not in the graph (its exact gradient in training is 0).
        grads[name] = {
            n: p.grad.detach().float().clone()
            if p.grad is not None
            else torch.zeros_like(p, dtype=torch.float32)
            for n, p in model.named_parameters()
        }
        del model
    inductor_config.fallback_random = False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    flat = {k: torch.cat([g.flatten() for g in v.values()]) for k, v in grads.items()}
    for name in ("bf16_eager", "fast"):
        per_param = [rel(grads[name][n], g) for n, g in grads["fp32_eager"].items() if g.norm() > 0]
        results[name] = {
            "loss_rel_err": rel(losses[name], losses["fp32_eager"]),
            "grad_rel_err": rel(flat[name], flat["fp32_eager"]),
            "grad_rel_err_param_median": float(np.median(per_param)),
            "finite": bool(torch.isfinite(flat[name]).all()),
        }
    fast, eager = results["fast"], results["bf16_eager"]
    # "Within bf16 tolerance": no worse than eager bf16 autocast is against fp32 (with slack for
    # rounding noise), and small in absolute terms.
    results["passed"] = bool(
        fast["finite"]
        and fast["loss_rel_err"] < max(3 * eager["loss_rel_err"], 1e-2)
        and fast["grad_rel_err"] < max(3 * eager["grad_rel_err"], 5e-2)
    )
    return results


def short_training(
    args: argparse.Namespace,
    device: torch.device,
    store: PreparedStore,
    precision: str,
    mode: str,
    seed: int = 1,
) -> float:
    """Accuracy on held-out synthetic samples after ``args.train_steps`` CrossGLG steps from ``seed``."""
    n = len(store)
    train_idx, test_idx = np.arange(n // 5, n), np.arange(n // 5)
    kb = Knowledge(args.classes, device)
    model = build("crossglg", args.classes, device, seed=seed)
    step = make_step(model, "crossglg", device, mode, precision)
    feeder = GPUFeeder(store, train_idx, device=device, train=True, seed=seed)
    done, epoch = 0, 0
    model.train()
    while done < args.train_steps:
        for x, y, _ in feeder.epoch_batches(args.check_batch, epoch):
            step(x, y, kb)
            done += 1
            if done >= args.train_steps:
                break
        epoch += 1
    model.eval()
    test = GPUFeeder(store, test_idx, device=device, train=False)
    correct = 0
    with torch.no_grad(), autocast_for(device, precision):
        for x, y, _ in test.epoch_batches(256, 0):
            correct += int((model(x)["logits"].argmax(1) == y).sum())
    return correct / len(test_idx)


def time_train(
    args: argparse.Namespace,
    device: torch.device,
    store: PreparedStore,
    variant: str,
    batch: int,
    mode: str,
    fused: bool | None = None,
) -> dict[str, float]:
    """Samples/s of the whole step (feeder included) after warm-up (which includes compilation)."""
    torch._dynamo.reset()
    kb = Knowledge(args.classes, device)
    model = build(variant, args.classes, device, fused=fused)
    step = make_step(model, variant, device, mode, "bf16")
    feeder = GPUFeeder(store, np.arange(len(store)), device=device, train=True)
    model.train()

    def batches():  # noqa: ANN202
        epoch = 0
        while True:
            yield from feeder.epoch_batches(batch, epoch)
            epoch += 1

    stream = batches()
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        x, y, _ = next(stream)
        step(x, y, kb)
    sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        x, y, _ = next(stream)
        loss, _, _ = step(x, y, kb)
    sync(device)
    dt = time.perf_counter() - t0
    return {
        "samples_per_s": round(batch * args.steps / dt, 1),
        "warmup_s": round(warm_s, 1),
        "final_loss": round(float(loss.detach()), 4),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else 0.0,
    }


def time_eval(
    args: argparse.Namespace, device: torch.device, store: PreparedStore, batch: int, mode: str
) -> float:
    """Samples/s of feature extraction (eval feeder + skeleton branch), bf16, after warm-up."""
    torch._dynamo.reset()
    model = build("crossglg", args.classes, device).eval()
    extract = make_feature_extractor(model, device, mode)
    feeder = GPUFeeder(store, np.arange(len(store)), device=device, train=False)
    n_full = len(store) // batch
    batches = list(feeder.epoch_batches(batch, 0))[:n_full]  # full batches: one static shape
    with autocast_for(device, "bf16"):
        for x, _, _ in batches[: max(2, args.warmup // 4)]:
            extract(x)
        sync(device)
        t0 = time.perf_counter()
        done = 0
        while done < args.eval_batches:
            for x, _, _ in batches:
                extract(x)
                done += 1
                if done >= args.eval_batches:
                    break
        sync(device)
    return round(batch * done / (time.perf_counter() - t0), 1)


PROFILE_BATCH = 128


PROFILE_STEPS = 5


def record_train_profile(
    args: argparse.Namespace,
    device: torch.device,
    store: PreparedStore,
    mode: str,
    fused: bool | None = None,
    with_ops: bool = False,
) -> tuple[Any, Any]:
    """``torch.profiler`` records of :data:`PROFILE_STEPS` crossglg training steps at batch 128
    (``fused``: SA-GC's attention path, as in :func:`build`): the kernels' record, and with
    ``with_ops`` a second record of as many steps with the host-side ATen ops and their input shapes
    (for :func:`aten_op_rows`; else None)."""
    from torch.profiler import ProfilerActivity, profile

    torch._dynamo.reset()
    kb = Knowledge(args.classes, device)
    model = build("crossglg", args.classes, device, fused=fused)
    step = make_step(model, "crossglg", device, mode, "bf16")
    feeder = GPUFeeder(store, np.arange(len(store)), device=device, train=True)
    batches = feeder.epoch_batches(PROFILE_BATCH if device.type == "cuda" else 4, 0)
    for _ in range(3):
        x, y, _ = next(batches)
        step(x, y, kb)
    sync(device)
    acts = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=acts) as prof:
        for _ in range(PROFILE_STEPS):
            x, y, _ = next(batches)
            step(x, y, kb)
        sync(device)
    if not with_ops:
        return prof, None
    # A second record with the host-side ops and their input shapes, for aten_op_rows: which ATen op
    # launched which kernels (only where the step is not replayed as a CUDA graph).
    both = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=both, record_shapes=True) as ops:
        for _ in range(PROFILE_STEPS):
            x, y, _ = next(batches)
            step(x, y, kb)
        sync(device)
    return prof, ops


def aten_op_rows(prof: Any, steps: int, device: torch.device, top: int = 25) -> list[dict]:
    """The ATen ops that launched the most GPU (or CPU) time themselves, per input shapes: the ops
    Inductor leaves outside its kernels (convolutions, GEMMs, copies) and what they were given."""
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        own = e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total
        if not e.key.startswith("aten::") or own <= 0:
            continue
        shapes = str(e.input_shapes)
        rows.append(
            {
                "op": e.key,
                "input_shapes": shapes if len(shapes) <= 160 else shapes[:157] + "...",
                "ms_per_step": round(own / steps / 1e3, 3),
                "calls_per_step": e.count // steps,
            }
        )
    rows.sort(key=lambda r: -r["ms_per_step"])
    return rows[:top]


def record_eval_profile(
    args: argparse.Namespace, device: torch.device, store: PreparedStore, mode: str
) -> Any:
    """``torch.profiler`` record of :data:`PROFILE_STEPS` feature-extraction batches of 256."""
    from torch.profiler import ProfilerActivity, profile

    torch._dynamo.reset()
    model = build("crossglg", args.classes, device).eval()
    extract = make_feature_extractor(model, device, mode)
    feeder = GPUFeeder(store, np.arange(len(store)), device=device, train=False)
    x = next(feeder.epoch_batches(256 if device.type == "cuda" else 4, 0))[0]
    with autocast_for(device, "bf16"):
        for _ in range(3):
            extract(x)
        sync(device)
        acts = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
        with profile(activities=acts) as prof:
            for _ in range(PROFILE_STEPS):
                extract(x)
            sync(device)
    return prof


def profiled_kernel_times(prof: Any, steps: int) -> dict[str, tuple[float, int]]:
    """Each GPU kernel of a CUDA profile by its full name: (ms per step, launches per step)."""
    return {
        e.key: (e.self_device_time_total / steps / 1e3, e.count // steps)
        for e in prof.key_averages()
        if e.self_device_time_total > 0
    }


def kernel_rows(prof: Any, steps: int, device: torch.device) -> list[dict]:
    """A profile's kernels per step, largest first, then the totals per family and the grand total."""
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: -getattr(e, attr))
    rows = [
        {
            "kernel": e.key[:90],
            "ms_per_step": round(getattr(e, attr) / steps / 1e3, 3),
            "share": round(getattr(e, attr) / total, 3),
            "calls_per_step": e.count // steps,
        }
        for e in events
    ]
    by_category: dict[str, dict[str, float]] = {}
    for e, row in zip(events, rows, strict=True):
        c = by_category.setdefault(
            kernel_category(e.key), {"ms_per_step": 0.0, "share": 0.0, "calls_per_step": 0}
        )
        c["ms_per_step"] += getattr(e, attr) / steps / 1e3
        c["share"] += getattr(e, attr) / total
        c["calls_per_step"] += row["calls_per_step"]
    categories = [
        {"kernel": f"[{name}]", **{k: round(v, 3) for k, v in c.items()}}
        for name, c in sorted(by_category.items(), key=lambda kv: -kv[1]["ms_per_step"])
    ]
    launches = sum(row["calls_per_step"] for row in rows)
    total_row = {"kernel": "TOTAL", "ms_per_step": round(total / steps / 1e3, 3), "share": 1.0}
    return rows + categories + [{**total_row, "calls_per_step": launches}]


KERNEL_CATEGORIES = (  # first match wins: (category, name prefix, any of these substrings)
    ("fused SA-GC attention (ours)", "", ("_sagc_",)),
    ("frame_matmul (ours)", "", ("_grad_a_kernel", "_forward_kernel")),
    ("Inductor: BatchNorm/LayerNorm backward", "triton_", ("batch_norm_backward", "layer_norm_backward")),
    ("Inductor: BatchNorm/LayerNorm forward", "triton_", ("batch_norm", "layer_norm")),
    ("Inductor: other fused", "triton_", ("",)),
    ("ATen BatchNorm/LayerNorm (eager)", "", ("batch_norm", "layer_norm", "GammaBeta")),
    ("GEMM / convolution (cuBLAS, cuDNN)", "", ("nvjet", "gemm", "xmma", "cutlass", "magma", "conv")),
    ("ATen reductions", "", ("reduce_kernel",)),
    ("ATen elementwise / copies", "", ("elementwise", "memcpy", "Memcpy", "Memset", "copy")),
)


def kernel_category(name: str) -> str:
    """Which family a GPU kernel belongs to (for the profile's per-category totals)."""
    for category, prefix, needles in KERNEL_CATEGORIES:
        if name.startswith(prefix) and any(n in name for n in needles):
            return category
    return "other"


def bandwidth_profile(
    args: argparse.Namespace, device: torch.device, store: PreparedStore, copy_tb_s: float
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The kernels Inductor writes, inside the real compiled crossglg training step at batch 128
    (forward and backward) and one eval batch of 256: their profiled time per launch against
    Inductor's byte count of each, at the device's copy rate. Yields ``(name, summary)`` per graph
    set (see ``bench/inductor_bandwidth.py``).

    Compiled as ``--compile`` (``auto``: CUDA graphs) with ``benchmark_kernel`` on, which makes
    Inductor count each kernel's bytes and changes no kernel. GEMMs, convolutions and our own
    Triton ops carry no byte count and are left out: the summary says how close the BatchNorm /
    ReLU / add family runs to the bandwidth bound, and how many bytes it moves per step.
    """
    import torch._inductor.config as inductor_config
    from torch._inductor.codecache import PyCodeCache

    if device.type != "cuda":
        yield "skipped", {"reason": "the kernel profile needs CUDA (the CPU path runs eagerly)"}
        return
    records: dict[str, Callable[[], Any]] = {
        f"train batch {PROFILE_BATCH}": lambda: record_train_profile(args, device, store, args.compile)[0],
        "eval batch 256": lambda: record_eval_profile(args, device, store, args.compile),
    }
    for name, record in records.items():
        before = frozenset(id(m) for m in PyCodeCache.modules)
        with inductor_config.patch({"benchmark_kernel": True}):
            prof = record()
        gb = kernel_bytes(PyCodeCache.modules, skip=before)
        summary = summarise(in_graph_rows(profiled_kernel_times(prof, PROFILE_STEPS), gb), copy_tb_s)
        summary["names_shared_by_several_kernels"] = sum(len(v) > 1 for v in gb.values())
        print(format_summary(name, summary, copy_tb_s), flush=True)
        yield name, summary


SECTIONS = ("kernels", "train", "eval", "check", "short", "compare", "profile", "evalprofile", "bandwidth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (script check on the CPU)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--merge", type=Path, help="start from this earlier result JSON (fill in sections)")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--eval-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--compile", default="auto", help="torch.compile mode of the fast path")
    parser.add_argument(
        "--compare",
        nargs="*",
        default=["auto+unfused", "auto+bmm"],
        help="other settings of crossglg at --compare-batch: MODE[+FLAG...]; flags fused / unfused "
        "(SA-GC's attention as one kernel or with the maps in memory), bmm (unfused with torch.bmm for "
        "the products), cdt (Inductor coordinate-descent tuning), combo (Inductor combo kernels), "
        "mapw (Inductor max_autotune_pointwise), magemm (GEMMs autotuned with Triton templates), nomix / "
        "coop / tile / aggr / nosplit / remat (Inductor options, see INDUCTOR_FLAGS), kbn / dense "
        "(model candidates, see MODEL_CANDIDATES)",
    )
    parser.add_argument("--compare-batch", type=int, default=128, help="batch of the compare section")
    parser.add_argument(
        "--compare-eval",
        type=int,
        default=0,
        metavar="BATCH",
        help="the compare section also times eval (feature extraction) at this batch for each setting",
    )
    parser.add_argument(
        "--profile-mode",
        default="off",
        help="setting of the profiled step: a compile mode or a --compare label (e.g. auto+remat)",
    )
    parser.add_argument(
        "--profile-ops",
        action="store_true",
        help="the profile section also lists the ATen ops that launched the most GPU time, with their "
        "input shapes (use a --profile-mode without CUDA graphs, e.g. default)",
    )
    parser.add_argument("--steps", type=int, default=60, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps (compilation included)")
    parser.add_argument("--eval-batches", type=int, default=40)
    parser.add_argument("--samples", type=int, default=6000, help="synthetic store size")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--check-batch", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=600, help="steps of the short training check")
    parser.add_argument("--short-seeds", type=int, default=3, help="seeds of the short training check")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="RESULT_JSON",
        help="only draw RESULT_JSON as train_throughput.png in --out (needs matplotlib; no GPU)",
    )
    parser.add_argument(
        "--prewarm",
        type=int,
        default=0,
        metavar="SECONDS",
        help="first compile every timed configuration in parallel processes (fills Inductor's caches; "
        "at most SECONDS), then time them one after the other",
    )
    parser.add_argument("--prewarm-only", action="store_true", help="stop after --prewarm (fill the caches)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start no timed configuration after this many seconds (prewarm included); the table "
        "is still written, with the skipped ones listed",
    )
    parser.add_argument(
        "--candidates",
        nargs="*",
        default=[],
        choices=sorted(MODEL_CANDIDATES),
        help="model candidates on in every section (as the compare flags of the same names)",
    )
    parser.add_argument("--warm-only", action="store_true", help=argparse.SUPPRESS)  # a --prewarm job
    args = parser.parse_args()
    if args.plot:
        path = plot_throughput(json.loads(args.plot.read_text()), args.out / "train_throughput.png")
        print(path or "matplotlib is not installed: no plot")
        return
    if args.quick:
        args.batches, args.eval_sizes = [4], [8]
        args.steps, args.warmup, args.eval_batches, args.samples = 2, 1, 2, 64
        args.classes, args.check_batch, args.train_steps, args.short_seeds = 5, 4, 3, 2
        args.compare_batch = 4
    schedule = Schedule(args.deadline)
    if args.prewarm:
        schedule.unwarmed = prewarm(args)
        if args.prewarm_only:
            return
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    CANDIDATES["default"] = set(args.candidates)
    CANDIDATES["on"] = set(args.candidates)
    if args.warm_only:
        warm_configurations(args, device)
        return
    gpu = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    print(f"device {gpu}, torch {torch.__version__}, compile mode {args.compile}", flush=True)
    result: dict[str, Any] = json.loads(args.merge.read_text()) if args.merge else {}
    result.update(gpu=gpu, torch=torch.__version__, compile_mode=args.compile)
    if not result.get("ceilings"):
        result["ceilings"] = ceilings(device)
    print("ceilings", result["ceilings"], flush=True)
    if "flops_per_sample" not in result:
        result["flops_per_sample"] = {v: flops_per_sample(v, args.classes, device) for v in VARIANTS}
    print("fwd+bwd GFLOP/sample", {k: round(v / 1e9, 2) for k, v in result["flops_per_sample"].items()})
    store = synthetic_store(args.samples, args.classes)

    def save() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_throughput.json").write_text(json.dumps(result, indent=2) + "\n")

    if "kernels" in args.sections:
        result["frame_matmul_check"] = {
            f"{str(dt).removeprefix('torch.')} k={k} n={n}": frame_matmul.check_kernels(
                args.device, dt, n=n, k=k
            )
            for dt in (torch.bfloat16, torch.float16)
            for k, n in ((75, 80), (8, 25), (32, 25))
        }
        print("frame_matmul kernels vs float64 bmm", json.dumps(result["frame_matmul_check"]), flush=True)
        result["sagc_attention_check"] = {
            f"{str(dt).removeprefix('torch.')} d={d} n={n}": sagc_attention.check_kernels(
                args.device, dt, d=d, n=n
            )
            for dt in (torch.bfloat16, torch.float16)
            for d, n in ((8, 64), (16, 128), (32, 256))
        }
        print("sagc_attention kernels vs float64", json.dumps(result["sagc_attention_check"]), flush=True)
        result["sagc_inference_check"] = {
            f"{str(dt).removeprefix('torch.')} d={d} c={c} n={n}": sagc_inference.check_kernels(
                args.device, dt, d=d, c=c, n=n
            )
            for dt in (torch.bfloat16, torch.float16)
            for d, c, n in ((8, 64, 64), (8, 64, 128), (16, 128, 128), (16, 128, 256), (32, 256, 256))
        }
        print("sagc_inference kernel vs float64", json.dumps(result["sagc_inference_check"]), flush=True)
        result["sagc_epilogue_check"] = {
            f"{str(dt).removeprefix('torch.')} {'mixing' if mixing else 'attention'} c={c} n={n}": (
                sagc_epilogue.check_kernels(args.device, dt, mixing, c=c, n=n)
            )
            for dt in (torch.bfloat16, torch.float16)
            for mixing in (False, True)
            for c, n in ((64, 64), (128, 256), (256, 256))
        }
        print("sagc epilogue kernels vs float64", json.dumps(result["sagc_epilogue_check"]), flush=True)
        result["layernorm_linear_check"] = {
            f"{str(dt).removeprefix('torch.')} rows={rows} c={c} n={n}": layernorm_linear.check_kernels(
                args.device, dt, rows=rows, c=c, n=n
            )
            for dt in (torch.bfloat16, torch.float16)
            for rows, c, n in ((4099, 64, 48), (2051, 128, 96), (1027, 256, 192))
        }
        print("layernorm_linear kernels vs float64", json.dumps(result["layernorm_linear_check"]), flush=True)
        save()
    if "train" in args.sections:
        for variant in args.variants:
            for b in args.batches:
                if not schedule.runs(f"train {variant} {b}"):
                    continue
                r = time_train(args, device, store, variant, b, args.compile)
                print(f"train {variant} batch {b}: {r}", flush=True)
                result.setdefault(f"{variant}_train_detail", {})[str(b)] = r
                result.setdefault(f"{variant}_train_samples_per_s", {})[str(b)] = r["samples_per_s"]
                save()
    if "eval" in args.sections:
        for b in args.eval_sizes:
            if not schedule.runs(f"eval {b}"):
                continue
            result.setdefault("eval_samples_per_s", {})[str(b)] = time_eval(
                args, device, store, b, args.compile
            )
            print("eval", result["eval_samples_per_s"], flush=True)
            save()
    if "check" in args.sections and schedule.runs("check"):
        t = time.perf_counter()
        result["numerics"] = gradient_check(args, device, store)
        print(
            f"numerics (vs fp32 eager, {time.perf_counter() - t:.0f} s)",
            json.dumps(result["numerics"]),
            flush=True,
        )
        save()
    if "short" in args.sections and schedule.runs("short"):
        t = time.perf_counter()
        # Each path from the same seeds (same init, same batches): the gap between the paths is
        # judged against the spread over seeds.
        seeds = range(1, args.short_seeds + 1)
        runs = {
            "fp32_eager": [short_training(args, device, store, "fp32", "off", s) for s in seeds],
            "fast": [short_training(args, device, store, "bf16", args.compile, s) for s in seeds],
        }
        acc = {k: float(np.mean(v)) for k, v in runs.items()}
        spread = {f"{k}_std": float(np.std(v)) for k, v in runs.items()}
        result["short_training_accuracy"] = {
            "steps": args.train_steps,
            "batch": args.check_batch,
            "seeds": len(seeds),
            **acc,
            **spread,
            "per_seed": runs,
        }
        print(f"short training accuracy {acc} ({time.perf_counter() - t:.0f} s)", flush=True)
        save()
    if "compare" in args.sections:
        mid = args.compare_batch
        for label in args.compare if mid else []:  # --compare-batch 0: eval only (--compare-eval)
            if not schedule.runs(f"compare {label}"):
                continue
            try:
                with compare_setting(label) as (mode, fused):
                    r = time_train(args, device, store, "crossglg", mid, mode, fused=fused)
            except Exception as exc:  # one setting that does not compile must not lose the others
                r = failure(exc)
            print(f"train crossglg batch {mid} compile={label}: {r}", flush=True)
            result.setdefault("compare_modes_crossglg", {"batch": mid})[label] = r
            save()
        for label in args.compare if args.compare_eval else []:
            if not schedule.runs(f"compare-eval {label}"):
                continue
            try:
                with compare_setting(label) as (mode, _):
                    e: dict[str, Any] = {
                        "samples_per_s": time_eval(args, device, store, args.compare_eval, mode)
                    }
            except Exception as exc:
                e = failure(exc)
            print(f"eval batch {args.compare_eval} compile={label}: {e}", flush=True)
            result.setdefault("compare_eval", {"batch": args.compare_eval})[label] = e
            save()
    if "profile" in args.sections and schedule.runs("profile"):
        with compare_setting(args.profile_mode) as (mode, fused):
            prof, ops = record_train_profile(args, device, store, mode, fused, args.profile_ops)
        rows = kernel_rows(prof, PROFILE_STEPS, device)
        result["profile_top_kernels"] = {"compile": args.profile_mode, "rows": rows}
        print_profile(rows)
        if ops is not None:
            op_rows = aten_op_rows(ops, PROFILE_STEPS, device)
            result["profile_aten_ops"] = {"compile": args.profile_mode, "rows": op_rows}
            print("ATen ops by the GPU time they launched themselves (ms per step, launches, input shapes)")
            for row in op_rows:
                timing = f"{row['ms_per_step']:8.3f} ms x{row['calls_per_step']:<4}"
                print(f"  {timing} {row['op']} {row['input_shapes']}")
        save()
    if "evalprofile" in args.sections and schedule.runs("evalprofile"):
        with compare_setting(args.profile_mode) as (mode, _):
            prof = record_eval_profile(args, device, store, mode)
        rows = kernel_rows(prof, PROFILE_STEPS, device)
        result["eval_profile_top_kernels"] = {"compile": args.profile_mode, "batch": 256, "rows": rows}
        print("eval profile (batch 256)", flush=True)
        print_profile(rows)
        save()
    if "bandwidth" in args.sections and schedule.runs("bandwidth"):
        copy_rate = result["ceilings"].get("copy_tb_s", 4.24)
        result["inductor_bandwidth"] = {"copy_tb_s": copy_rate}
        for name, summary in bandwidth_profile(args, device, store, copy_rate):
            result["inductor_bandwidth"][name] = summary
            save()
    result.pop("skipped", None)  # a --merge'd file's list is about its own run
    if schedule.skipped:
        result["skipped"] = schedule.skipped
    table = summary_table(result, cuda)
    result["table"] = table
    save()
    (args.out / "train_throughput.md").write_text(table + "\n")
    plot_throughput(result, args.out / "train_throughput.png")  # skipped where matplotlib is missing
    print()
    print(table)


def print_profile(rows: list[dict]) -> None:
    """The 40 largest kernels, the families and the total (all kernels stay in the JSON)."""
    for i, row in enumerate(rows):
        if i >= 40 and not row["kernel"].startswith("[") and row["kernel"] != "TOTAL":
            continue
        print(
            f"  {row['ms_per_step']:8.3f} ms {100 * row['share']:5.1f}%"
            f" x{row['calls_per_step']:<4} {row['kernel']}",
            flush=True,
        )


# Model candidates a compare label (``auto+kbn``) or ``--candidates`` switches on while a model is built.
MODEL_CANDIDATES = {
    "kbn": "BatchNorm fused with its ReLU/add as Triton kernels (trainer/models/batchnorm_kernels.py)",
    "dense": "dense copies of the TCN's dilated-conv inputs made in the graph (InfoGCN dense_branches, "
    "the default since 2026-12-04)",
    "strided": "the TCN's dilated convolutions read strided channel slices (dense_branches off)",
    "mixfuse": "eval: SA-GC's channel mixing inside its attention kernel (InfoGCN fused_mixing)",
    "epi": "eval: SA-GC's BatchNorm, shortcut, ReLU and joint weight inside its attention kernel "
    "(InfoGCN fused_epilogue, the default since 2026-12-06)",
    "noepi": "eval: SA-GC's tail as a separate Inductor kernel (fused_epilogue off)",
    "fp32dtypes": "before 2026-12-06: the stem's output promoted to fp32 and autocast's fp32 LayerNorm "
    "(InfoGCN stem_in_compute_dtype / norm_in_input_dtype off)",
    "idxpool": "before 2026-12-06: the TCN's max-pool with int64 argmax indices (index_free_pool off)",
    "fusednorm": "SA-GC's LayerNorm inside its query/key projection, one Triton op per direction "
    "(InfoGCN fused_norm, trainer/models/layernorm_linear.py)",
    "sepdil": "before 2026-12-07: the TCN's dilated convolutions as two cuDNN calls in training too "
    "(InfoGCN merged_dilations off)",
    "densegrad": "training: the TCN's dilated convolutions get dense output gradients made in the graph "
    "(InfoGCN dense_conv_gradients), not strided slices cuDNN copies",
    "tritonconv": "the TCN's dilated branches as one Triton implicit-GEMM op per direction, training "
    "and eval (InfoGCN triton_dilations + triton_dilations_eval, trainer/models/temporal_conv.py)",
    "tritonconvtrain": "tritonconv in training only (InfoGCN triton_dilations, the default since 2026-12-07)",
    "tritonconveval": "tritonconv in eval only (InfoGCN triton_dilations_eval)",
    "mixtrain": "training: SA-GC's channel mixing inside its attention kernels, forward and backward "
    "(InfoGCN fused_mixing_train, trainer/models/sagc_mixed_training.py)",
}
CANDIDATES: dict[str, set[str]] = {"on": set(), "default": set()}

# Inductor options a compare label can switch on (``auto+cdt``, ``auto+combo``, ...).
INDUCTOR_FLAGS = {
    "cdt": {"coordinate_descent_tuning": True},  # tune each Triton kernel's block sizes
    "combo": {"combo_kernels": True},  # horizontally fuse independent small kernels
    "mapw": {"max_autotune_pointwise": True},  # benchmark more block sizes per pointwise/reduction
    "nomix": {"triton.mix_order_reduction": False},  # no kernels mixing row and column reductions
    "coop": {"triton.cooperative_reductions": True},  # one-kernel (grid-synced) split reductions
    "tile": {"triton.tile_reductions": True, "triton.prefer_nd_tiling": True},  # 2-D reduction tiles
    "aggr": {"aggressive_fusion": True},  # fuse nodes even when they share no memory access
    "nosplit": {"split_reductions": False},  # no two-stage split of large reductions
    # Recompute pointwise chains in each consumer instead of storing them: Inductor stores a chain
    # read by several kernels once it reads > 4 buffers, has > 30 ops or has accumulated > 8 reads
    # (torch/_inductor/ir.py, should_realize_on_reuse / has_exceeded_max_reads). In the training
    # step that stores each BatchNorm backward's input gradient in fp32 (the ReLU masks and the
    # recomputed forward folded in), written once and read by the two reductions and the final
    # kernel (bench/inductor_bytes.py counts the bytes with and without, on the CPU).
    # Blocks alone 3.7% faster on an H100, the whole step not (trainer.engine.step's notes).
    "remat": {
        "realize_reads_threshold": 16,
        "realize_opcount_threshold": 100,
        "realize_acc_reads_threshold": 32,
    },
    # GEMMs autotuned against Inductor's Triton templates, which can take the neighbouring pointwise
    # work as epilogue / prologue (e.g. a BatchNorm's normalise + ReLU read straight into the next
    # GEMM instead of written and re-read). The convolutions stay cuDNN's: with Triton's conv
    # templates too, the training graph did not compile in 260 s on an H100 (2026-12-06).
    "magemm": {
        "max_autotune_gemm": True,
        "max_autotune_gemm_backends": "ATEN,TRITON",
        "max_autotune_conv_backends": "ATEN",
    },
}


def _has_option(config: Any, name: str) -> bool:
    """Whether the (dotted) Inductor option ``name`` exists in ``config``."""
    for part in name.split("."):
        if not hasattr(config, part):
            return False
        config = getattr(config, part)
    return True


@contextlib.contextmanager
def compare_setting(label: str) -> Iterator[tuple[str, bool | None]]:
    """``MODE[+FLAG...]`` → (compile mode, ``fused_attention``) while the label's settings hold.

    Flags: ``fused`` / ``unfused`` (SA-GC's attention as one kernel or with its maps in memory),
    ``bmm`` (unfused, torch.bmm instead of the Triton products), ``kbn`` (the candidate BatchNorm
    kernels), and :data:`INDUCTOR_FLAGS`.
    """
    mode, *flags = label.split("+")
    unknown = set(flags) - {"fused", "unfused", "bmm", *MODEL_CANDIDATES, *INDUCTOR_FLAGS}
    if unknown:
        raise SystemExit(f"unknown compare flag(s) {sorted(unknown)} in {label!r}")
    fused = True if "fused" in flags else False if {"unfused", "bmm"} & set(flags) else None
    options = {k: v for f in flags if f in INDUCTOR_FLAGS for k, v in INDUCTOR_FLAGS[f].items()}
    import torch._inductor.config as inductor_config

    missing = [k for k in options if not _has_option(inductor_config, k)]
    if missing:  # an older or newer torch: time the label without them, and say so
        print(f"{label}: this torch's Inductor has no option(s) {missing}; timed without", flush=True)
        options = {k: v for k, v in options.items() if k not in missing}

    frame_matmul.set_kernels_enabled("bmm" not in flags)
    CANDIDATES["on"] = (set(flags) & set(MODEL_CANDIDATES)) | CANDIDATES["default"]
    try:
        with inductor_config.patch(options):
            yield mode, fused
    finally:
        frame_matmul.set_kernels_enabled(True)
        CANDIDATES["on"] = set(CANDIDATES["default"])


def warm_jobs(args: argparse.Namespace) -> dict[str, list[str]]:
    """One compile-only job per configuration the requested sections will time: its
    :class:`Schedule` key → the job's arguments."""
    base = ["--device", args.device, "--compile", args.compile, "--classes", str(args.classes)]
    base += ["--candidates", *args.candidates] if args.candidates else []
    jobs: dict[str, list[str]] = {}
    if "train" in args.sections:
        for v in args.variants:
            for b in args.batches:
                jobs[f"train {v} {b}"] = ["--sections", "train", "--variants", v, "--batches", str(b)]
    if "eval" in args.sections:
        for b in args.eval_sizes:
            jobs[f"eval {b}"] = ["--sections", "eval", "--eval-sizes", str(b)]
    if "compare" in args.sections:
        for label in args.compare:
            batch = ["--compare-batch", str(args.compare_batch)]
            jobs[f"compare {label}"] = ["--sections", "compare", "--compare", label, *batch]
            if args.compare_eval:
                only_eval = ["--compare-eval", str(args.compare_eval), "--compare-batch", "0"]
                jobs[f"compare-eval {label}"] = ["--sections", "compare", "--compare", label, *only_eval]
    if "bandwidth" in args.sections:
        jobs["bandwidth"] = ["--sections", "bandwidth"]
    if "check" in args.sections:
        jobs["check"] = ["--sections", "check", "--check-batch", str(args.check_batch)]
    if "profile" in args.sections and args.profile_mode != "off":
        jobs["profile"] = ["--sections", "profile", "--profile-mode", args.profile_mode]
    if "evalprofile" in args.sections and args.profile_mode != "off":  # the eval graph at batch 256
        jobs["evalprofile"] = ["--sections", "evalprofile", "--profile-mode", args.profile_mode]
    return {key: base + job for key, job in jobs.items()}


def prewarm(args: argparse.Namespace) -> set[str]:
    """Compile every configuration concurrently in subprocesses (``--warm-only``), at most ``--prewarm`` s.

    Each compile is mostly single-threaded Python (Dynamo, AOTAutograd, Inductor lowering), ~2 min
    per graph on an H200 host; run one after the other they dominate the bench. The subprocesses
    fill Inductor's on-disk caches (FX graphs, AOTAutograd, Triton kernels), so the timed runs that
    follow start in seconds. Their timings are discarded. Returns the keys of the jobs that failed
    or ran out of time (:class:`Schedule` skips those configurations: they would compile again).
    """
    jobs = warm_jobs(args)
    threads = max(1, (os.cpu_count() or 2) // max(1, len(jobs)))
    env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": str(threads)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        procs = {
            key: subprocess.Popen(
                [sys.executable, __file__, "--warm-only", *job, "--out", f"{tmp}/{i}"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, (key, job) in enumerate(jobs.items())
        }
        unfinished: set[str] = set()
        for key, proc in procs.items():
            remaining = max(1.0, args.prewarm - (time.perf_counter() - t0))
            try:
                _, err = proc.communicate(timeout=remaining)
                if proc.returncode:
                    unfinished.add(key)
                    print(f"prewarm job {key!r} failed: {err.strip().splitlines()[-1:]}", flush=True)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                unfinished.add(key)
    print(
        f"prewarm: {len(jobs)} configurations compiled in parallel in {time.perf_counter() - t0:.0f} s"
        f" ({len(unfinished)} not finished{': ' + ', '.join(sorted(unfinished)) if unfinished else ''})",
        flush=True,
    )
    return unfinished


class Schedule:
    """Which timed configurations still run: not those whose ``--prewarm`` compile did not finish
    (timing them would compile them now, which can take longer than the whole call has left), and
    none once ``--deadline`` seconds have passed since the start. The skipped ones are recorded, and
    the table is written in any case."""

    def __init__(self, deadline_s: float = 0.0, unwarmed: set[str] | None = None):
        self.start = time.perf_counter()
        self.deadline_s = deadline_s
        self.unwarmed = unwarmed or set()
        self.skipped: dict[str, str] = {}

    def runs(self, key: str) -> bool:
        """Whether configuration ``key`` (a :func:`warm_jobs` key) is timed; if not, say why."""
        why = None
        if key in self.unwarmed:
            why = "its --prewarm compile did not finish"
        elif self.deadline_s and time.perf_counter() - self.start > self.deadline_s:
            why = f"past --deadline {self.deadline_s:.0f} s"
        if why:
            self.skipped[key] = why
            print(f"skipped {key}: {why}", flush=True)
        return why is None


def warm_configurations(args: argparse.Namespace, device: torch.device) -> None:
    """A ``--prewarm`` job: build and run each configuration of ``args.sections`` just past compilation."""
    args.steps, args.warmup, args.eval_batches = 1, 3, 1
    store = synthetic_store(max(1024, *args.batches, *args.eval_sizes), args.classes)
    if "train" in args.sections:
        for variant in args.variants:
            for b in args.batches:
                time_train(args, device, store, variant, b, args.compile)
    if "eval" in args.sections:
        for b in args.eval_sizes:
            time_eval(args, device, store, b, args.compile)
    if "compare" in args.sections:
        for label in args.compare:
            with compare_setting(label) as (mode, fused):
                if args.compare_batch:
                    time_train(args, device, store, "crossglg", args.compare_batch, mode, fused=fused)
                if args.compare_eval:
                    time_eval(args, device, store, args.compare_eval, mode)
    if "bandwidth" in args.sections:
        for _ in bandwidth_profile(args, device, store, 4.24):
            pass
    if "check" in args.sections:
        gradient_check(args, device, store)
    if "profile" in args.sections and args.profile_mode != "off":
        batch = PROFILE_BATCH if device.type == "cuda" else 4
        with compare_setting(args.profile_mode) as (mode, fused):
            time_train(args, device, store, "crossglg", batch, mode, fused=fused)
    if "evalprofile" in args.sections and args.profile_mode != "off":
        with compare_setting(args.profile_mode) as (mode, _):
            time_eval(args, device, store, 256, mode)


TRAIN_TARGET, EVAL_TARGET = 20_000, 50_000  # issue 8


def plot_throughput(result: dict[str, Any], path: Path) -> Path | None:
    """Bars: training samples/s per batch size and path, eval samples/s, with the issue's targets."""
    from trainer.plots import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return None
    fig, (ax, ax_eval) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    batches = sorted({int(b) for v in VARIANTS for b in result.get(f"{v}_train_samples_per_s", {})})
    width = 0.8 / len(VARIANTS)
    for i, variant in enumerate(VARIANTS):
        rates = result.get(f"{variant}_train_samples_per_s", {})
        xs = [j + i * width for j, b in enumerate(batches) if str(b) in rates]
        ys = [rates[str(b)] for b in batches if str(b) in rates]
        bars = ax.bar(xs, ys, width, label=variant)
        ax.bar_label(bars, labels=[f"{y:,.0f}" for y in ys], fontsize=7)
    ax.axhline(TRAIN_TARGET, color="grey", linestyle="--", linewidth=1)
    ax.text(-0.4, TRAIN_TARGET, f"target {TRAIN_TARGET:,}", va="bottom", fontsize=7, color="grey")
    fit = step_time_fit(result.get("crossglg_train_samples_per_s", {}))
    if fit and fit[1] > 0:  # what no batch size reaches at today's cost per sample
        bound = 1e3 / fit[1]
        ax.axhline(bound, color="tab:orange", linestyle=":", linewidth=1)
        label = f"crossglg at any batch ≤ {bound:,.0f}"
        ax.text(-0.4, bound, label, va="bottom", fontsize=7, color="tab:orange")
    ax.set_xticks(
        [j + width * (len(VARIANTS) - 1) / 2 for j in range(len(batches))], [str(b) for b in batches]
    )
    ax.set_xlabel("batch size")
    ax.set_ylabel("training samples/s")
    ax.set_title(f"train step + feeder, {result.get('gpu', '?')}", fontsize=9)
    ax.legend(fontsize=8)
    evals = result.get("eval_samples_per_s", {})
    bars = ax_eval.bar(list(evals), list(evals.values()), color="tab:green")
    ax_eval.bar_label(bars, labels=[f"{v:,.0f}" for v in evals.values()], fontsize=7)
    ax_eval.axhline(EVAL_TARGET, color="grey", linestyle="--", linewidth=1)
    ax_eval.set_xlabel("eval batch")
    ax_eval.set_ylabel("feature extraction samples/s")
    ax_eval.set_title(f"eval (target {EVAL_TARGET:,})", fontsize=9)
    return save_figure(fig, plt, path)


def failure(exc: Exception) -> dict[str, str]:
    """A compare setting that failed, as its result entry (one line of the error)."""
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}


def rate_cell(r: dict[str, Any]) -> str:
    """A table cell: samples/s, or why the setting failed."""
    return f"{r['samples_per_s']:,.0f}" if "samples_per_s" in r else f"failed: {r.get('error', '?')[:60]}"


def step_time_fit(rates: dict[str, float]) -> tuple[float, float] | None:
    """Least-squares line through the step times of ``rates`` (batch → samples/s): ``(fixed ms per
    step, ms per sample)``; ``None`` with fewer than two batch sizes.

    The fixed part is what a step costs whatever its batch (launch gaps, kernels too small to fill
    the GPU, the optimizer); the per-sample part bounds the rate at any batch: ``1 / per_sample`` is
    what an infinite batch would reach, so a target above it needs fewer bytes or FLOPs per sample,
    not a larger batch or fewer launches.
    """
    if len(rates) < 2:
        return None
    batches = np.array([float(b) for b in rates])
    step_ms = np.array([float(b) / s * 1e3 for b, s in rates.items()])
    per_sample, fixed = np.polyfit(batches, step_ms, 1)
    return float(fixed), float(per_sample)


def summary_table(result: dict[str, Any], cuda: bool) -> str:
    """The markdown table of a result dict (train, eval, numerics, ceilings)."""
    peak = 989e12 if cuda else float("nan")  # H100/H200 dense bf16 datasheet
    lines = [
        f"GPU: {result['gpu']}; torch {result['torch']}; fast path = bf16 autocast + channels-last "
        "InfoGCN + SA-GC attention as one Triton kernel per frame + "
        f"torch.compile({result['compile_mode']}; auto = CUDA graphs) + fused SGD + "
        "on-GPU feeder; synthetic NTU-120-shaped store.",
        "",
        "| path | batch | train samples/s | NTU-120 epoch (s) | 110 epochs (min) | MFU (989 TF) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for variant in VARIANTS:
        for b, sps in result.get(f"{variant}_train_samples_per_s", {}).items():
            mfu = sps * result["flops_per_sample"][variant] / peak
            lines.append(
                f"| {variant} | {b} | {sps:,.0f} | {NTU120_TRAIN_SAMPLES / sps:.1f} | "
                f"{EPOCHS * NTU120_TRAIN_SAMPLES / sps / 60:.1f} | {100 * mfu:.1f}% |"
            )
    copy_rate = result.get("ceilings", {}).get("copy_tb_s")
    for variant in VARIANTS:
        fit = step_time_fit(result.get(f"{variant}_train_samples_per_s", {}))
        if fit and fit[1] > 0:
            fixed, per_sample = fit
            mb = per_sample * copy_rate * 1e3 if copy_rate else None  # ms × TB/s = GB; → MB
            traffic = f", ≈ {mb:.0f} MB per sample at the copy rate" if mb else ""
            lines.append(
                f"| {variant}: step ≈ {fixed:.1f} ms + {per_sample * 1e3:.0f} µs × batch{traffic} | ∞ | "
                f"{1e3 / per_sample:,.0f} (bound at any batch) | | | |"
            )
    compare = dict(result.get("compare_modes_crossglg", {}))
    mid = compare.pop("batch", 128)
    for mode, r in compare.items():
        lines.append(f"| crossglg, compile={mode} | {mid} | {rate_cell(r)} | | | |")
    if result.get("eval_samples_per_s"):
        lines += ["", "| eval batch | samples/s |", "| --- | --- |"]
        lines += [f"| {b} | {s:,.0f} |" for b, s in result["eval_samples_per_s"].items()]
    compare_eval = dict(result.get("compare_eval", {}))
    if compare_eval:
        eval_batch = compare_eval.pop("batch")
        lines += ["", "| eval, compile= | batch | samples/s |", "| --- | --- | --- |"]
        for mode, r in compare_eval.items():
            lines.append(f"| {mode} | {eval_batch} | {rate_cell(r)} |")
    bandwidth = {
        k: v for k, v in result.get("inductor_bandwidth", {}).items() if isinstance(v, dict) and "ms" in v
    }
    lines += [""] if bandwidth else []
    lines += [f"Inductor's Triton kernels, {name}: {format_large(s)}" for name, s in bandwidth.items()]
    n = result.get("numerics")
    if n:
        lines.append("")
        lines.append(
            f"numerics vs fp32 eager: fast loss rel {n['fast']['loss_rel_err']:.1e}, grad rel "
            f"{n['fast']['grad_rel_err']:.1e} (bf16 eager: {n['bf16_eager']['loss_rel_err']:.1e}, "
            f"{n['bf16_eager']['grad_rel_err']:.1e}); passed={n['passed']}"
        )
    acc = result.get("short_training_accuracy")
    if acc:
        seeds = acc.get("seeds", 1)
        std = {k: f" ± {acc[f'{k}_std']:.3f}" if f"{k}_std" in acc else "" for k in ("fp32_eager", "fast")}
        lines.append(
            f"short training ({acc['steps']} steps, {seeds} seed(s)): accuracy fp32 eager "
            f"{acc['fp32_eager']:.3f}{std['fp32_eager']}, fast {acc['fast']:.3f}{std['fast']}"
        )
    if result.get("skipped"):
        lines.append("not timed: " + "; ".join(f"{k} ({why})" for k, why in result["skipped"].items()))
    if result.get("ceilings"):
        lines.append(f"ceilings measured: {result['ceilings']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

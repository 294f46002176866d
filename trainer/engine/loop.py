"""The training loop: one readable function, resumable to the exact step, DDP-aware.

Why it is shaped this way:
- Batch order and augmentation are a pure function of (seed, epoch) (the feeder's contract), so a
  run resumed from a mid-epoch ``last.pt`` replays the epoch's batch stream and skips the batches it
  had consumed; with the RNG states restored it ends with the same weights and metrics as a run that
  was never interrupted.
- Losses are accumulated on the device and read back only at log intervals and checkpoints: no
  per-step host sync. A non-finite loss is remembered with its step number and stops the run at the
  next sync, before any checkpoint could store NaN weights.
- Only the main process writes files or prints; under ``torchrun`` each rank trains on every
  ``world_size``-th batch of the shared stream.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import Config
from trainer.engine.checkpoint import capture_rng, load_checkpoint, restore_rng, save_atomic
from trainer.engine.components import (
    KnowledgeTables,
    build_model,
    load_knowledge,
    make_feeder,
    model_arguments,
    open_run_data,
)
from trainer.engine.distributed import DistContext, barrier
from trainer.engine.metrics import MetricsLogger
from trainer.engine.schedule import warmup_step_factor
from trainer.engine.step import (
    autocast_for,
    choose_compile_mode,
    make_forward_loss,
    make_sgd,
    parameter_groups,
    resolve_compile_mode,
    train_step,
    uses_compile,
)

# Test hook: raise after this optimizer step (simulates a crash for the resume-exactness test).
FAIL_AT_STEP_ENV = "CROSSGLG_FAIL_AT_STEP"


class TrainingStopped(RuntimeError):
    """Training cannot go on (non-finite loss, out of memory); the message says where and what to try."""


class InjectedFailure(RuntimeError):
    """Raised by the ``CROSSGLG_FAIL_AT_STEP`` test hook."""


@dataclass
class TrainSummary:
    """What a finished (or already finished) run reports."""

    epochs: int
    steps: int
    best_epoch: int
    best_val_accuracy: float
    train_time_s: float
    compile_mode: str = "off"  # what the step ran as (``run.compile`` after the short-run rule)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy and Python's ``random``."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(device: torch.device, precision: str) -> Any:
    if device.type != "cuda" or precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def validation_accuracy(
    model: nn.Module, feeder: Any, batch_size: int, train_label_of: torch.Tensor, precision: str
) -> float:
    """Top-1 accuracy of the skeleton branch on the validation split (auxiliary classes only)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=train_label_of.device)
    total = 0
    for x, y, _ in feeder.epoch_batches(batch_size, 0):
        with _autocast(x.device, precision):
            logits = model(x)["logits"]
        correct += (logits.argmax(1) == train_label_of[y]).sum()
        total += len(y)
    model.train()
    return float(correct) / max(total, 1)


def _fail_at_step() -> int | None:
    raw = os.environ.get(FAIL_AT_STEP_ENV)
    return int(raw) if raw else None


def train(config: Config, run_dir: Path, ctx: DistContext, show_progress: bool = True) -> TrainSummary:
    """Train (or resume) the run in ``run_dir``; writes ``last.pt``, ``best.pt`` and ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    device = ctx.device
    precision = config.run.precision
    seed_everything(config.seed)
    if config.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    data = open_run_data(config)
    spec = data.store.spec
    train_label_of = data.train_label_of.to(device)
    knowledge: KnowledgeTables | None = None
    if config.uses_knowledge:
        knowledge = load_knowledge(config, spec, data.train_class_ids, device)
    margs = model_arguments(config, spec, len(data.train_class_ids), knowledge.dim if knowledge else None)
    model = build_model(spec, margs).to(device)
    optimizer = make_sgd(
        parameter_groups(model, config.optim.lr, config.optim.interaction_lr_scale),
        lr=config.optim.lr,
        momentum=config.optim.momentum,
        nesterov=config.optim.nesterov,
        weight_decay=config.optim.weight_decay,
        device=device,
    )
    train_feeder = make_feeder(config, data, data.split.train, device, train=True)
    val_feeder = (
        make_feeder(config, data, data.split.val, device, train=False) if len(data.split.val) else None
    )
    bs = config.data.batch_size
    steps_per_epoch = train_feeder.num_batches(bs) // ctx.world_size
    if steps_per_epoch == 0:
        raise TrainingStopped(
            f"{len(data.split.train)} training samples give no full batch of {bs} per process: "
            f"lower it (--set data.batch_size={max(1, len(data.split.train) // (2 * ctx.world_size))})"
        )
    factor = warmup_step_factor(
        steps_per_epoch, config.optim.warmup_epochs, config.optim.milestones, config.optim.gamma
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.type == "cuda")

    step, start_epoch, best_val, best_epoch, elapsed = 0, 0, -1.0, -1, 0.0
    last_path = run_dir / "last.pt"
    if last_path.exists():
        # Loaded on the CPU: RNG states must stay there; model and optimizer copy to their device.
        state = load_checkpoint(last_path, map_location="cpu")
        model.load_state_dict(state["model"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:  # the parameter list changed since the checkpoint was written
            raise TrainingStopped(
                f"{last_path} was written by an earlier model layout; its weights load but its optimizer "
                f"state does not ({err}): move it away to restart the run, or evaluate best.pt"
            ) from err
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, start_epoch = int(state["step"]), int(state["epoch"])
        best_val, best_epoch = float(state["best_val"]), int(state["best_epoch"])
        elapsed = float(state["elapsed_s"])
        restore_rng(state["rng"])
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # Compiled forward + loss on CUDA (run.compile; auto stays eager for short runs); eager on the CPU.
    total_samples = steps_per_epoch * bs * ctx.world_size * config.optim.epochs
    compile_mode = choose_compile_mode(config.run.compile, total_samples)
    forward_loss = make_forward_loss(
        model,
        device,
        compile_mode,
        ctx.distributed,
        label_smoothing=config.loss.label_smoothing,
        w_calibrate=config.loss.w_calibrate,
        w_c=config.loss.w_c,
        **config.loss.options,
    )
    autocast = autocast_for(device, precision)
    logger = MetricsLogger(run_dir, enabled=ctx.is_main)
    logger.truncate_after(step)
    fail_at = _fail_at_step()
    total_steps = steps_per_epoch * config.optim.epochs

    def checkpoint(epoch: int) -> None:
        if ctx.is_main:
            save_atomic(
                {
                    "model": _unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "elapsed_s": elapsed + (time.perf_counter() - t0),
                    "rng": capture_rng(),
                    "config": config.to_dict(),
                    "model_args": margs,
                    "train_class_ids": data.train_class_ids,
                },
                last_path,
            )
        barrier(ctx)

    # Device-side accumulators, read back only at log time.
    names: list[str] = []
    sums: torch.Tensor | None = None
    correct = torch.zeros((), device=device)
    seen = torch.zeros((), device=device)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    count = 0

    def flush(epoch: int) -> None:
        nonlocal sums, correct, seen, count
        if count == 0:
            return
        stats = torch.cat([sums / count, correct[None], seen[None], bad_step[None].float()])
        if ctx.distributed:
            # Every rank flushes at the same steps: average the losses, add the counts, keep the
            # largest bad step (-1 = none) so all ranks stop together.
            worst = stats[-1:].clone()
            torch.distributed.all_reduce(stats)
            torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
            stats[: len(names)] /= ctx.world_size
            stats[-1:] = worst
        stats[len(names)] = stats[len(names)] / stats[len(names) + 1].clamp_min(1)
        values = torch.cat([stats[: len(names) + 1], stats[-1:]]).tolist()
        if values[-1] >= 0:
            raise TrainingStopped(
                f"the loss became NaN or infinite at step {int(values[-1])} (epoch {epoch + 1}): "
                f"lower optim.lr (now {config.optim.lr}) or check the inputs; last.pt holds a good state"
            )
        record = dict(zip(names, values[: len(names)], strict=True))
        record["train_accuracy"] = values[len(names)]
        record["lr"] = scheduler.get_last_lr()[0]
        logger.log("train", step, epoch, record)
        sums, count = None, 0
        correct.zero_()
        seen.zero_()

    progress = _progress(ctx.is_main and show_progress)
    if ctx.is_main and show_progress and uses_compile(compile_mode, device):
        mode = resolve_compile_mode(compile_mode)
        progress.console.print(
            f"compiling the training step (torch.compile mode {mode}, run.compile={config.run.compile}): "
            "the first steps take a minute or two"
        )
    task = progress.add_task(config.name, total=total_steps, completed=step)
    t0 = time.perf_counter()
    model.train()
    with progress:
        for epoch in range(start_epoch, config.optim.epochs):
            skip = step - epoch * steps_per_epoch  # batches of this epoch consumed before a resume
            for i, (x, y, _idx) in enumerate(train_feeder.epoch_batches(bs, epoch)):
                if i >= steps_per_epoch * ctx.world_size:
                    break
                if i < skip * ctx.world_size or i % ctx.world_size != ctx.rank:
                    continue
                labels = train_label_of[y]
                text = knowledge.joint_text[labels] if knowledge and config.model.crossglg.l2g else None
                k_gt = knowledge.key_joints[labels] if knowledge and config.model.crossglg.g2l else None
                try:
                    loss, parts, logits = train_step(
                        forward_loss, optimizer, scaler, autocast, x, text, labels, k_gt
                    )
                    scheduler.step()
                except torch.OutOfMemoryError:
                    raise TrainingStopped(
                        f"out of GPU memory at step {step + 1} with batch size {bs}: "
                        f"try --set data.batch_size={max(1, bs // 2)}"
                    ) from None
                step += 1
                detached = {
                    "loss": loss.detach().float(),
                    **{k: v.detach().float() for k, v in parts.items()},
                }
                if sums is None:
                    names = list(detached)
                    sums = torch.stack([detached[k] for k in names])
                else:
                    sums += torch.stack([detached[k] for k in names])
                count += 1
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), step, bad_step)
                correct += (logits.detach().argmax(1) == labels).sum()
                seen += len(labels)
                progress.advance(task)
                at_checkpoint = step % config.run.checkpoint_interval == 0
                if step % config.run.log_interval == 0 or at_checkpoint:
                    flush(epoch)
                if at_checkpoint and step % steps_per_epoch != 0:
                    checkpoint(epoch)  # mid-epoch: resume replays this epoch from its start
                if fail_at is not None and step == fail_at:
                    raise InjectedFailure(f"{FAIL_AT_STEP_ENV}={fail_at}: stopping after step {step}")
            flush(epoch)
            if val_feeder is not None and (
                (epoch + 1) % config.run.val_interval == 0 or epoch + 1 == config.optim.epochs
            ):
                acc = validation_accuracy(
                    _unwrap(model), val_feeder, config.data.eval_batch_size, train_label_of, precision
                )
                logger.log("val", step, epoch, {"val_accuracy": acc})
                if acc > best_val:
                    best_val, best_epoch = acc, epoch
                    if ctx.is_main:
                        save_atomic(
                            {
                                "model": _unwrap(model).state_dict(),
                                "epoch": epoch,
                                "val_accuracy": acc,
                                "config": config.to_dict(),
                                "model_args": margs,
                                "train_class_ids": data.train_class_ids,
                            },
                            run_dir / "best.pt",
                        )
            checkpoint(epoch + 1)
    logger.close()
    if val_feeder is None and ctx.is_main:
        # No validation split: the final weights are the ones evaluated.
        best_epoch = config.optim.epochs - 1
        save_atomic(
            {
                "model": _unwrap(model).state_dict(),
                "epoch": best_epoch,
                "val_accuracy": float("nan"),
                "config": config.to_dict(),
                "model_args": margs,
                "train_class_ids": data.train_class_ids,
            },
            run_dir / "best.pt",
        )
    return TrainSummary(
        epochs=config.optim.epochs,
        steps=step,
        best_epoch=best_epoch,
        best_val_accuracy=best_val,
        train_time_s=elapsed + (time.perf_counter() - t0),
        compile_mode=resolve_compile_mode(compile_mode) if uses_compile(compile_mode, device) else "off",
    )


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir/last.pt`` records the last epoch of its config."""
    path = Path(run_dir) / "last.pt"
    if not path.exists():
        return False
    state = load_checkpoint(path)
    return int(state["epoch"]) >= int(state["config"]["optim"]["epochs"])

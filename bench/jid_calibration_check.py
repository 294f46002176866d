"""Does the JID stay non-degenerate while training? A short CPU run on a prepared store + pack.

Trains CrossGLG (G2L on, L2G off) for a few dozen SGD steps on the real data and prints, every
``--log`` steps, the classification and calibration losses and three statistics of ``k_out``:
its largest weight (1.0 = one-hot), its entropy over ln V (1.0 = uniform) and its Pearson
correlation with the LLM distribution ``k_gt[y]`` (averaged over the batch). ``--variant`` picks the
re-weighting/calibration pair; ``collapse`` is the code before the fix (classification gradient
through the re-weighting, element-wise MSE).

    python bench/jid_calibration_check.py --variant fixed --steps 60
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from trainer.config import load_config
from trainer.engine.components import build_model, load_knowledge, make_feeder, model_arguments, open_run_data
from trainer.models.losses import calibration_loss, crossglg_loss

# variant -> (detach_jid, calibration loss)
VARIANTS = {
    "collapse": (False, "mean"),
    "detach_mean": (True, "mean"),
    "fixed": (True, "sum"),
    "detach_kl": (True, "kl"),
    "grad_sum": (False, "sum"),
}


def kout_stats(k_out: torch.Tensor, k_gt: torch.Tensor) -> tuple[float, float, float]:
    """(mean max weight, mean entropy / ln V, mean Pearson correlation with k_gt) over the batch."""
    v = k_out.shape[1]
    entropy = -(k_out * k_out.clamp_min(1e-12).log()).sum(1) / math.log(v)
    a = k_out - k_out.mean(1, keepdim=True)
    b = k_gt - k_gt.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return float(k_out.max(1).values.mean()), float(entropy.mean()), float(corr.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="nwucla_oneshot")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="fixed")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=0, help="linear lr warm-up over this many steps")
    parser.add_argument("--log", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    detach, calibrate = VARIANTS[args.variant]
    cfg = load_config(
        args.config, [f"data.window={args.window}", f"seed={args.seed}", "model.crossglg.l2g=false"]
    )
    cpu = torch.device("cpu")
    data = open_run_data(cfg)
    spec = data.store.spec
    knowledge = load_knowledge(cfg, spec, data.train_class_ids, cpu)
    margs = model_arguments(cfg, spec, len(data.train_class_ids), knowledge.dim)
    model = build_model(spec, {**margs, "detach_jid": detach})
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    feeder = make_feeder(cfg, data, data.split.train, cpu, train=True)
    print(f"variant {args.variant}: detach_jid={detach}, L_calibrate={calibrate}; ", end="")
    print(f"lr {args.lr} (warm-up {args.warmup} steps), batch {args.batch}, window {args.window}")
    print("step   cls    acc   MSE(k,kgt)  max k   H/lnV  corr(k,kgt)  s/step")
    step, t0 = 0, time.perf_counter()
    model.train()
    epoch = 0
    while step < args.steps:
        for x, y, _ in feeder.epoch_batches(args.batch, epoch):
            labels = data.train_label_of[y]
            k_gt = knowledge.key_joints[labels]
            for group in opt.param_groups:  # the recipe's linear warm-up, in steps
                group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup) if args.warmup else args.lr
            out = model(x)
            loss, parts = crossglg_loss(
                out, labels, k_gt, w_calibrate=cfg.loss.w_calibrate, calibrate=calibrate
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == 1 or step % args.log == 0:
                k = out["k_out"].detach()
                mse = float(calibration_loss(k, k_gt, "mean"))
                acc = float((out["logits"].detach().argmax(1) == labels).float().mean())
                mx, ent, corr = kout_stats(k, k_gt)
                rate = (time.perf_counter() - t0) / step
                cls = float(parts["cls"].detach())
                print(f"{step:4d} {cls:6.3f} {acc:5.2f}  {mse:.5f}    {mx:.3f}  {ent:.3f}  ", end="")
                print(f"{corr:+.3f}       {rate:.2f}")
            if step >= args.steps:
                break
        epoch += 1


if __name__ == "__main__":
    main()

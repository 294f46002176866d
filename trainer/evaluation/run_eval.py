"""Evaluate a run directory one-shot: features → NN / DC → ``results.json`` and pictures."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import config_from_dict
from trainer.engine.checkpoint import load_checkpoint
from trainer.engine.components import RunData, build_model, make_feeder, open_run_data
from trainer.engine.distributed import pick_device
from trainer.evaluation.oneshot import OneShotFeatures, evaluate_oneshot


class EvaluationError(ValueError):
    """A run cannot be evaluated; the message says what is missing."""


@torch.no_grad()
def extract(model: torch.nn.Module, feeder: Any, batch_size: int) -> dict[str, torch.Tensor]:
    """Skeleton-branch features (and the JID's ``k_out`` if any) of a feeder's samples, in order."""
    model.eval()
    feats, k_outs, labels = [], [], []
    for x, y, _ in feeder.epoch_batches(batch_size, 0):
        out = model(x)
        feats.append(out["features"].float())
        if out.get("k_out") is not None:
            k_outs.append(out["k_out"].float())
        labels.append(y)
    result = {"features": torch.cat(feats), "labels": torch.cat(labels)}
    if k_outs:
        result["k_out"] = torch.cat(k_outs)
    return result


def _checkpoint_path(run_dir: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).exists():
            return run_dir / name
    raise EvaluationError(
        f"{run_dir} has no best.pt or last.pt: train it first with `trainer run --run-dir {run_dir}`"
    )


def _novel_features(
    model: torch.nn.Module, config: Any, data: RunData, device: torch.device
) -> dict[str, Any]:
    split = data.split
    rows = np.concatenate([np.asarray(split.exemplars), np.asarray(split.queries)])
    out = extract(model, make_feeder(config, data, rows, device, train=False), config.data.eval_batch_size)
    class_ids = list(data.store.class_ids)
    novel_of = {class_ids.index(cid): i for i, cid in enumerate(data.novel_class_ids)}
    out["novel_labels"] = torch.tensor([novel_of[int(y)] for y in out["labels"].cpu()], device=device)
    return out


def _exemplar_poses(data: RunData) -> list[np.ndarray]:
    """Middle frame (person 0, x/y) of each protocol exemplar, for drawing the joint importance."""
    poses = []
    for i in np.asarray(data.split.exemplars):
        start, end = int(data.store.offsets[i]), int(data.store.offsets[i + 1])
        frame = np.asarray(data.store.frames[(start + end) // 2], dtype=np.float32)  # [M, V, 3]
        poses.append(frame[0, :, :2])
    return poses


def evaluate_run(
    run_dir: Path,
    methods: list[str] | None = None,
    exemplar_draws: int | None = None,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """One-shot evaluation of a run's best checkpoint; writes ``results.json`` and plots, returns them."""
    run_dir = Path(run_dir)
    path = _checkpoint_path(run_dir)
    state = load_checkpoint(path)
    config = config_from_dict(state["config"])
    methods = methods or list(config.eval.methods)
    draws = config.eval.exemplar_draws if exemplar_draws is None else exemplar_draws
    dev = pick_device(device)
    t0 = time.perf_counter()
    data = open_run_data(config)
    model = build_model(data.store.spec, dict(state["model_args"])).to(dev)
    model.load_state_dict(state["model"])
    base = extract(
        model, make_feeder(config, data, data.split.train, dev, train=False), config.data.eval_batch_size
    )
    novel = _novel_features(model, config, data, dev)
    feats = OneShotFeatures(
        base=base["features"],
        base_labels=base["labels"],
        novel=novel["features"],
        novel_labels=novel["novel_labels"],
        novel_class_ids=data.novel_class_ids,
    )
    scores = evaluate_oneshot(feats, methods, draws, config.eval.calibration, seed=seed)
    summary = _summary(run_dir)
    spec = data.store.spec
    names = [f"{cid} {spec.get_class(cid).name}" for cid in data.novel_class_ids]
    results = {
        "run": run_dir.name,
        "config_name": config.name,
        "dataset": config.data.dataset,
        "encoder": config.model.encoder,
        "crossglg": {"g2l": config.model.crossglg.g2l, "l2g": config.model.crossglg.l2g},
        "seed": config.seed,
        "checkpoint": path.name,
        "checkpoint_epoch": int(state["epoch"]),
        "train_classes": len(data.train_class_ids),
        "novel_classes": data.novel_class_ids,
        "novel_class_names": names,
        "inference_parameters": _inference_parameters(model),
        "feature_dim": int(feats.novel.shape[1]),
        "train_time_s": summary.get("train_time_s"),
        "eval_time_s": None,
        "exemplar_draws": draws,
        "methods": scores,
    }
    plots = run_dir / "plots"
    from trainer.engine.metrics import read_metrics
    from trainer.plots import plot_confusion, plot_joint_importance, plot_training_curves

    plot_training_curves(read_metrics(run_dir), plots / "training_curves.png")
    for method, entry in scores.items():
        plot_confusion(
            entry["fixed"]["confusion"],
            names,
            plots / f"confusion_{method}.png",
            f"{config.name}: {method} one-shot {100 * entry['fixed']['accuracy']:.1f}%",
        )
    if "k_out" in novel:
        k = novel["k_out"]
        importance = [k[novel["novel_labels"] == c].mean(0).cpu().numpy() for c in range(len(names))]
        results["joint_importance"] = {
            cid: w.tolist() for cid, w in zip(data.novel_class_ids, importance, strict=True)
        }
        plot_joint_importance(
            _exemplar_poses(data), importance, names, spec.edges, plots / "joint_importance.png"
        )
    results["eval_time_s"] = time.perf_counter() - t0
    (run_dir / "results.json").write_text(json.dumps(_json_safe(results), indent=2))
    return results


def _inference_parameters(model: torch.nn.Module) -> int:
    fn = getattr(model, "inference_parameters", None)
    return int(fn()) if callable(fn) else sum(p.numel() for p in model.parameters())


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "train_summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value

"""``trainer run``, ``trainer eval`` and ``trainer report``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from trainer.cli.app import app
from trainer.cli.errors import fail

console = Console(stderr=True)

# Errors a user can fix; each carries a one-line message. Imported lazily (torch stays out of --help).
_USER_ERRORS = (
    "trainer.config.ConfigError",
    "trainer.engine.components.RunSetupError",
    "trainer.engine.checkpoint.CheckpointError",
    "trainer.engine.loop.TrainingStopped",
    "trainer.evaluation.run_eval.EvaluationError",
    "trainer.evaluation.report.ReportError",
    "trainer.knowledge.pack.PackError",
    "trainer.data.store.StoreError",
    "trainer.data.protocol.ProtocolError",
    "dataspec.spec.SpecError",
)


def _user_error_types() -> tuple[type[BaseException], ...]:
    import importlib

    types = []
    for dotted in _USER_ERRORS:
        module, name = dotted.rsplit(".", 1)
        try:
            types.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def _resolve_run(config_name: str | None, overrides: list[str], run_dir: Path | None) -> tuple[object, Path]:
    """The config of the run and its directory; an existing run directory resumes with its saved config."""
    from trainer.config import ConfigError, config_from_dict, load_config
    from trainer.engine.checkpoint import load_checkpoint

    saved = None
    if run_dir is not None and (run_dir / "last.pt").exists():
        saved = config_from_dict(load_checkpoint(run_dir / "last.pt")["config"])
    elif run_dir is not None and (run_dir / "config.yaml").exists() and config_name is None:
        import yaml

        saved = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    if config_name is None:
        if saved is None:
            raise ConfigError("give --config (a YAML path or shipped name), or --run-dir of a run to resume")
        if overrides:
            raise ConfigError("--set needs --config; a resumed run keeps the config saved in its checkpoint")
        return saved, run_dir  # type: ignore[return-value]
    config = load_config(config_name, overrides)
    if run_dir is None:
        run_dir = Path("runs") / f"{config.name}-seed{config.seed}"
        if (run_dir / "last.pt").exists():
            saved = config_from_dict(load_checkpoint(run_dir / "last.pt")["config"])
    if saved is not None and saved.to_dict() != config.to_dict():
        differing = _diff(saved.to_dict(), config.to_dict())
        raise ConfigError(
            f"{run_dir} holds a run with another config ({', '.join(differing[:4])} differ): "
            "pick a new --run-dir, or resume it with `trainer run --run-dir` alone"
        )
    return config, run_dir


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            keys.append(f"{prefix}{key}")
    return keys


@app.command()
def run(
    config: str | None = typer.Option(None, "--config", "-c", help="Config YAML path or shipped name."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config value: --set optim.lr=0.05 (repeatable)."
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Run directory (default runs/<name>-seed<seed>); an existing one resumes."
    ),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate one-shot after training."),
) -> None:
    """Train (or resume) a run, then evaluate it one-shot. Under torchrun, trains on every GPU."""
    errors = _user_error_types()
    try:
        cfg, directory = _resolve_run(config, overrides, run_dir)
        _train_and_evaluate(cfg, directory, evaluate)
    except errors as exc:
        fail(str(exc))


def _train_and_evaluate(cfg: object, run_dir: Path, evaluate: bool) -> None:
    import torch

    from trainer.engine.components import open_run_data
    from trainer.engine.distributed import barrier, setup_distributed, teardown_distributed
    from trainer.engine.loop import is_finished, train

    open_run_data(cfg)  # type: ignore[arg-type]  # store and split errors before any file is written
    ctx = setup_distributed(cfg.run.device)  # type: ignore[attr-defined]
    try:
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(cfg.to_yaml())  # type: ignore[attr-defined]
        barrier(ctx)
        if is_finished(run_dir):
            if ctx.is_main:
                console.print(f"{run_dir} has finished training; evaluating its best checkpoint")
        else:
            if ctx.is_main:
                console.print(f"training {cfg.name} in {run_dir} on {ctx.device} × {ctx.world_size}")  # type: ignore[attr-defined]
            summary = train(cfg, run_dir, ctx)  # type: ignore[arg-type]
            if ctx.is_main:
                (run_dir / "train_summary.json").write_text(json.dumps(summary.__dict__, indent=2))
        if ctx.is_main and evaluate:
            _evaluate(run_dir, None, None, str(ctx.device))
        barrier(ctx)
    finally:
        teardown_distributed()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _evaluate(run_dir: Path, methods: list[str] | None, draws: int | None, device: str) -> None:
    from trainer.evaluation.run_eval import evaluate_run

    res = evaluate_run(run_dir, methods, draws, device=device)
    parts = []
    for method, entry in res["methods"].items():
        text = f"{method} {100 * entry['fixed']['accuracy']:.1f}%"
        if "draws" in entry:
            d = entry["draws"]
            text += f" (draws {100 * d['mean']:.1f} ± {100 * d['std']:.1f})"
        parts.append(text)
    console.print(
        f"[green]{res['run']}[/green] one-shot on {len(res['novel_classes'])} novel classes: "
        + ", ".join(parts)
    )


@app.command("eval")
def eval_command(
    run: Path = typer.Option(..., "--run", help="Run directory to evaluate."),
    method: str = typer.Option("both", "--method", help="nn, dc or both."),
    exemplar_draws: int | None = typer.Option(
        None,
        "--exemplar-draws",
        help="Also score K random exemplar draws (mean ± std); default from the config.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
) -> None:
    """One-shot evaluation of a run's best checkpoint: results.json, confusion matrices, joint importance."""
    if method not in ("nn", "dc", "both"):
        raise typer.BadParameter(f"'{method}' is not a method: use nn, dc or both", param_hint="--method")
    errors = _user_error_types()
    try:
        _evaluate(run, ["nn", "dc"] if method == "both" else [method], exemplar_draws, device)
    except errors as exc:
        fail(str(exc))


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with results.json)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the Markdown here (default: print)."
    ),
) -> None:
    """A Markdown table of several runs: one-shot accuracy by method, parameters, training time."""
    from trainer.evaluation.report import ReportError, render_report

    try:
        text = render_report(runs)
    except ReportError as exc:
        fail(str(exc))
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")

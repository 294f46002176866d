"""``trainer models``: the registered encoders and their CrossGLG variants with parameter counts."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from trainer.cli.app import app

VARIANTS: dict[str, tuple[bool, bool]] = {
    "plain": (False, False),
    "g2l": (True, False),
    "l2g": (False, True),
    "both": (True, True),
}


def model_table(dataset: str, num_classes: int, text_dim: int) -> list[dict[str, object]]:
    """One row per encoder × variant: training and inference parameter counts and the overhead."""
    from dataspec import SpecError, load_spec
    from trainer.models import list_models
    from trainer.models.crossglg import CrossGLG

    try:
        spec = load_spec(dataset)
    except SpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dataset") from None
    rows: list[dict[str, object]] = []
    for encoder in list_models():
        base = None
        for variant, (g2l, l2g) in VARIANTS.items():
            model = CrossGLG(encoder, num_classes, spec, text_dim=text_dim, g2l=g2l, l2g=l2g)
            inference = model.inference_parameters()
            base = inference if base is None else base
            rows.append(
                {
                    "encoder": encoder,
                    "variant": variant,
                    "g2l": g2l,
                    "l2g": l2g,
                    "training_parameters": model.training_parameters(),
                    "inference_parameters": inference,
                    "inference_overhead": inference - base,
                }
            )
    return rows


@app.command("models")
def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
    dataset: str = typer.Option(
        "ntu120", "--dataset", help="Dataset spec that sets joints, graph and persons."
    ),
    num_classes: int = typer.Option(100, "--num-classes", min=1, help="Training classes of the classifier."),
    text_dim: int = typer.Option(384, "--text-dim", min=1, help="Joint-text embedding size D."),
) -> None:
    """List encoders × CrossGLG variants (plain, g2l, l2g, both) with training and inference parameters."""
    rows = model_table(dataset, num_classes, text_dim)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Models for {dataset}, {num_classes} classes (text dim {text_dim})")
    for col in ("encoder", "variant", "training params", "inference params", "inference overhead"):
        table.add_column(col, justify="right" if "params" in col or "overhead" in col else "left")
    for r in rows:
        table.add_row(
            str(r["encoder"]),
            str(r["variant"]),
            f"{r['training_parameters']:,}",
            f"{r['inference_parameters']:,}",
            f"+{r['inference_overhead']:,}",
        )
    Console().print(table)

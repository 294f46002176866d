"""``kbgen embed`` (write a knowledge pack) and ``kbgen pack info`` (inspect one)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer
from rich.table import Table

from kbgen.cli.app import app
from kbgen.cli.options import (
    DatasetOption,
    DbOption,
    JsonOption,
    console,
    counted_progress,
    err_console,
    fail,
    load_dataset_spec,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from kbgen.embed.cache import Encoder

pack_app = typer.Typer(help="Inspect knowledge packs (*.kpack.safetensors).", no_args_is_help=True)
app.add_typer(pack_app, name="pack")


class _ProgressEncoder:
    """Wraps an encoder so that the texts it is actually asked to encode drive a progress bar."""

    def __init__(self, inner: Encoder, progress: Progress) -> None:
        self._inner = inner
        self._progress = progress
        self.key = inner.key

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        task = self._progress.add_task("embedding", total=len(texts))
        return self._inner.encode(texts, on_batch=lambda n: self._progress.advance(task, n))


@app.command()
def embed(
    dataset: DatasetOption,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Pack file to write (default: packs/<dataset>.kpack.safetensors)."
    ),
    encoder: str = typer.Option(
        "sentence-transformers/all-MiniLM-L6-v2",
        "--encoder",
        "-e",
        help="Hugging Face model id or local model directory (paper: microsoft/deberta-v2-xlarge).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Sentences per forward pass."),
    pooling: str = typer.Option("mean", "--pooling", help="mean (masked mean of tokens) or cls."),
    normalize: bool = typer.Option(False, "--normalize/--no-normalize", help="L2-normalise the embeddings."),
    allow_download: bool = typer.Option(
        False, "--allow-download", help="Let transformers download a model missing from the local cache."
    ),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Leave out incomplete classes (listed) instead of failing."
    ),
    db: DbOption = None,
) -> None:
    """Embed the current descriptions of a dataset and write its knowledge pack for the trainer."""
    from kbgen.embed.encoder import POOLINGS, EncoderConfig, EncoderError, TextEncoder
    from kbgen.embed.pack_writer import PACK_SUFFIX, PackError, write_pack
    from kbgen.store.db import session_scope
    from kbgen.store.errors import StoreError

    if pooling not in POOLINGS:
        raise typer.BadParameter(f"use one of {', '.join(POOLINGS)}", param_hint="--pooling")
    if not (device == "cpu" or device.startswith("cuda")):
        raise typer.BadParameter("use cpu or cuda (cuda:N)", param_hint="--device")
    spec = load_dataset_spec(dataset)
    path = output or Path("packs") / f"{spec.name}{PACK_SUFFIX}"
    config = EncoderConfig(
        name=encoder,
        pooling=pooling,  # type: ignore[arg-type]  # checked against POOLINGS above
        normalize=normalize,
        device=device,
        batch_size=batch_size,
        allow_download=allow_download,
    )
    try:
        text_encoder = TextEncoder(config)
        progress = counted_progress(err_console)
        with progress, session_scope(db) as session:
            result = write_pack(
                session,
                spec,
                _ProgressEncoder(text_encoder, progress),
                path,
                encoder_info=text_encoder.describe(),
                allow_missing=allow_missing,
            )
    except (EncoderError, PackError, StoreError) as exc:
        fail(str(exc))
    meta = result.metadata
    stats = result.stats
    console.print(
        f"[green]Wrote[/green] {result.path}: {len(result.class_ids)} classes × {spec.num_joints} joints, "
        f"D={meta['dim']}, encoder {meta['encoder']} ({meta['pooling']}"
        f"{', L2' if normalize else ''}), kb revision {meta['kb_revision'][:12]}",
        highlight=False,
    )
    console.print(
        f"texts: {stats.requested} ({stats.distinct} distinct), {stats.cached} from the cache, "
        f"{stats.encoded} encoded",
        highlight=False,
    )
    if result.missing:
        console.print(f"[yellow]Left out {len(result.missing)} incomplete class(es):[/yellow]")
        for m in result.missing:
            console.print(f"  {m.class_id}: {m.reason}", highlight=False)


def _db_status(metadata: dict[str, str], db: str | None) -> tuple[str, str]:
    """Whether the pack holds the knowledge the database would give now: ``(state, explanation)``.

    ``state`` is ``up to date``, ``older`` or ``unknown`` (no such dataset or database).
    """
    from dataspec import SpecError, load_spec
    from kbgen.embed.pack_writer import PackError, snapshot
    from kbgen.store.db import session_scope
    from kbgen.store.errors import StoreError

    try:
        spec = load_spec(metadata["dataset"])
        class_ids = json.loads(metadata["class_ids"])
        with session_scope(db) as session:
            snap = snapshot(session, spec, class_ids)
    except (SpecError, PackError, StoreError) as exc:
        return "unknown", f"cannot compare with the knowledge base: {exc}"
    if snap.missing:
        return "older", (
            f"OLDER than the knowledge base: {len(snap.missing)} of its classes are now incomplete "
            f"({snap.missing[0].class_id}: {snap.missing[0].reason})"
        )
    now = snap.revision
    if now == metadata.get("kb_revision"):
        return "up to date", "up to date"
    return "older", (
        f"OLDER than the knowledge base (pack {metadata.get('kb_revision', '?')[:12]}, database "
        f"{now[:12]}): run `kbgen embed --dataset {spec.name}` again"
    )


def _plot_similarity(global_text: np.ndarray, labels: list[str], path: Path) -> None:
    """Class × class cosine similarity of the global embeddings as a heat map (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    vectors = global_text.astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = vectors @ vectors.T
    n = len(labels)
    size = min(6 + n * 0.12, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(sim, cmap="viridis", vmin=min(0.0, float(sim.min())), vmax=1.0)
    step = max(1, n // 40)  # at most ~40 labelled ticks, legible at any class count
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7)
    ax.set_title("Cosine similarity of global-description embeddings", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@pack_app.command("info")
def pack_info(
    path: Path = typer.Argument(..., help="The *.kpack.safetensors file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a class×class similarity heat map (PNG)."),
    compare_db: bool = typer.Option(
        True, "--compare/--no-compare", help="Compare the pack's kb revision with the knowledge base now."
    ),
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Show a pack's metadata, shapes, classes and encoder, and whether the knowledge base changed since."""
    from trainer.knowledge.pack import PackError, read_pack_file

    try:
        tensors, meta = read_pack_file(path)
    except PackError as exc:
        fail(str(exc))
    class_ids = json.loads(meta["class_ids"])
    status = _db_status(meta, db) if compare_db else None
    if as_json:
        shapes = {name: list(tensors[name].shape) for name in ("joint_text", "global_text", "key_joints")}
        report = {"path": str(path), "metadata": _parsed(meta), "shapes": shapes}
        if status is not None:
            report["knowledge_base"] = {"state": status[0], "detail": status[1]}
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_info(path, tensors, meta, status)
    if plot is not None:
        names = json.loads(meta.get("class_names", "[]"))
        # Names make a small heat map readable; with many classes the ids alone fit.
        labels = (
            [f"{c} {n}" for c, n in zip(class_ids, names, strict=True)] if len(names) <= 30 else class_ids
        )
        _plot_similarity(tensors["global_text"].float().numpy(), labels, plot)
        if not as_json:
            console.print(f"[green]Wrote[/green] {plot}", highlight=False)


def _parsed(meta: dict[str, str]) -> dict[str, object]:
    """Metadata with its JSON-valued entries decoded (for ``--json``)."""
    out: dict[str, object] = {}
    for key, value in meta.items():
        try:
            out[key] = json.loads(value) if value[:1] in "[{" or value in ("true", "false") else value
        except json.JSONDecodeError:
            out[key] = value
    return out


def _print_info(path: Path, tensors: dict, meta: dict[str, str], status: tuple[str, str] | None) -> None:
    """The human-readable table of ``pack info``."""
    class_ids = json.loads(meta["class_ids"])
    joint_names = json.loads(meta["joint_names"])
    missing = json.loads(meta.get("missing_classes", "[]"))
    table = Table(show_header=False, box=None)
    table.add_row("pack", str(path))
    table.add_row("dataset", meta.get("dataset", "?"))
    table.add_row("format", f"{meta.get('format')} v{meta.get('format_version')}")
    table.add_row("encoder", meta.get("encoder", "?"))
    table.add_row("pooling", f"{meta.get('pooling', '?')}, normalize={meta.get('normalize', '?')}")
    table.add_row("D", meta.get("dim", "?"))
    for name in ("joint_text", "global_text", "key_joints"):
        t = tensors[name]
        table.add_row(name, f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}")
    shown = ", ".join(class_ids[:12]) + (f" … ({len(class_ids)} in all)" if len(class_ids) > 12 else "")
    table.add_row("classes", shown or "none")
    table.add_row("joints", f"{len(joint_names)}: {', '.join(joint_names[:4])} …")
    if missing:
        table.add_row("left out", ", ".join(m["class_id"] for m in missing))
    table.add_row("kb revision", meta.get("kb_revision", "?"))
    table.add_row("created", meta.get("created_at", "?"))
    if status is not None:
        colour = {"up to date": "green", "older": "yellow"}.get(status[0], "yellow")
        table.add_row("knowledge base", f"[{colour}]{status[1]}[/{colour}]")
    console.print(table, highlight=False)

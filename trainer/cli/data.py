"""``trainer prepare`` and ``trainer data info|sample|split``: build and inspect prepared stores."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from trainer.cli.app import app
from trainer.cli.errors import fail

data_app = typer.Typer(
    help="Inspect prepared skeleton stores: counts, one sample, protocol splits.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

console = Console()
err = Console(stderr=True)


def _open_store(path: Path) -> Any:
    from trainer.data.store import PreparedStore, StoreError

    try:
        return PreparedStore.open(path)
    except StoreError as exc:
        fail(str(exc))


@app.command("prepare")
def prepare_command(
    dataset: str = typer.Option(
        ..., "--dataset", help="Dataset spec name (ntu60, ntu120, nwucla) or YAML path."
    ),
    raw: Path = typer.Option(..., "--raw", help="Folder with the raw files (.skeleton, NW-UCLA .json)."),
    out: Path = typer.Option(..., "--out", help="Folder of the prepared store (created)."),
    workers: int = typer.Option(
        max(1, min(os.cpu_count() or 1, 8)), "--workers", min=1, help="Worker processes reading raw files."
    ),
    missing: Path | None = typer.Option(
        None,
        "--missing",
        help="Official samples-with-missing-skeletons list (default: one found in or above --raw).",
    ),
    align_view: bool = typer.Option(
        False, "--align-view", help="Rotate each sample to actor 1's frame-0 view."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a finished or unfinished store at --out."
    ),
) -> None:
    """Prepare a raw skeleton dataset into a store (denoised, centred, float16, memory-mappable)."""
    from dataspec import SpecError, load_spec
    from trainer.data.prepare import PrepareError, prepare_dataset

    try:
        spec = load_spec(dataset)
    except SpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dataset") from None
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>6.0f} files/s  {task.fields[skipped]} skipped"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(f"prepare {spec.name}", total=None, rate=0.0, skipped=0)
        started: list[float] = []

        def on_progress(done: int, total: int, skipped: int) -> None:
            import time

            now = time.perf_counter()
            if not started:
                started.extend([now, done - 1])
            rate = (done - started[1]) / max(now - started[0], 1e-9)
            progress.update(task, completed=done, total=total, rate=rate, skipped=skipped)

        try:
            summary = prepare_dataset(
                spec,
                raw,
                out,
                workers=workers,
                missing_list=missing,
                align_view=align_view,
                overwrite=overwrite,
                on_progress=on_progress,
            )
        except PrepareError as exc:
            progress.stop()
            fail(str(exc))
        except OSError as exc:  # an unwritable --out, a full disk, an unreadable raw file
            progress.stop()
            fail(
                f"{exc.strerror or exc.__class__.__name__}: {exc.filename or out}; "
                "check that --raw is readable and --out is a writable folder with free space"
            )
        except KeyboardInterrupt:
            progress.stop()
            err.print(
                "[yellow]interrupted:[/yellow] run the same command again to resume from the last checkpoint"
            )
            raise typer.Exit(130) from None
    reasons = ", ".join(f"{n} {code}" for code, n in summary.skipped_by_reason.items())
    resumed = f" (resumed at file {summary.resumed_from})" if summary.resumed_from else ""
    console.print(
        f"prepared {summary.prepared:,} of {summary.found:,} files{resumed}; skipped {summary.skipped:,}"
        + (f" ({reasons})" if reasons else "")
        + f"; {summary.frames:,} frames, {summary.bytes_on_disk / 2**20:,.1f} MiB → {out} "
        f"in {summary.seconds:.1f} s ({summary.files_per_second:,.0f} files/s)",
        highlight=False,
    )
    if summary.skipped:
        console.print(f"skipped files and reasons: {out / 'prepare_report.json'}", highlight=False)


def store_info(store: Any) -> dict[str, Any]:
    """Counts, classes, lengths and skip reasons of a store, as plain data."""
    import numpy as np

    lengths = store.lengths
    per_class = np.bincount(store.labels, minlength=len(store.class_ids))
    report = store.report() or {}
    manifest = store.manifest
    return {
        "path": str(store.path),
        "dataset": store.spec.name,
        "samples": len(store),
        "frames": int(lengths.sum()),
        "frame_shape": list(store.frames.shape[1:]),
        "dtype": str(store.frames.dtype),
        "classes": len(store.class_ids),
        "classes_present": int((per_class > 0).sum()),
        "samples_per_class": {"min": int(per_class.min()), "max": int(per_class.max())},
        "length": {
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 1),
            "max": int(lengths.max()),
        },
        "meta_columns": sorted(store.meta),
        "files_found": report.get("files_found", manifest.get("counts", {}).get("files_found")),
        "skipped": report.get("skipped", 0),
        "skipped_by_reason": report.get("skipped_by_reason", {}),
        "skipped_examples": report.get("skipped_files", [])[:10],
        "preprocessing": manifest.get("preprocessing", {}),
        "created": manifest.get("created"),
    }


@data_app.command("info")
def info_command(
    store_path: Path = typer.Argument(..., metavar="STORE", help="Folder of a prepared store."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Counts, classes, lengths, and the skipped raw files with their reasons."""
    info = store_info(_open_store(store_path))
    if as_json:
        print(json.dumps(info, indent=1))
        return
    table = Table(title=f"{info['dataset']} store {info['path']}", show_header=False)
    table.add_row("samples", f"{info['samples']:,} of {info['files_found']:,} files")
    table.add_row("frames", f"{info['frames']:,} × {info['frame_shape']} {info['dtype']}")
    table.add_row("classes", f"{info['classes_present']} of {info['classes']} present")
    spc = info["samples_per_class"]
    table.add_row("samples per class", f"{spc['min']} … {spc['max']}")
    ln = info["length"]
    table.add_row("frames per sample", f"{ln['min']} … {ln['max']} (mean {ln['mean']})")
    table.add_row("metadata", ", ".join(info["meta_columns"]))
    reasons = ", ".join(f"{n} {code}" for code, n in info["skipped_by_reason"].items()) or "none"
    table.add_row("skipped", f"{info['skipped']:,} ({reasons})")
    for item in info["skipped_examples"]:
        table.add_row("", f"{item['file']}: {item['reason']}")
    console.print(table)


@data_app.command("sample")
def sample_command(
    store_path: Path = typer.Argument(..., metavar="STORE", help="Folder of a prepared store."),
    name: str = typer.Argument(..., help="Sample name, e.g. S001C001P001R001A001."),
    as_json: bool = typer.Option(False, "--json", help="Print the sample with its array as JSON."),
) -> None:
    """One sample: label, metadata and its frames × persons × joints × xyz array."""
    store = _open_store(store_path)
    try:
        i = store.index_of(name)
    except KeyError as exc:
        fail(f"{exc.args[0]}: see `trainer data info {store_path}` for skipped files")
    frames = store.sample(i)
    class_id = store.class_ids[int(store.labels[i])]
    doc = {
        "name": name,
        "index": i,
        "label": int(store.labels[i]),
        "class_id": class_id,
        "class_name": store.spec.get_class(class_id).name,
        "meta": {k: int(v[i]) for k, v in store.meta.items()},
        "shape": list(frames.shape),
        "layout": "[frames, persons, joints, xyz]",
    }
    if as_json:
        doc["frames"] = frames.round(5).tolist()
        print(json.dumps(doc))
        return
    for key, value in doc.items():
        console.print(f"{key}: {value}", highlight=False)


@data_app.command("split")
def split_command(
    store_path: Path = typer.Argument(..., metavar="STORE", help="Folder of a prepared store."),
    protocol: str = typer.Option(
        "oneshot", "--protocol", help="oneshot, or a standard split: xsub, xset, xview."
    ),
    train_classes: int | None = typer.Option(
        None, "--train-classes", help="One-shot: size of the auxiliary training subset (default: all)."
    ),
    partial: bool = typer.Option(
        False, "--partial", help="One-shot on a partial store: skip absent novel classes and exemplars."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Sizes of each part of a protocol's split of the store."""
    from trainer.data.protocol import ProtocolError, oneshot_split, standard_split

    store = _open_store(store_path)
    try:
        if protocol == "oneshot":
            split = oneshot_split(store, train_classes, partial=partial)
            doc: dict[str, Any] = {
                "protocol": protocol,
                **split.sizes(),
                "validation_rule": split.validation_rule,
                "train_class_ids": split.train_class_ids,
                "novel_class_ids": split.novel_class_ids,
            }
        else:
            std = standard_split(store, protocol)
            doc = {"protocol": protocol, **std.sizes(), "rule": std.rule}
    except ProtocolError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(doc, indent=1))
        return
    table = Table(title=f"{store.spec.name} {protocol} split", show_header=False)
    for key, value in doc.items():
        shown = (
            ", ".join(value) if isinstance(value, list) else f"{value:,}" if isinstance(value, int) else value
        )
        table.add_row(key, str(shown))
    console.print(table)

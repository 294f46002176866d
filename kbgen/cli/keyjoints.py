"""``kbgen keyjoints`` (compute k_gt, or --explain one class) and ``kbgen plot`` (draw them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dataspec import DatasetSpec
from kbgen.cli.app import app
from kbgen.cli.options import (
    DatasetOption,
    DbOption,
    console,
    counted_progress,
    fail,
    open_dataset,
    user_errors,
)
from kbgen.store import db as store_db
from kbgen.store import repo

if TYPE_CHECKING:
    # Imported lazily at run time so that `kbgen --help` does not load the NLP stack.
    from kbgen.keyjoints.lexicon import Lexicon
    from kbgen.keyjoints.phrases import PhraseExtractor
    from kbgen.keyjoints.storage import Settings

BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="Noun-phrase backend: stanza (needs its English models on disk) or spacy. "
        "Default: stanza when its models are present, else spacy.",
        show_default=False,
    ),
]
StanzaDirOption = Annotated[
    str | None,
    typer.Option(
        "--stanza-dir",
        envvar="STANZA_RESOURCES_DIR",
        help="Folder with stanza's models (nothing is ever downloaded). Env: STANZA_RESOURCES_DIR.",
        show_default=False,
    ),
]


def _class_ids(spec: DatasetSpec, classes: str | None) -> list[str]:
    if not classes:
        return spec.class_ids
    with user_errors():
        return [spec.get_class(c).id for c in classes.split(",") if c.strip()]


def _extractor(backend: str | None, stanza_dir: str | None) -> PhraseExtractor:
    """The noun-phrase backend asked for (default: stanza when its models are present, else spaCy)."""
    from kbgen.keyjoints.phrases import BackendUnavailable, default_backend, get_extractor

    name = backend or default_backend(stanza_dir)
    try:
        return get_extractor(name, stanza_dir)
    except BackendUnavailable as exc:
        fail(str(exc))


@app.command()
def keyjoints(
    dataset: DatasetOption,
    backend: BackendOption = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Only these classes, comma-separated (A1,A7).", show_default=False),
    ] = None,
    recompute_all: Annotated[
        bool, typer.Option("--all", help="Recompute every class, not only the missing or out-of-date ones.")
    ] = False,
    explain: Annotated[
        str | None,
        typer.Option(
            "--explain", help="Show every noun phrase of one class and the joints it hit.", show_default=False
        ),
    ] = None,
    smoothing: Annotated[
        float, typer.Option("--smoothing", min=0.0, max=1.0, help="Mix each row with uniform: (1-s)*k + s/J.")
    ] = 0.0,
    key_part_weight: Annotated[
        float, typer.Option("--key-part-weight", min=0.0, help="Weight of each listed key body part.")
    ] = 1.0,
    stanza_dir: StanzaDirOption = None,
    db: DbOption = None,
) -> None:
    """Compute key-joint distributions (k_gt) from the global descriptions; only missing or stale ones."""
    from kbgen.keyjoints.lexicon import LexiconError, load_lexicon
    from kbgen.keyjoints.storage import Settings, compute_for_class, why_outdated

    spec = open_dataset(dataset, db)
    try:
        lexicon = load_lexicon()
    except LexiconError as exc:
        fail(str(exc))
    extractor = _extractor(backend, stanza_dir)
    settings = Settings(extractor.name, lexicon.sha256, key_part_weight, smoothing)
    if explain:
        _explain(spec, explain, extractor, lexicon, settings, db)
        return
    todo: list[tuple[str, str]] = []
    no_text: list[str] = []
    with user_errors(), store_db.session_scope(db) as s:
        for cid in _class_ids(spec, classes):
            class_row = repo.get_class(s, spec.name, cid)
            source = repo.current_description(s, class_row, "global")
            if source is None:
                no_text.append(cid)
                continue
            reason = why_outdated(repo.current_keyjoints(s, class_row), source, settings)
            if recompute_all or reason:
                todo.append((cid, reason or "--all"))
    uniform: list[str] = []
    with counted_progress(console) as progress:
        task = progress.add_task(f"key joints ({extractor.name})", total=len(todo))
        for cid, _reason in todo:
            # One short transaction per class: an interrupted run keeps what it computed.
            with user_errors(), store_db.session_scope(db) as s:
                row = compute_for_class(
                    s, spec, repo.get_class(s, spec.name, cid), extractor, lexicon, settings
                )
                if row is not None and row.is_uniform:
                    uniform.append(cid)
            progress.advance(task)
    total = len(_class_ids(spec, classes))
    console.print(
        f"{spec.name}: computed {len(todo)} with {escape(extractor.version)}, "
        f"{total - len(todo) - len(no_text)} already up to date, {len(no_text)} without a global description",
        soft_wrap=True,
    )
    if uniform:
        console.print(f"[yellow]uniform (no body part found):[/] {', '.join(uniform)}", soft_wrap=True)
    if no_text:
        shown = ", ".join(no_text[:10]) + (" ..." if len(no_text) > 10 else "")
        console.print(f"[yellow]no global description:[/] {shown}", soft_wrap=True)


def _explain(
    spec: DatasetSpec,
    class_id: str,
    extractor: PhraseExtractor,
    lexicon: Lexicon,
    settings: Settings,
    db: str | None,
) -> None:
    """Print one class's phrases, the joints each hit and the top joints (stored row if up to date)."""
    from kbgen.keyjoints.distribution import compute_keyjoints, top_joints
    from kbgen.keyjoints.storage import why_outdated

    with user_errors(), store_db.session_scope(db) as s:
        class_row = repo.get_class(s, spec.name, class_id)
        source = repo.current_description(s, class_row, "global")
        if source is None:
            fail(f"class {class_row.class_id} has no global description yet: generate or import one first")
        stored = repo.current_keyjoints(s, class_row)
        reason = why_outdated(stored, source, settings)
        text, parts, version = source.text, list(source.key_body_parts or []), source.version
        label = f"{class_row.class_id} {class_row.name}"
        if stored is not None and reason is None:
            weights, phrases, uniform = list(stored.weights), list(stored.phrases), stored.is_uniform
            origin = f"stored, {stored.backend_version}"
    if stored is None or reason is not None:
        result = compute_keyjoints(
            spec, text, parts, extractor, lexicon=lexicon,
            key_part_weight=settings.key_part_weight, smoothing=settings.smoothing,
        )  # fmt: skip
        weights, phrases, uniform = result.weights, result.phrases_json(), result.is_uniform
        origin = f"computed now ({reason}; not stored, run `kbgen keyjoints`), {result.backend_version}"
    console.print(f"[bold]{escape(label)}[/] ({spec.name}, global description v{version}; {escape(origin)})")
    console.print(escape(text))
    console.print(f"[bold]Key body parts:[/] {escape(', '.join(parts)) or '-'}")
    table = Table("Phrase", "Source", "Joints hit", "Weight")
    for p in phrases:
        hit = ", ".join(p["joints"]) or "-"
        weight = "negated" if p["negated"] else f"{p['weight']:g}"
        style = "dim" if not p["joints"] else ("red" if p["negated"] else "")
        table.add_row(escape(p["phrase"]), p.get("source", "text"), escape(hit), weight, style=style)
    console.print(table)
    flag = " [yellow](uniform: nothing mapped)[/]" if uniform else ""
    top = ", ".join(f"{name} {w:.3f}" for name, w in top_joints(spec, weights, 6))
    console.print(f"[bold]Top joints:[/] {escape(top)}{flag}")


@app.command()
def plot(
    class_ids: Annotated[
        list[str], typer.Argument(help="Class ids to draw, e.g. A1 A7 A13.", show_default=False)
    ],
    dataset: DatasetOption,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Image file; .png, .svg or .pdf by its suffix.")
    ] = Path("keyjoints.png"),
    columns: Annotated[int, typer.Option("--columns", min=1, help="Panels per row.")] = 4,
    db: DbOption = None,
) -> None:
    """Draw the stored key-joint distributions on the skeleton, one panel per class."""
    from kbgen.keyjoints.plot import Panel, plot_keyjoints

    if output.suffix.lower() not in (".png", ".svg", ".pdf"):
        fail(f"--output '{output}' must end in .png, .svg or .pdf")
    spec = open_dataset(dataset, db)
    panels: list[Panel] = []
    with user_errors(), store_db.session_scope(db) as s:
        for cid in class_ids:
            class_row = repo.get_class(s, spec.name, cid)
            stored = repo.current_keyjoints(s, class_row)
            if stored is None:
                fail(
                    f"class {class_row.class_id} has no key-joint distribution: "
                    f"run `kbgen keyjoints --dataset {spec.name}` first"
                )
            marks = " (uniform)" if stored.is_uniform else (" (stale)" if stored.stale else "")
            panels.append(Panel(f"{class_row.class_id} {class_row.name}{marks}", list(stored.weights)))
    path = plot_keyjoints(spec, panels, output, columns=columns)
    console.print(f"wrote {path} ({len(panels)} classes)", soft_wrap=True)

"""``kbgen generate``: ask an LLM about every class of a dataset and store the answers."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kbgen.cli.app import app
from kbgen.cli.options import DatasetOption, DbOption, console, fail, load_dataset_spec, user_errors
from kbgen.generate import ClassOutcome, GenerateListener, GenerateSummary, TaskResult, generate
from kbgen.llm.client import CallAttempt, ClientSettings, LlmClient
from kbgen.llm.embedded import EmbeddedModelError, EmbeddedServer
from kbgen.llm.templates import TemplateError

# Embedded llama.cpp slots: more than the cores only adds memory, not speed.
MAX_EMBEDDED_SLOTS = 4
# The 135M embedded model loops ("... of the person performing the action of ...") without a
# frequency penalty; 0.4 gave bounded, coherent sentences (repeat_penalty 1.15 gave garbage).
EMBEDDED_FREQUENCY_PENALTY = 0.4
REMOTE_TIMEOUT_S = 300.0
# On a busy 2-core machine a 25-joint answer from 4 parallel slots took over 300 s (3 of 240
# calls timed out and were retried in a full ntu120 run): be patient with the local model.
EMBEDDED_TIMEOUT_S = 900.0
# Show every class in the final table up to this many; beyond, only the failed ones.
FULL_TABLE_MAX = 20


class _ProgressListener(GenerateListener):
    """A rich progress bar over the (class, prompt) tasks with done/failed/retried/token counts."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task_id = progress.add_task("generating", total=None, stats="")
        self.lock = threading.Lock()
        self.done = self.failed = self.retried = self.tokens = 0

    def planned(self, classes: int, tasks: int) -> None:
        self.progress.update(self.task_id, total=tasks, description=f"{classes} classes")
        self._refresh()

    def attempt(self, attempt: CallAttempt) -> None:
        with self.lock:
            if attempt.attempt > 1:
                self.retried += 1
            self.tokens += (attempt.prompt_tokens or 0) + (attempt.completion_tokens or 0)
        self._refresh()

    def task_done(self, result: TaskResult) -> None:
        with self.lock:
            if result.ok:
                self.done += 1
            else:
                self.failed += 1
        self.progress.advance(self.task_id)
        self._refresh()

    def _refresh(self) -> None:
        stats = (
            f"[green]{self.done} done[/] [red]{self.failed} failed[/] "
            f"[yellow]{self.retried} retried[/] {self.tokens:,} tokens"
        )
        self.progress.update(self.task_id, stats=stats)


@app.command("generate")
def generate_command(
    dataset: DatasetOption,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes", "-c", help="Comma-separated class ids (A1,A7 or a01). Default: all classes."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Ask again even for classes whose texts are complete.")
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", min=1, max=256, help="Requests in flight at once.")
    ] = 4,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            envvar="OPENAI_BASE_URL",
            help="OpenAI-compatible endpoint, e.g. http://host:8000/v1. Default: the embedded local model. "
            "Env: OPENAI_BASE_URL.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", envvar="KBGEN_MODEL", help="Model name at --base-url. Env: KBGEN_MODEL."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="OPENAI_API_KEY",
            help="API key for --base-url (never stored). Env: OPENAI_API_KEY.",
            show_default=False,
            show_envvar=False,
        ),
    ] = None,
    local_model: Annotated[
        Path | None,
        typer.Option(
            "--local-model",
            help="Serve this GGUF file with the embedded llama.cpp server instead of SmolLM2-135M.",
            dir_okay=False,
        ),
    ] = None,
    db: DbOption = None,
    max_retries: Annotated[
        int, typer.Option("--max-retries", min=0, help="Retries of a request on timeouts, 429 and 5xx.")
    ] = 5,
    max_invalid: Annotated[
        int, typer.Option("--max-invalid", min=0, help="Re-asks after an answer that fails validation.")
    ] = 2,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1.0,
            help=f"Seconds to wait for one answer. Default: {REMOTE_TIMEOUT_S:.0f}; "
            f"{EMBEDDED_TIMEOUT_S:.0f} for the embedded model.",
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature.")] = 0.2,
    frequency_penalty: Annotated[
        float | None,
        typer.Option(
            "--frequency-penalty",
            help=f"Penalty on repeated tokens. Default: the endpoint's own; {EMBEDDED_FREQUENCY_PENALTY} "
            "for the embedded model.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Ask the LLM two prompts per class (global action, joint motions) and store every answer.

    Classes whose texts are already complete are skipped (use --force to ask again); a killed
    run keeps every answer it got, and a rerun continues where it stopped.
    """
    spec = load_dataset_spec(dataset)
    class_ids = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    if class_ids:
        with user_errors():
            class_ids = [spec.get_class(c).id for c in class_ids]
    if base_url and local_model:
        fail("use either --base-url (a remote endpoint) or --local-model (a GGUF served here), not both")
    if base_url and not model:
        fail("--model is required with --base-url: name the model the endpoint serves")

    with ExitStack() as stack:
        if base_url:
            endpoint, model_name = base_url, str(model)
            penalty = frequency_penalty
        else:
            try:
                server = stack.enter_context(
                    EmbeddedServer(local_model, parallel=min(concurrency, MAX_EMBEDDED_SLOTS))
                )
            except EmbeddedModelError as exc:
                fail(str(exc))
            console.print(f"[dim]embedded llama.cpp server: {server.model} at {server.base_url}[/]")
            endpoint, model_name = server.base_url, model or server.model
            penalty = EMBEDDED_FREQUENCY_PENALTY if frequency_penalty is None else frequency_penalty
        settings = ClientSettings(
            base_url=endpoint,
            model=model_name,
            # The key is for the remote endpoint only; the embedded server needs none.
            api_key=(api_key or "") if base_url else "",
            timeout_s=timeout or (REMOTE_TIMEOUT_S if base_url else EMBEDDED_TIMEOUT_S),
            max_retries=max_retries,
            max_invalid=max_invalid,
            temperature=temperature,
            frequency_penalty=penalty,
        )
        client = LlmClient(settings)
        stack.callback(client.close)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
        )
        try:
            with progress, user_errors():
                summary = generate(
                    spec,
                    client,
                    class_ids=class_ids,
                    force=force,
                    concurrency=concurrency,
                    db=db,
                    listener=_ProgressListener(progress),
                )
        except TemplateError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted:[/] every finished answer is saved; rerun to continue")
            raise typer.Exit(130) from None
    _print_summary(summary)
    if summary.fatal_error:
        fail(summary.fatal_error)
    if summary.count("failed"):
        fail(
            f"{summary.count('failed')} class(es) failed (see `kbgen logs --failed`); "
            "rerun the same command to retry them, finished answers are kept"
        )


def _print_summary(summary: GenerateSummary) -> None:
    rows: list[ClassOutcome] = summary.outcomes
    if len(rows) > FULL_TABLE_MAX:
        rows = [o for o in rows if o.status == "failed"]
    if rows:
        table = Table(title="classes")
        for column in ("class", "name", "status", "calls", "tokens", "error"):
            table.add_column(column)
        colour = {"done": "green", "failed": "red", "skipped": "dim"}
        for o in rows:
            table.add_row(
                o.class_id,
                o.name,
                f"[{colour.get(o.status, 'white')}]{o.status}[/]",
                str(o.attempts),
                f"{o.tokens:,}",
                o.error or "",
            )
        console.print(table)
    console.print(
        f"run {summary.run_id}: [green]{summary.count('done')} done[/], "
        f"[red]{summary.count('failed')} failed[/], "
        f"{summary.count('skipped')} skipped (already complete); {summary.calls} calls, "
        f"{summary.retried} retried, {summary.tokens:,} tokens in {summary.wall_s:.1f} s",
        highlight=False,
    )

"""Markdown tables across runs, from their ``results.json``: one row per run and one per variant."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


class ReportError(ValueError):
    """A run given to the report has no results; the message names it."""


def load_results(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """``results.json`` of each run directory (raises :class:`ReportError` naming a run without one)."""
    out = []
    for run in run_dirs:
        path = Path(run) / "results.json"
        if not path.exists():
            raise ReportError(f"{run} has no results.json: evaluate it first with `trainer eval --run {run}`")
        res = json.loads(path.read_text())
        res["_dir"] = str(run)
        out.append(res)
    return out


def variant_name(res: dict[str, Any]) -> str:
    """Readable model variant: ``infogcn``, ``infogcn + CrossGLG``, ``+ G2L only``, ``+ L2G only``."""
    g2l, l2g = res["crossglg"]["g2l"], res["crossglg"]["l2g"]
    suffix = {(False, False): "", (True, True): " + CrossGLG", (True, False): " + G2L (JID) only"}.get(
        (g2l, l2g), " + L2G (interaction) only"
    )
    return f"{res['encoder']}{suffix}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def _acc(res: dict[str, Any], method: str, kind: str) -> float | None:
    entry = res["methods"].get(method)
    if entry is None:
        return None
    if kind == "fixed":
        return entry["fixed"]["accuracy"]
    draws = entry.get("draws")
    return draws["mean"] if draws else None


def runs_table(results: list[dict[str, Any]]) -> str:
    """One row per run: accuracy by method (fixed exemplars and mean over exemplar draws), size, time."""
    head = (
        "| run | dataset | model | train classes | seed | NN | DC | NN draws | DC draws "
        "| inference params | train time (s) |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in results:
        draws = {}
        for m in ("nn", "dc"):
            d = r["methods"].get(m, {}).get("draws")
            draws[m] = f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}" if d else "–"
        time_s = r.get("train_time_s")
        rows.append(
            f"| {r['run']} | {r['dataset']} | {variant_name(r)} | {r['train_classes']} | {r['seed']} "
            f"| {_pct(_acc(r, 'nn', 'fixed'))} | {_pct(_acc(r, 'dc', 'fixed'))} "
            f"| {draws['nn']} | {draws['dc']} "
            f"| {r['inference_parameters'] / 1e6:.3f} M | {'–' if time_s is None else f'{time_s:.0f}'} |"
        )
    return head + "\n".join(rows) + "\n"


def variants_table(results: list[dict[str, Any]]) -> str:
    """One row per (dataset, train classes, variant): mean ± std over seeds (fixed exemplars) and draws."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["dataset"], r["train_classes"], variant_name(r))].append(r)
    head = (
        "| dataset | train classes | model | runs | NN (fixed) | DC (fixed) "
        "| NN (all draws) | DC (all draws) "
        "| inference params | train time (s) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for (dataset, k, variant), runs in sorted(groups.items()):
        cells = []
        for kind in ("fixed", "draws"):
            for m in ("nn", "dc"):
                if kind == "fixed":
                    vals = [v for r in runs if (v := _acc(r, m, "fixed")) is not None]
                else:
                    vals = [
                        v
                        for r in runs
                        for v in (r["methods"].get(m, {}).get("draws") or {}).get("values", [])
                    ]
                cells.append(_mean_std(vals))
        times = [r["train_time_s"] for r in runs if r.get("train_time_s") is not None]
        params = runs[0]["inference_parameters"] / 1e6
        time_cell = f"{statistics.mean(times):.0f}" if times else "–"
        rows.append(
            f"| {dataset} | {k} | {variant} | {len(runs)} | {' | '.join(cells)} "
            f"| {params:.3f} M | {time_cell} |"
        )
    return head + "\n".join(rows) + "\n"


def render_report(run_dirs: list[Path]) -> str:
    """The Markdown report: variants (mean ± std over seeds and exemplar draws), then every run."""
    results = load_results(run_dirs)
    return (
        "## One-shot accuracy (%) by variant\n\n"
        "Fixed: the protocol's exemplars, mean ± std over runs (seeds). All draws: every random exemplar "
        "draw of every run.\n\n" + variants_table(results) + "\n## Runs\n\n" + runs_table(results)
    )

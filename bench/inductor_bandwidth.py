"""Read Inductor's per-kernel bandwidth report (``profile_bandwidth``) into figures.

With ``torch._inductor.config.profile_bandwidth`` on, every compiled graph times each of its Triton
kernels on its first call (``do_bench``, kernel alone) and, at the end of each call of the graph,
appends to ``profile_bandwidth_output`` one block: per kernel ``ms``, ``GB`` (Inductor's count of the
kernel's input and output bytes, each buffer once) and ``GB/s``, then a ``SUMMARY`` line. The blocks
look like (torch 2.11, ``torch/_inductor/runtime/triton_heuristics.py``)::

    ====================
    TRITON KERNELS BANDWIDTH INFO (/tmp/.../xyz.py)
    0.303ms    \t0.417 GB \t 1376.24GB/s \t 12.01% \t triton_red_fused_...
    SUMMARY (/tmp/.../xyz.py)
    2.52ms   \t 7.41 GB\t 2940.48GB/s

:func:`parse_report` keeps the last block of each graph file (the graph's latest call) and
:func:`summarise` turns it into what bounds the kernels: their time, their bytes, the time those
bytes take at the device's copy rate, and how much time runs at which fraction of that rate.
"""

from __future__ import annotations

import re
from typing import Any

_HEADER = re.compile(r"^TRITON KERNELS BANDWIDTH INFO \((?P<graph>.*)\)\s*$")
_KERNEL = re.compile(
    r"^\s*(?P<ms>[\d.]+)ms\s+(?P<gb>[\d.]+) GB\s+(?P<gbs>[\d.]+)GB/s\s+[\d.]+%\s+(?P<name>\S+)\s*$"
)

# Fractions of the copy rate that split the kernels' time (the last bucket is everything above).
BUCKETS = (0.25, 0.5, 0.75)


def parse_report(text: str) -> dict[str, list[dict[str, Any]]]:
    """Graph file → its kernels ``[{"kernel", "ms", "gb"}]`` from the graph's last block in ``text``."""
    graphs: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = graphs[header.group("graph")] = []  # a later call of the graph replaces it
            continue
        if line.startswith("SUMMARY") or line.startswith("===="):
            current = None
            continue
        kernel = _KERNEL.match(line)
        if kernel and current is not None:
            current.append(
                {
                    "kernel": kernel.group("name"),
                    "ms": float(kernel.group("ms")),
                    "gb": float(kernel.group("gb")),
                }
            )
    return graphs


def summarise(graphs: dict[str, list[dict[str, Any]]], copy_tb_s: float, top: int = 15) -> dict[str, Any]:
    """Totals over all graphs' Triton kernels against the copy rate ``copy_tb_s`` (read + write, TB/s).

    Returns ``kernels``, ``ms`` (sum of the kernels' standalone times), ``gb`` (their bytes),
    ``tb_s`` (bytes over time), ``floor_ms`` (those bytes at ``copy_tb_s``), ``share_of_rate``,
    ``time_by_rate`` (ms of kernels running below each fraction of the rate in :data:`BUCKETS`)
    and ``slowest`` (the ``top`` kernels losing most time against the rate).
    """
    rows = [k for kernels in graphs.values() for k in kernels]
    ms = sum(k["ms"] for k in rows)
    gb = sum(k["gb"] for k in rows)
    floor_ms = gb / copy_tb_s  # GB / (TB/s) = ms
    by_rate: dict[str, float] = {}
    for k in rows:
        share = k["gb"] / copy_tb_s / k["ms"] if k["ms"] > 0 else 1.0
        label = next((f"< {int(100 * b)}%" for b in BUCKETS if share < b), f">= {int(100 * BUCKETS[-1])}%")
        by_rate[label] = by_rate.get(label, 0.0) + k["ms"]
    order = [f"< {int(100 * b)}%" for b in BUCKETS] + [f">= {int(100 * BUCKETS[-1])}%"]
    lost = sorted(rows, key=lambda k: -(k["ms"] - k["gb"] / copy_tb_s))[:top]
    return {
        "graphs": len(graphs),
        "kernels": len(rows),
        "ms": round(ms, 3),
        "gb": round(gb, 3),
        "tb_s": round(gb / ms, 3) if ms else 0.0,
        "floor_ms": round(floor_ms, 3),
        "share_of_rate": round(floor_ms / ms, 3) if ms else 0.0,
        "time_by_rate": {label: round(by_rate.get(label, 0.0), 3) for label in order},
        "slowest": [
            {**k, "tb_s": round(k["gb"] / k["ms"], 3) if k["ms"] else 0.0, "kernel": k["kernel"][:90]}
            for k in lost
        ],
    }


def format_summary(name: str, s: dict[str, Any], copy_tb_s: float) -> str:
    """A few lines for the log: totals, the time per rate bucket, the kernels that lose most."""
    lines = [
        f"{name}: {s['kernels']} Triton kernels in {s['graphs']} graph(s), {s['ms']:.2f} ms standalone, "
        f"{s['gb']:.2f} GB -> {s['tb_s']:.2f} TB/s = {100 * s['share_of_rate']:.0f}% of {copy_tb_s} TB/s "
        f"(those bytes at that rate: {s['floor_ms']:.2f} ms)",
        "  time by fraction of the copy rate: "
        + ", ".join(f"{label}: {ms:.2f} ms" for label, ms in s["time_by_rate"].items()),
    ]
    lines += [f"  {k['ms']:.3f} ms {k['gb']:.3f} GB {k['tb_s']:.2f} TB/s {k['kernel']}" for k in s["slowest"]]
    return "\n".join(lines)

"""How close the kernels Inductor writes run to the device's copy rate, and how many bytes they move.

Two sources of per-kernel figures, both turned into the same summary by :func:`summarise`:

- the real step under ``torch.profiler`` (each kernel's time inside the CUDA-graphed step) joined
  with Inductor's own byte count of each kernel (:func:`kernel_bytes`, present when the graphs
  were compiled with ``benchmark_kernel``): :func:`in_graph_rows`. This is what
  ``bench/train_throughput.py --sections bandwidth`` does.
- Inductor's ``profile_bandwidth`` report (``TORCHINDUCTOR_PROFILE=1``, per kernel ``ms``, ``GB``,
  ``GB/s`` and a ``SUMMARY`` line per graph call; :func:`parse_report`). Each kernel is timed alone
  by ``do_bench`` on the graph's first call, but in that mode the kernels that mutate a buffer run
  on clones and later calls are skipped, so the graph computes garbage: it serves a forward or eval
  graph, and a training step's backward can fail on it (2026-12-04: a device-side index assert in
  the max-pool backward). A small kernel's standalone time there is mostly the argument clones.

Report lines look like (torch 2.11, ``torch/_inductor/runtime/triton_heuristics.py``)::

    ====================
    TRITON KERNELS BANDWIDTH INFO (/tmp/.../xyz.py)
    0.303ms    \t0.417 GB \t 1376.24GB/s \t 12.01% \t triton_red_fused_...
    SUMMARY (/tmp/.../xyz.py)
    2.52ms   \t 7.41 GB\t 2940.48GB/s
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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


def summarise(
    graphs: dict[str, list[dict[str, Any]]], copy_tb_s: float, top: int = 15, large_gb: float = 0.01
) -> dict[str, Any]:
    """Totals over all graphs' Triton kernels against the copy rate ``copy_tb_s`` (read + write, TB/s).

    Returns ``kernels``, ``ms`` (sum of the kernels' standalone times), ``gb`` (their bytes),
    ``tb_s`` (bytes over time), ``floor_ms`` (those bytes at ``copy_tb_s``), ``share_of_rate``,
    ``time_by_rate`` (ms of kernels running below each fraction of the rate in :data:`BUCKETS`),
    ``slowest`` (the ``top`` large kernels losing most time against the rate) and ``large``: the same
    totals over the kernels moving at least ``large_gb`` GB, which carry the bytes (in a
    ``profile_bandwidth`` report a small kernel's time is mostly the harness, see the module doc).
    """
    rows = [k for kernels in graphs.values() for k in kernels]
    large = [k for k in rows if k["gb"] >= large_gb]
    large_ms, large_bytes = sum(k["ms"] for k in large), sum(k["gb"] for k in large)
    ms = sum(k["ms"] for k in rows)
    gb = sum(k["gb"] for k in rows)
    floor_ms = gb / copy_tb_s  # GB / (TB/s) = ms
    by_rate: dict[str, float] = {}
    for k in rows:
        share = k["gb"] / copy_tb_s / k["ms"] if k["ms"] > 0 else 1.0
        label = next((f"< {int(100 * b)}%" for b in BUCKETS if share < b), f">= {int(100 * BUCKETS[-1])}%")
        by_rate[label] = by_rate.get(label, 0.0) + k["ms"]
    order = [f"< {int(100 * b)}%" for b in BUCKETS] + [f">= {int(100 * BUCKETS[-1])}%"]
    lost = sorted(large, key=lambda k: -(k["ms"] - k["gb"] / copy_tb_s))[:top]
    return {
        "graphs": len(graphs),
        "kernels": len(rows),
        "ms": round(ms, 3),
        "gb": round(gb, 3),
        "tb_s": round(gb / ms, 3) if ms else 0.0,
        "floor_ms": round(floor_ms, 3),
        "share_of_rate": round(floor_ms / ms, 3) if ms else 0.0,
        "time_by_rate": {label: round(by_rate.get(label, 0.0), 3) for label in order},
        "large": {
            "min_gb": large_gb,
            "kernels": len(large),
            "ms": round(large_ms, 3),
            "gb": round(large_bytes, 3),
            "tb_s": round(large_bytes / large_ms, 3) if large_ms else 0.0,
            "floor_ms": round(large_bytes / copy_tb_s, 3),
            "share_of_rate": round(large_bytes / copy_tb_s / large_ms, 3) if large_ms else 0.0,
        },
        "slowest": [
            {**k, "tb_s": round(k["gb"] / k["ms"], 3) if k["ms"] else 0.0, "kernel": k["kernel"][:90]}
            for k in lost
        ],
    }


def format_large(s: dict[str, Any]) -> str:
    """One line on the kernels that carry the bytes (``s["large"]`` of :func:`summarise`)."""
    big = s["large"]
    return (
        f"the {big['kernels']} kernels of >= {big['min_gb']} GB take {big['ms']:.2f} ms standalone for "
        f"{big['gb']:.2f} GB = {big['tb_s']:.2f} TB/s ({100 * big['share_of_rate']:.0f}% of the copy rate; "
        f"at that rate {big['floor_ms']:.2f} ms); {s['kernels'] - big['kernels']} smaller kernels"
    )


def format_summary(name: str, s: dict[str, Any], copy_tb_s: float) -> str:
    """A few lines for the log: totals, the time per rate bucket, the kernels that lose most."""
    lines = [
        f"{name}: {s['kernels']} Triton kernels in {s['graphs']} graph(s), {s['ms']:.2f} ms standalone, "
        f"{s['gb']:.2f} GB -> {s['tb_s']:.2f} TB/s = {100 * s['share_of_rate']:.0f}% of {copy_tb_s} TB/s "
        f"(those bytes at that rate: {s['floor_ms']:.2f} ms)",
        "  " + format_large(s),
        "  time by fraction of the copy rate: "
        + ", ".join(f"{label}: {ms:.2f} ms" for label, ms in s["time_by_rate"].items()),
    ]
    lines += [f"  {k['ms']:.3f} ms {k['gb']:.3f} GB {k['tb_s']:.2f} TB/s {k['kernel']}" for k in s["slowest"]]
    return "\n".join(lines)


def kernel_bytes(modules: Iterable[Any], skip: frozenset[int] = frozenset()) -> dict[str, list[float]]:
    """Kernel name → Inductor's byte count of one launch (``inductor_meta["kernel_num_gb"]``), from
    the kernel objects bound in the graph wrapper modules (``PyCodeCache.modules``) not in ``skip``.

    Inductor only counts the bytes when the graphs were compiled with ``benchmark_kernel`` (or
    ``profile_bandwidth``) on; the kernels themselves are unchanged by it. A name maps to a list:
    the suffix of a kernel's name counts within its graph, so two graphs (a step's forward and
    backward) can hold different kernels of the same name, which a profile cannot tell apart.
    """
    found: dict[
        str, dict[int, float]
    ] = {}  # name -> kernel object id -> GB (a kernel bound twice counts once)
    for module in modules:
        if id(module) in skip:
            continue
        for name, obj in list(vars(module).items()):
            meta = getattr(obj, "inductor_meta", None)
            if (
                name.startswith("triton_")
                and isinstance(meta, dict)
                and meta.get("kernel_num_gb") is not None
            ):
                found.setdefault(name, {})[id(obj)] = float(meta["kernel_num_gb"])
    return {name: list(by_object.values()) for name, by_object in found.items()}


def in_graph_rows(
    kernel_times: dict[str, tuple[float, int]], gb: dict[str, list[float]]
) -> dict[str, list[dict[str, Any]]]:
    """:func:`summarise`'s input from a profile of the real step: ``kernel_times`` maps a kernel name
    to (ms per step, launches per step) as the profiler saw them; each launch becomes one row with
    its share of the time and Inductor's bytes (the mean where several kernels share the name).
    Kernels without a byte count (GEMMs, convolutions, our own Triton ops) are left out.
    """
    rows = []
    for name, (ms, launches) in kernel_times.items():
        if name in gb and launches > 0:
            per_launch = sum(gb[name]) / len(gb[name])
            rows += [{"kernel": name, "ms": ms / launches, "gb": per_launch}] * launches
    return {"profiled step": rows}

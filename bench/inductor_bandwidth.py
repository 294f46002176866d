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
from collections.abc import Callable
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
    totals over the kernels moving at least ``large_gb`` GB. The large ones carry the bytes; a small
    kernel's standalone time is mostly the harness (Inductor clones the arguments a kernel mutates,
    e.g. the running statistics, inside the timed call), not its cost inside the graph.
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


def count_launches(kernel_names: list[str], wrapper_sources: list[str]) -> dict[str, int]:
    """How often the graphs' wrapper code launches each kernel (``<name>.run(`` per call site)."""
    counts = {}
    for name in kernel_names:
        pattern = re.compile(rf"\b{re.escape(name)}\.run\(")
        counts[name] = sum(len(pattern.findall(src)) for src in wrapper_sources)
    return counts


def loaded_modules() -> frozenset[int]:
    """Ids of the modules Inductor has loaded so far (graph wrappers and kernels)."""
    from torch._inductor.codecache import PyCodeCache

    return frozenset(id(m) for m in PyCodeCache.modules)


def time_on_gpu(fn: Callable[[], object], launches: int = 10, replays: int = 5) -> float:
    """Milliseconds per call of ``fn`` (GPU work only): ``launches`` calls captured in one CUDA graph,
    replayed ``replays`` times between CUDA events, so the host's launch cost is not in it. Data a
    kernel re-reads can stay in L2 between the calls: small kernels look faster than in a step."""
    import torch

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(launches):
            fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (replays * launches)


def benchmark_compiled_kernels(skip: frozenset[int] = frozenset()) -> dict[str, list[dict[str, Any]]]:
    """Each Triton kernel Inductor compiled in this process, timed alone on random inputs (integer
    buffers zero) by :func:`time_on_gpu`, with Inductor's byte count and its launches per call of
    the graphs.

    Needs the graphs compiled with ``torch._inductor.config.benchmark_kernel = True`` (each kernel
    module then carries its argument maker). Unlike ``profile_bandwidth`` the graphs themselves run
    normally, so a training step's backward can be measured too. Returns ``{"compiled graphs": rows}``
    in :func:`summarise`'s form, one row per launch, counting the launches of the graphs whose
    modules are not in ``skip`` (ids of ``PyCodeCache.modules`` from before, see :func:`loaded_modules`).
    """
    from pathlib import Path

    from torch._inductor.codecache import PyCodeCache
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    kernels, wrappers = {}, []
    for module in list(PyCodeCache.modules):
        tuners = [
            k for k, v in vars(module).items() if k.startswith("triton_") and isinstance(v, CachingAutotuner)
        ]
        if hasattr(module, "get_args") and hasattr(module, "call") and len(tuners) == 1:
            kernels[tuners[0]] = module
        elif hasattr(module, "call") and getattr(module, "__file__", None) and id(module) not in skip:
            wrappers.append(Path(module.__file__).read_text())
    launches = count_launches(list(kernels), wrappers)
    rows: list[dict[str, Any]] = []
    for name, module in kernels.items():
        if not launches[name]:
            continue
        args = module.get_args()
        ms = time_on_gpu(lambda m=module, a=args: m.call(a))
        gb = getattr(module, name).inductor_meta.get("kernel_num_gb") or 0.0
        rows += [{"kernel": name, "ms": round(ms, 5), "gb": float(gb)}] * launches[name]
        del args
    return {"compiled graphs": rows}

"""Speed of `trainer prepare` on generated NTU-format corpora, and of the on-device feeder.

    python bench/prepare_speed.py                      # 2,000 and 10,000 files, --workers 2
    python bench/prepare_speed.py --files 500 --workers 1
    python bench/prepare_speed.py --feeder             # feeder samples/s (on CUDA when present)

Prints files/s, CPU time per file and peak RSS (summed over the process tree) of the `trainer
prepare` command, the extrapolation to NTU-120's 113,945 files, and merges the figures into
bench/results/prepare_speed.json. Reference: the public preprocessing scripts (read, denoise,
transform) ran at about 26 files/s with 5.1 GB peak RSS on a 10,000-file corpus on the same machine.
The feeder mode needs only torch, numpy, pyyaml (and this checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "prepare_speed.json"
REFERENCE_FILES_PER_S = 26.0
NTU120_FILES = 113_945


def _tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, KiB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry)] = int(line.split()[1])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def generate(corpus: Path, n_files: int, workers: int) -> float:
    """Write the corpus unless it is already there; return the mean file size in bytes."""
    from trainer.data.synthetic import write_ntu_corpus

    marker = corpus / ".complete"
    if not marker.exists():
        start = time.perf_counter()
        write_ntu_corpus(corpus, n_files, seed=n_files, workers=workers)
        marker.write_text("ok")
        print(f"  generated {n_files:,} files in {time.perf_counter() - start:.0f} s")
    sizes = [e.stat().st_size for e in os.scandir(corpus) if e.name.endswith(".skeleton")]
    return sum(sizes) / len(sizes)


def run_prepare(corpus: Path, out: Path, workers: int) -> dict[str, float]:
    """Run `trainer prepare` as a user does and measure wall time, CPU time and peak RSS."""
    cmd = [sys.executable, "-m", "trainer", "prepare", "--dataset", "ntu120", "--raw", str(corpus)]
    cmd += ["--out", str(out), "--workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    out_text = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"trainer prepare failed ({proc.returncode}): {out_text}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "wall_s": wall,
        "peak_rss_mib": peak / 1024,
        "inner_s": manifest["seconds_last_run"],
        "summary": out_text,
    }


def bench_prepare(args: argparse.Namespace) -> dict[str, object]:
    root = Path(args.corpus_dir or tempfile.mkdtemp(prefix="prepare_speed_"))
    rows = []
    for n in args.files:
        corpus = root / f"corpus_{n}"
        mean_size = generate(corpus, n, args.workers)
        out = root / f"store_{n}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        cpu0 = os.times()
        load_before = os.getloadavg()[0]
        m = run_prepare(corpus, out, args.workers)
        cpu1 = os.times()
        cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
        rate = n / m["wall_s"]
        row = {
            "files": n,
            "workers": args.workers,
            "mean_file_kib": round(mean_size / 1024, 1),
            "wall_s": round(m["wall_s"], 2),
            "files_per_s": round(rate, 1),
            "cpu_ms_per_file": round(1000 * cpu / n, 2),
            # What the CPU time allows when the workers have the cores to themselves; the wall figure
            # above is lower whenever other jobs share the machine (see the load averages).
            "cpu_bound_files_per_s": round(args.workers * n / cpu, 1),
            "load_avg_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "peak_rss_mib": round(m["peak_rss_mib"], 1),
            "speedup_vs_reference": round(rate / REFERENCE_FILES_PER_S, 1),
            "ntu120_extrapolated_min": round(NTU120_FILES / rate / 60, 1),
        }
        rows.append(row)
        print(
            f"{n:>6,} files ({row['mean_file_kib']} KiB each), {args.workers} workers: {rate:,.0f} files/s "
            f"({row['speedup_vs_reference']}× the reference 26 files/s), "
            f"{row['cpu_ms_per_file']} ms CPU/file, "
            f"peak RSS {row['peak_rss_mib']:,.0f} MiB; NTU-120 ({NTU120_FILES:,} files) ≈ "
            f"{row['ntu120_extrapolated_min']} min; CPU-bound {row['cpu_bound_files_per_s']:,.0f} files/s "
            f"(load {row['load_avg_before_after']})"
        )
        if not args.keep:
            subprocess.run(["rm", "-rf", str(out)], check=True)
    note = (
        "wall files/s count every other job on the machine (see load_avg_before_after); "
        "cpu_bound_files_per_s = workers / CPU seconds per file is the figure for a machine of its own"
    )
    return {"machine": f"{os.cpu_count()} CPUs", "note": note, "runs": rows}


def bench_feeder(args: argparse.Namespace) -> dict[str, object]:
    import numpy as np
    import torch

    from dataspec import load_spec
    from trainer.data.feeder import GPUFeeder
    from trainer.data.store import PreparedStore

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = load_spec("ntu120")
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 301, args.samples)
    samples = [rng.normal(0, 0.5, (int(n), 2, 25, 3)).astype(np.float16) for n in lengths]
    store = PreparedStore.from_arrays(spec, samples, rng.integers(0, 120, args.samples))
    rows = []
    for modalities in (("joint",), ("joint", "bone", "motion")):
        for train in (True, False):
            feeder = GPUFeeder(
                store, np.arange(len(store)), device=device, train=train, modalities=modalities
            )
            for batch in args.batch:
                for _ in feeder.epoch_batches(batch, epoch=0):  # warm-up (kernels, allocator)
                    break

                def sync() -> None:
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()

                sync()
                start = time.perf_counter()
                seen = 0
                for epoch in range(args.epochs):
                    for x, _, _ in feeder.epoch_batches(batch, epoch):
                        seen += x.shape[0]
                sync()
                rate = seen / (time.perf_counter() - start)
                rows.append(
                    {
                        "modalities": "+".join(modalities),
                        "train": train,
                        "batch": batch,
                        "samples_per_s": round(rate),
                    }
                )
                print(
                    f"feeder {'+'.join(modalities):>17} {'train' if train else 'eval':>5} "
                    f"batch {batch:>4}: {rate:,.0f} samples/s"
                )
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return {"device": name, "torch": torch.__version__, "samples": args.samples, "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--corpus-dir", help="Keep generated corpora here (reused by later runs).")
    parser.add_argument("--keep", action="store_true", help="Keep the prepared stores.")
    parser.add_argument("--feeder", action="store_true", help="Measure the feeder instead of prepare.")
    parser.add_argument("--device", help="Feeder device (default: cuda when available).")
    parser.add_argument("--samples", type=int, default=20_000, help="Feeder: samples in the synthetic store.")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    key = "feeder" if args.feeder else "prepare"
    fresh = bench_feeder(args) if args.feeder else bench_prepare(args)
    if not args.feeder and "prepare" in results:  # keep earlier corpus sizes, replace the ones rerun
        rerun = {r["files"] for r in fresh["runs"]}
        kept = [r for r in results["prepare"].get("runs", []) if r["files"] not in rerun]
        fresh["runs"] = sorted(kept + fresh["runs"], key=lambda r: r["files"])
    results[key] = fresh
    results[key]["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results → {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

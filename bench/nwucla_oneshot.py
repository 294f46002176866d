"""The NW-UCLA one-shot experiment: InfoGCN baseline vs + CrossGLG and the two single-module ablations.

Runs every (variant, seed) as its own ``python -m trainer run`` process, several at once on one GPU
(each model is small; one run alone leaves the GPU mostly idle), then evaluates each run with random
exemplar draws and prints the ``trainer report`` table last.

    python bench/nwucla_oneshot.py --seeds 1 2 3 --parallel 4 --draws 10 --runs /tmp/runs --out $OUT

Needs ``stores/nwucla`` (``trainer prepare``) and ``packs/nwucla.kpack.safetensors`` (``kbgen embed``).
Writes ``report.md``, ``timings.json``, ``logs.txt`` and ``runs.tar.gz`` (results, metrics, plots; no
checkpoints) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

# Run as `python bench/nwucla_oneshot.py` from the repository root: make `trainer` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("nwucla_oneshot_baseline", []),
    "crossglg": ("nwucla_oneshot", []),
    "g2l_only": ("nwucla_oneshot", ["model.crossglg.l2g=false"]),
    "l2g_only": ("nwucla_oneshot", ["model.crossglg.g2l=false"]),
}


def run_one(variant: str, seed: int, runs: Path, extra: list[str], draws: int) -> dict[str, object]:
    """Train + evaluate one (variant, seed); returns its wall time and exit status."""
    config, sets = VARIANTS[variant]
    run_dir = runs / f"{variant}-seed{seed}"
    args = [sys.executable, "-m", "trainer", "run", "--config", config, "--run-dir", str(run_dir)]
    for item in [*sets, f"seed={seed}", f"eval.exemplar_draws={draws}", *extra]:
        args += ["--set", item]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    return {
        "variant": variant,
        "seed": seed,
        "run_dir": str(run_dir),
        "wall_s": wall,
        "rc": proc.returncode,
        "log": proc.stdout[-3000:] + proc.stderr[-3000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--runs", type=Path, default=Path("runs/nwucla_experiment"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/nwucla_oneshot"))
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra override for every run"
    )
    opts = parser.parse_args()
    opts.runs.mkdir(parents=True, exist_ok=True)
    opts.out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for s in opts.seeds for v in opts.variants]
    t0 = time.perf_counter()
    done: list[dict[str, object]] = []
    with ThreadPoolExecutor(opts.parallel) as pool:
        futures = [pool.submit(run_one, v, s, opts.runs, opts.extra, opts.draws) for v, s in jobs]
        for future in as_completed(futures):
            r = future.result()
            done.append(r)
            print(f"{r['variant']:>9} seed {r['seed']}: rc={r['rc']} {r['wall_s']:.0f} s", flush=True)
            # Write what is there after every run: a call cut off by its time limit still returns it.
            _write_outputs(done, opts.out, time.perf_counter() - t0, opts.parallel)
    total = time.perf_counter() - t0
    text = _write_outputs(done, opts.out, total, opts.parallel)
    for r in done:
        if r["rc"] != 0:
            print(f"FAILED {r['variant']} seed {r['seed']}:\n{str(r['log'])[-1500:]}")
    print(f"\n{len(jobs)} runs, {opts.parallel} at a time, {total:.0f} s wall in all\n")
    print(text)


def _write_outputs(done: list[dict[str, object]], out: Path, total: float, parallel: int) -> str:
    """logs.txt, timings.json, runs.tar.gz and report.md for the runs finished so far; returns the report."""
    with (out / "logs.txt").open("w") as fh:
        for r in done:
            fh.write(
                f"===== {r['variant']} seed {r['seed']} rc={r['rc']} wall {r['wall_s']:.1f} s\n{r['log']}\n"
            )
    runs = [{k: v for k, v in r.items() if k != "log"} for r in done]
    (out / "timings.json").write_text(
        json.dumps({"total_wall_s": total, "parallel": parallel, "runs": runs}, indent=2)
    )
    ok = [
        Path(str(r["run_dir"]))
        for r in done
        if r["rc"] == 0 and (Path(str(r["run_dir"])) / "results.json").exists()
    ]
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for run in ok:
            for name in ("results.json", "metrics.jsonl", "config.yaml", "train_summary.json", "plots"):
                if (run / name).exists():
                    tar.add(run / name, arcname=f"{run.name}/{name}")
    if not ok:
        return "no run finished"
    from trainer.evaluation.report import render_report

    text = render_report(sorted(ok))
    (out / "report.md").write_text(text)
    return text


if __name__ == "__main__":
    main()

"""kbgen generate against a faulty endpoint: calls, retries, faults survived by kind, wall time.

A fault-injecting OpenAI-compatible server (kbgen.testing.faults, real HTTP on 127.0.0.1) runs in
this process; ``kbgen generate`` runs as a child process against it, as a user would run it, on
a fresh SQLite file. Afterwards the database is read back: every class must be complete and every
injected fault must be one failed attempt in the logs.

    .venv/bin/python bench/kbgen_faults.py                       # ntu120, 30% faults
    .venv/bin/python bench/kbgen_faults.py --rate 0.5 --dataset nwucla --out bench/results/x
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from dataspec import load_spec
from kbgen.store import db, repo
from kbgen.store.models import Description, LlmCall, Run
from kbgen.testing.fake_openai import FakeOpenAIServer
from kbgen.testing.faults import FAULT_KINDS, FaultInjector, FaultPlan

KBGEN = [sys.executable, "-c", "from kbgen.cli import main; main()"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ntu120")
    parser.add_argument("--rate", type=float, default=0.3, help="fault probability per request")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per answer (generation time)")
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=1.0, help="client timeout; hangs last 1.6x this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/kbgen_faults"))
    args = parser.parse_args()

    spec = load_spec(args.dataset)
    plan = FaultPlan(rate=args.rate, delay_s=args.delay, hang_s=1.6 * args.timeout, seed=args.seed)
    injector = FaultInjector(plan)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(responder=injector) as server:
        dbfile = Path(tmp) / "kb.db"
        command = [
            *KBGEN,
            *("generate", "--dataset", spec.name, "--base-url", server.base_url, "--model", "fake"),
            *("--db", str(dbfile), "--concurrency", str(args.concurrency), "--timeout", str(args.timeout)),
            *("--max-retries", "8", "--max-invalid", "6"),
        ]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
        wall_s = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(
                f"kbgen generate failed ({result.returncode}):\n"
                + result.stdout[-3000:]
                + result.stderr[-3000:]
            )
        url = str(dbfile)
        with db.session_scope(url) as s:
            dataset = repo.get_dataset(s, spec.name)
            names = repo.joint_names(s, dataset)
            complete = sum(repo.current_kb(s, row, names).complete for row in repo.list_classes(s, dataset))
            calls = list(s.scalars(select(LlmCall)))
            texts = len(list(s.scalars(select(Description))))
            run = s.scalars(select(Run).order_by(Run.id.desc())).first()
            summary = dict(run.summary or {}) if run else {}
        db.dispose_all()

    statuses = Counter(c.status for c in calls)
    stats = injector.stats()
    figures = {
        "dataset": spec.name,
        "classes": spec.num_classes,
        "classes_complete": complete,
        "fault_rate": args.rate,
        "answer_delay_s": args.delay,
        "client_timeout_s": args.timeout,
        "concurrency": args.concurrency,
        "requests_served": stats["requests"],
        "calls_logged": len(calls),
        "calls_by_status": dict(statuses),
        "retried": summary.get("retried"),
        "faults_injected": stats["faults"],
        "faults_by_kind": stats["by_kind"],
        "every_fault_logged": statuses["invalid"] + statuses["error"] == stats["faults"],
        "texts_stored": texts,
        "texts_expected": spec.num_classes * (1 + spec.num_joints),
        "wall_s": round(wall_s, 2),
        "ideal_wall_s": round(2 * spec.num_classes * args.delay / args.concurrency, 2),
    }
    fault_share = stats["faults"] / max(1, stats["requests"])
    lines = [
        f"kbgen generate --dataset {spec.name} against a faulty endpoint "
        f"({args.rate:.0%} faults, {args.delay * 1000:.0f} ms per answer, -j {args.concurrency}, "
        f"--timeout {args.timeout:g})",
        f"classes complete:   {complete}/{spec.num_classes}",
        f"calls:              {len(calls)} logged, {stats['requests']} served "
        f"({statuses['ok']} ok, {statuses['invalid']} invalid, {statuses['error']} error)",
        f"retries:            {summary.get('retried')} (attempts beyond the first of each prompt)",
        f"faults survived:    {stats['faults']} ({fault_share:.1%} of requests); "
        f"all logged: {figures['every_fault_logged']}",
        *(f"  {kind:<16}  {stats['by_kind'][kind]}" for kind in FAULT_KINDS),
        f"texts stored:       {texts} (expected {figures['texts_expected']}, one version each)",
        f"wall time:          {wall_s:.1f} s (fault-free ideal {figures['ideal_wall_s']:.1f} s "
        "+ CLI start-up, hangs and backoff)",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".txt").write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Throughput of `kbgen generate`'s real path (client, retries, SQLite writes) against a slow endpoint.

A local OpenAI-compatible server (stdlib ThreadingHTTPServer, kbgen.testing.fake_openai) answers
every call with a valid JSON answer after --delay seconds. With C classes (2 calls each) and
--concurrency N, the ideal wall time is 2*C*delay/N (240 calls, 0.5 s, 16 in flight: 7.5 s);
the target is at most 1.3 x the ideal.

    .venv/bin/python bench/kbgen_throughput.py [--dataset ntu120] [--concurrency 16] [--delay 0.5]

Prints the figures and writes bench/results/kbgen_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

from dataspec import load_spec
from kbgen.generate import generate
from kbgen.llm.client import ClientSettings, LlmClient
from kbgen.testing.fake_openai import FakeOpenAIServer

RESULTS = Path(__file__).resolve().parent / "results" / "kbgen_throughput.json"
TARGET_RATIO = 1.3


def _serve(delay_s: float, address: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    with FakeOpenAIServer(delay_s=delay_s) as server:
        address.put(server.base_url)
        stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ntu120")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds the endpoint takes per call (> 0)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    spec = load_spec(args.dataset)
    with tempfile.TemporaryDirectory(prefix="kbgen-bench-") as home:
        os.environ["KBGEN_HOME"] = home  # a fresh SQLite database, like a first run
        os.environ.pop("KBGEN_DB", None)
        # The endpoint runs in its own process, as a remote one would: in this process it would
        # compete with the client for the GIL and inflate the overhead we want to measure.
        address: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        stop = mp.Event()
        endpoint = mp.Process(target=_serve, args=(args.delay, address, stop), daemon=True)
        endpoint.start()
        try:
            client = LlmClient(
                ClientSettings(base_url=address.get(timeout=30), model="fake", api_key="bench")
            )
            start = time.perf_counter()
            summary = generate(spec, client, concurrency=args.concurrency)
            wall = time.perf_counter() - start
            client.close()
        finally:
            stop.set()
            endpoint.join(timeout=10)

    calls = summary.calls
    ideal = calls * args.delay / args.concurrency
    result = {
        "dataset": spec.name,
        "classes": spec.num_classes,
        "calls": calls,
        "concurrency": args.concurrency,
        "delay_s": args.delay,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio_to_ideal": round(wall / ideal, 3),
        "target_ratio": TARGET_RATIO,
        "calls_per_s": round(calls / wall, 2),
        # Time each call held a worker beyond the endpoint's own delay (client, parsing, SQLite).
        "overhead_per_call_ms": round((wall * args.concurrency / calls - args.delay) * 1000, 1),
        "done": summary.count("done"),
        "failed": summary.count("failed"),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    verdict = "OK" if result["ratio_to_ideal"] <= TARGET_RATIO else "SLOWER THAN TARGET"
    print(
        f"{calls} calls ({spec.num_classes} classes), concurrency {args.concurrency}, "
        f"{args.delay} s per call\n"
        f"wall {wall:.2f} s vs ideal {ideal:.2f} s: {wall / ideal:.2f} x "
        f"(target <= {TARGET_RATIO}) {verdict}\n"
        f"{result['calls_per_s']} calls/s, overhead {result['overhead_per_call_ms']} ms per call "
        f"(load average {result['load_avg_1m']} on {os.cpu_count()} cores)\n"
        f"written to {args.out}"
    )


if __name__ == "__main__":
    main()

"""bench/embed_throughput.py runs (tiny sizes, not timed) and needs no kbgen database or LLM stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs the benchmark in a fresh interpreter with the DeBERTa-V2-XLarge configuration shrunk (the
# code path is the same; 885 M parameters would take minutes on a CPU), then lists forbidden imports.
RUNNER = """
import sys
sys.path.insert(0, "bench")
import embed_throughput as bench
bench.DEBERTA_XLARGE.update(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)
sys.argv = ["embed_throughput.py", "--models", "minilm,deberta-xlarge", "--texts", "24",
            "--batch-size", "8", "--repeats", "1", "--out", sys.argv[1]]
bench.main()
forbidden = {"sqlalchemy", "pydantic", "openai", "alembic", "typer"}
bad = sorted({m.split(".")[0] for m in sys.modules} & forbidden)
sys.exit(f"forbidden imports: {bad}" if bad else 0)
"""


def test_benchmark_runs_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "embed_throughput_cpu.json"
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(out)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sent/s" in done.stdout
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["batch_size"] == 8
    rows = {r["model"]: r for r in report["results"]}
    assert rows["minilm"]["dim"] == 384 and rows["deberta-xlarge"]["dim"] == 48
    for row in rows.values():
        assert row["texts"] == 24 and row["sentences_per_s"] > 0 and row["all_finite"]
        assert 15 < row["mean_tokens"] < 60  # joint-length texts, as in a real pack

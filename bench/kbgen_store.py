"""Knowledge-base store speed: writing answers, listing, exporting and importing NTU-120.

Writes a complete NTU-120 knowledge base (120 classes × (1 global + 25 joint texts) = 3,120
texts, one LLM call row and one transaction per class, as ``kbgen generate`` does) into fresh
SQLite files: text by text (``save_description``) and in batches (``save_descriptions``) from
one worker, then in batches from 8 threads at once (WAL + busy timeout: no "database is
locked"). Then it times the queries behind ``kbgen list``, ``kbgen export`` and a
full ``kbgen import`` into a second fresh file, and checks that export → import → export is
identical. Prints the figures and writes ``bench/results/kbgen_store.json``::

    .venv/bin/python bench/kbgen_store.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dataspec import load_spec  # noqa: E402
from kbgen.store import db, kbfile, repo  # noqa: E402


def write_class(url: str, spec_name: str, class_id: str, joint_names: list[str], batched: bool) -> None:
    """One class's answers in one transaction: text by text, or as one batch (save_descriptions)."""
    texts = [repo.NewText("global", None, f"global text of {class_id}", ["arm", "hand"])]
    texts += [
        repo.NewText("joint", i, f"how the {name} moves in {class_id}") for i, name in enumerate(joint_names)
    ]
    with db.session_scope(url) as s:
        row = repo.get_class(s, spec_name, class_id)
        call = repo.record_call(s, class_row=row, kind="joints", rendered_prompt="prompt", status="ok")
        if batched:
            repo.save_descriptions(s, row, texts, "llm", call=call)
            return
        for t in texts:
            repo.save_description(s, row, t.kind, t.joint_position, t.text, "llm", call=call,
                                  key_body_parts=t.key_body_parts)  # fmt: skip


def fill(url: str, workers: int, batched: bool) -> float:
    spec = load_spec("ntu120")
    with db.session_scope(url) as s:
        repo.ensure_dataset(s, spec)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda c: write_class(url, spec.name, c, spec.joint_names, batched), spec.class_ids))
    return time.perf_counter() - start


MODES = [(1, False), (1, True), (8, True)]


def main() -> None:
    spec = load_spec("ntu120")
    texts = spec.num_classes * (spec.num_joints + 1)
    results: dict[str, float | int | bool] = {"texts": texts}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KBGEN_HOME"] = tmp
        for workers, batched in MODES:
            name = f"write_{'batch' if batched else 'per_text'}_{workers}_workers"
            seconds = fill(f"sqlite:///{tmp}/{name}.db", workers, batched)
            results[f"{name}_s"] = round(seconds, 3)
            results[f"{name}_texts_per_s"] = round(texts / seconds, 1)
        url = f"sqlite:///{tmp}/write_batch_1_workers.db"
        start = time.perf_counter()
        with db.session_scope(url) as s:
            dataset = repo.get_dataset(s, spec.name)
            names = repo.joint_names(s, dataset)
            for row in repo.list_classes(s, dataset):
                repo.current_kb(s, row, names)
                repo.current_keyjoints(s, row)
        results["list_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        with db.session_scope(url) as s:
            first = kbfile.dumps(kbfile.export_kb(s, spec))
        results["export_s"] = round(time.perf_counter() - start, 3)
        path = Path(tmp) / "kb.json"
        path.write_text(first, encoding="utf-8")
        other = f"sqlite:///{tmp}/imported.db"
        with db.session_scope(other) as s:
            repo.ensure_dataset(s, spec)
        start = time.perf_counter()
        with db.session_scope(other) as s:
            report = kbfile.import_kb(s, spec, path)
        results["import_s"] = round(time.perf_counter() - start, 3)
        with db.session_scope(other) as s:
            results["round_trip_identical"] = kbfile.dumps(kbfile.export_kb(s, spec)) == first
        results["imported_texts"] = report.saved
        db.dispose_all()
    print(f"NTU-120 knowledge base: {texts} texts, {spec.num_classes} transactions")
    for workers, batched in MODES:
        name = f"write_{'batch' if batched else 'per_text'}_{workers}_workers"
        print(f"  write {'in batches' if batched else 'text by text'}, {workers} worker(s): "
              f"{results[f'{name}_s']:.2f} s ({results[f'{name}_texts_per_s']:.0f} texts/s)")  # fmt: skip
    print(f"  list queries: {results['list_s']:.2f} s   export: {results['export_s']:.2f} s   "
          f"import: {results['import_s']:.2f} s   identical: {results['round_trip_identical']}")  # fmt: skip
    out = REPO / "bench" / "results" / "kbgen_store.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"  written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()

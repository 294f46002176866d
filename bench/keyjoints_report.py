"""Key-joint distributions on the real GAP texts of all NTU-120 classes, per noun-phrase backend.

Prints, per backend: coverage (non-uniform rows) from the paragraph alone and from the paragraph plus
the key body parts (what `kbgen keyjoints` computes after `kbgen import --format gap`), time per class,
each class's mass per body part and top joints; and the agreement between backends when more than one
runs (stanza only when its English models are on disk).

    .venv/bin/python bench/keyjoints_report.py [--gap DIR] [--dataset ntu120] [--stanza-dir DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dataspec import load_spec  # noqa: E402
from kbgen.importers.gap import (  # noqa: E402
    LABEL_MAP_FILE,
    PASTA_FILE,
    SENTENCE_FILE,
    choose_prefix,
    key_body_parts,
    match_labels,
    read_label_map,
    read_pasta,
    read_sentences,
)
from kbgen.keyjoints.distribution import compute_keyjoints, top_joints  # noqa: E402
from kbgen.keyjoints.lexicon import load_lexicon  # noqa: E402
from kbgen.keyjoints.phrases import get_extractor, stanza_models_present, stanza_resources_dir  # noqa: E402

PARTS = ("head", "torso", "arm", "hand", "leg", "foot")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", default=str(REPO.parent / "shared" / "reference" / "gap_text"))
    parser.add_argument("--dataset", default="ntu120")
    parser.add_argument("--stanza-dir", default=None)
    args = parser.parse_args()

    spec = load_spec(args.dataset)
    lexicon = load_lexicon()
    folder = Path(args.gap)
    prefix = choose_prefix(folder, spec)
    sentences = read_sentences(folder / f"{prefix}{SENTENCE_FILE}")
    pasta, _ = read_pasta(folder / f"{prefix}{PASTA_FILE}")
    label_map = read_label_map(folder / LABEL_MAP_FILE) if prefix == "" else None
    matched, unmatched = match_labels([e.label for e in sentences], spec, label_map)
    parts_by_label = {e.label: key_body_parts(e.fields, lexicon) for e in pasta}
    pasta_still = {e.label: e.fields for e in pasta}
    items = [(matched[e.label][0], e.label, e.fields[0]) for e in sentences if e.label in matched]
    print(f"dataset {spec.name}: {len(items)} classes with a GAP paragraph ({folder})")
    print(f"unmatched GAP labels: {unmatched or 'none'}")
    print(f"lexicon {lexicon.path.name} sha256 {lexicon.sha256[:12]}")

    backends = ["spacy"]
    if stanza_models_present(args.stanza_dir):
        backends.append("stanza")
    else:
        print(
            f"stanza: English models not present in {stanza_resources_dir(args.stanza_dir)}; stanza not run"
        )

    results: dict[str, dict[str, list[float]]] = {}
    hip_named: dict[str, dict[str, bool]] = {b: {} for b in backends}
    for backend in backends:
        extractor = get_extractor(backend, args.stanza_dir)
        text_only: dict[str, bool] = {}
        rows: dict[str, list[float]] = {}
        uniform: list[str] = []
        start = time.perf_counter()
        for cid, _label, text in items:
            text_only[cid] = not compute_keyjoints(spec, text, [], extractor, lexicon=lexicon).is_uniform
        t_text = time.perf_counter() - start
        for cid, label, text in items:
            result = compute_keyjoints(spec, text, parts_by_label.get(label, []), extractor, lexicon=lexicon)
            rows[cid] = result.weights
            hip_named[backend][cid] = any(
                not p.negated
                and p.source == "text"
                and any(h.concept == "hip" for h in lexicon.hits(spec, p.phrase))
                for p in result.phrases
            )
            if result.is_uniform:
                uniform.append(cid)
        results[backend] = rows
        n = len(items)
        print(f"\n=== backend {extractor.version}")
        print(
            f"coverage, paragraph only: {sum(text_only.values())}/{n} non-uniform; "
            f"paragraph + key body parts: {n - len(uniform)}/{n} non-uniform"
        )
        print(f"time: {1000 * t_text / n:.1f} ms per class (noun phrases + mapping, paragraph only)")
        if uniform:
            print(f"uniform rows: {', '.join(uniform)}")
        # "hip remains stationary" in GAP's part texts: does any paragraph still name the hips as moving?
        still_hip = [
            cid for cid, label, _ in items if label in pasta_still and "hip" not in parts_by_label[label]
        ]
        named = [cid for cid in still_hip if hip_named[backend].get(cid)]
        print(
            f"classes whose GAP hip text says still: {len(still_hip)}; hips named as moving in their "
            f"paragraph: {len(named)} ({', '.join(named) or '-'}); "
            "(hip joints may still get mass from 'leg'/'whole body' mentions, which cover them)"
        )
        print(f"\n{'class':<6} {'name':<34} " + " ".join(f"{p:>5}" for p in PARTS) + "  top joints")
        for cid, _label, _text in items:
            w = rows[cid]
            mass = [sum(w[j.index] for j in spec.joints if j.part == p) for p in PARTS]
            top = ", ".join(f"{name} {v:.2f}" for name, v in top_joints(spec, w, 3))
            name = spec.get_class(cid).name[:34]
            print(f"{cid:<6} {name:<34} " + " ".join(f"{m:5.2f}" for m in mass) + f"  {top}")

    if len(backends) > 1:
        a, b = backends[:2]
        cos = [cosine(results[a][c], results[b][c]) for c, _, _ in items]
        top1 = sum(
            top_joints(spec, results[a][c], 1)[0][0] == top_joints(spec, results[b][c], 1)[0][0]
            for c, _, _ in items
        )
        mean_cos = sum(cos) / len(cos)
        print(f"\n=== agreement {a} vs {b}: mean cosine {mean_cos:.3f}, same top joint {top1}/{len(items)}")
    else:
        print("\nagreement between backends: not computed (one backend ran)")


if __name__ == "__main__":
    main()

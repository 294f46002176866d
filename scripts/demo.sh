#!/usr/bin/env bash
# The main job on the embedded defaults, end to end, on a small subset (a few minutes on 2 cores).
# Run through `make demo` (which sets up .venv first). Each part appends its step below.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
# A demo database of its own, so the demo never touches the user's knowledge base.
export KBGEN_HOME="${KBGEN_HOME:-$PWD/.demo/kbgen}"
mkdir -p "$KBGEN_HOME"

echo "== 1. knowledge base: two NW-UCLA classes from the embedded SmolLM2-135M (offline) =="
"$BIN/kbgen" generate --dataset nwucla --classes a01,a02 --concurrency 2
"$BIN/kbgen" show --dataset nwucla a01

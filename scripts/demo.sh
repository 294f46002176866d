#!/usr/bin/env bash
# The main job on the embedded defaults, end to end, on NW-UCLA (a few minutes on 2 cores):
# LLM knowledge base (embedded SmolLM2-135M, offline) -> key joints -> knowledge pack -> prepared
# skeleton store -> a short CrossGLG training on the CPU -> one-shot evaluation on the novel classes.
# Run through `make demo` (which sets up .venv first). Everything goes under .demo/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DEMO="$PWD/.demo"
# A demo database of its own, so the demo never touches the user's knowledge base.
export KBGEN_HOME="${KBGEN_HOME:-$DEMO/kbgen}"
mkdir -p "$KBGEN_HOME" "$DEMO"
NWUCLA_RAW="${NWUCLA_RAW:-../shared/data/nwucla/all_sqe}"

echo "== 1. knowledge base: the 10 NW-UCLA classes from the embedded SmolLM2-135M (offline) =="
# A rerun skips the classes already complete. The 135M model is for trying the tool, not for research text.
"$BIN/kbgen" generate --dataset nwucla --concurrency 2
"$BIN/kbgen" list --dataset nwucla
"$BIN/kbgen" show --dataset nwucla a01

echo "== 2. key joints: noun phrases of each global text mapped to joints =="
"$BIN/kbgen" keyjoints --dataset nwucla
"$BIN/kbgen" keyjoints --dataset nwucla --explain a01
"$BIN/kbgen" plot --dataset nwucla a01 a05 a11 -o "$DEMO/keyjoints.png"

echo "== 3. knowledge pack: MiniLM text embeddings + k_gt =="
"$BIN/kbgen" embed --dataset nwucla -o "$DEMO/nwucla.kpack.safetensors"
"$BIN/kbgen" pack info "$DEMO/nwucla.kpack.safetensors"

if [ ! -d "$NWUCLA_RAW" ]; then
  echo "NW-UCLA skeletons not found at $NWUCLA_RAW: set NWUCLA_RAW to the all_sqe folder to run the training part."
  exit 0
fi

echo "== 4. skeleton store: NW-UCLA prepared (streaming, bad files reported) =="
if [ ! -f "$DEMO/stores/nwucla/manifest.json" ]; then
  "$BIN/trainer" prepare --dataset nwucla --raw "$NWUCLA_RAW" --out "$DEMO/stores/nwucla"
fi
"$BIN/trainer" data split "$DEMO/stores/nwucla" --protocol oneshot

echo "== 5. a short InfoGCN + CrossGLG training on the CPU, then one-shot evaluation =="
# One warm-up epoch on 32-frame windows (lr 0.1 without warm-up diverges): this shows the whole path
# on a CPU, not the accuracy
# (docs/results.md has the real runs, made on a GPU with the shipped config).
rm -rf "$DEMO/run"
"$BIN/trainer" run --config nwucla_oneshot --run-dir "$DEMO/run" \
  --set data.store="$DEMO/stores/nwucla" --set knowledge.pack="$DEMO/nwucla.kpack.safetensors" \
  --set optim.epochs=1 --set optim.warmup_epochs=1 --set optim.milestones=[] \
  --set data.window=32 --set data.batch_size=32 --set eval.exemplar_draws=3
"$BIN/trainer" report "$DEMO/run" -o "$DEMO/report.md"
cat "$DEMO/report.md"
echo "Run directory: $DEMO/run (results.json, plots/); key-joint plot: $DEMO/keyjoints.png"

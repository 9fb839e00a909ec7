#!/usr/bin/env bash
# demo.sh - set up, build Kiln, train models/mlp.kl on Fashion-MNIST, report its test accuracy,
# then build a standalone classifier from the trained weights and run it on a few test images.
# Environment: KILN_BUILD (build folder, default build), EPOCHS (default 15), OUT (default
# $KILN_BUILD/demo: the trained weights, metrics.csv, the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KILN_BUILD:-build}
epochs=${EPOCHS:-15}
out=${OUT:-$build/demo}
data=/usr/share/datasets/fashion-mnist # Debian's dataset-fashion-mnist (scripts/setup.sh)
if [ "$(id -u)" -eq 0 ]; then bash scripts/setup.sh; fi
bash scripts/build.sh "$build"
kiln=$build/tools/kiln
mkdir -p "$out"

echo "== kiln train: models/mlp.kl, $epochs epochs of the 60000 training images"
start=$(date +%s.%N)
"$kiln" train models/mlp.kl --data "idx:$data/train" --eval "idx:$data/t10k" --epochs "$epochs" \
  --shuffle --save "$out/trained.safetensors" --log "$out/metrics.csv"
end=$(date +%s.%N)
acc=$(tail -1 "$out/metrics.csv" | cut -d, -f5)
awk -v s="$start" -v e="$end" -v a="$acc" -v n="$(nproc)" 'BEGIN {
  printf "== test accuracy %.2f%% (10000 t10k images); training took %.0f s on %d cores\n",
         100 * a, e - s, n }'

echo "== kiln build: a standalone classifier with the trained weights embedded"
"$kiln" build models/mlp.kl -D batch=8 --weights "$out/trained.safetensors" -o "$out/mlp_bin"
cc -O2 -o "$out/fmnist" scripts/fmnist.c -lz
"$out/fmnist" extract "$data/t10k" 8 "$out/x.npy" >"$out/labels.txt"
"$out/mlp_bin" --input "x=$out/x.npy" --out "$out/pred"
"$out/fmnist" classify "$out/pred/logits.npy" >"$out/predicted.txt"
echo "== the first 8 test images: true label | predicted"
paste -d'|' "$out/labels.txt" "$out/predicted.txt" | awk -F'|' '{ printf "  %-14s | %s\n", $1, $2 }'

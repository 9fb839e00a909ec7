#!/usr/bin/env bash
# passes.sh - fusion and planning figures for every model: nodes, kernels before (one per
# computing node) and after fusion, the arena against the naive sum of buffers and the lower
# bound, and the compile time of each pass (--time-passes).
#
#   bench/passes.sh BUILD/tools/kiln [MODEL.kl...]
set -eu
kiln=${1:?usage: passes.sh KILN [MODEL.kl...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
models=("$@")
[ ${#models[@]} -gt 0 ] || models=("$root"/models/*.kl)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf '%-12s %6s %8s %8s %12s %12s %12s %6s\n' model nodes kernels fused arena sum bound eff
for m in "${models[@]}"; do
  name=$(basename "$m" .kl)
  "$kiln" dump "$m" --stage=planned --time-passes >"$tmp/ir" 2>"$tmp/times"
  # Kernels before fusion: every node that computes (not input, param, state or const).
  nodes=$(grep -c '^  %.* = ' "$tmp/ir")
  before=$(grep '^  %.* = ' "$tmp/ir" | grep -vc ' = \(input\|param\|state\|const\) ')
  after=$(sed -n 's/^  planned {kernels=\([0-9]*\),.*/\1/p' "$tmp/ir")
  field() { sed -n "s/^#   $1 *\([0-9.]*\).*/\1/p" "$tmp/ir"; }
  printf '%-12s %6d %8d %8d %12d %12d %12d %6s\n' "$name" "$nodes" "$before" "$after" \
    "$(field arena)" "$(field sum)" "$(field 'lower bound')" "$(field efficiency)"
  cp "$tmp/times" "$tmp/times.$name"
done
echo
echo "compile time per pass (ms):"
printf '%-12s' model
awk 'NR > 1 && $1 != "total" { printf " %9s", $1 }' "$tmp/times.$(basename "${models[0]}" .kl)"
echo
for m in "${models[@]}"; do
  name=$(basename "$m" .kl)
  printf '%-12s' "$name"
  awk 'NR > 1 && $1 != "total" { printf " %9.3f", $2 }' "$tmp/times.$name"
  echo
done

#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets with clang (ASan+UBSan) and run one.
#   scripts/fuzz.sh frontend 600     fuzz the .kl front end for 600 seconds
#   scripts/fuzz.sh ir 600           fuzz the text IR parser
# Findings land in build-fuzz/findings/; add each as a regression case.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-frontend}
seconds=${2:-60}
CC=clang cmake -S . -B build-fuzz -DKILN_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target "fuzz_$target" -j"$(nproc)"
corpus=build-fuzz/corpus-$target
mkdir -p "$corpus" build-fuzz/findings
# Seeds: the models and golden cases; for the IR, their graph dumps.
case $target in
  frontend)
    find models tests/golden tests/ops/cases -name '*.kl' -exec cp {} "$corpus/" \; ;;
  ir)
    cmake --build build-fuzz --target kiln -j"$(nproc)" >/dev/null
    for m in models/*.kl tests/golden/*.kl; do
      build-fuzz/tools/kiln dump "$m" >"$corpus/$(basename "$m" .kl).ir" 2>/dev/null || true
    done ;;
  *) echo "fuzz.sh: unknown target '$target' (frontend, ir)" >&2; exit 2 ;;
esac
"build-fuzz/tests/fuzz_$target" "$corpus" -max_total_time="$seconds" -max_len=8192 \
  -timeout=10 -rss_limit_mb=2048 -artifact_prefix=build-fuzz/findings/ -print_final_stats=1

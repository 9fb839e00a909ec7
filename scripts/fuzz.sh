#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets with clang (ASan+UBSan) and run them.
#   scripts/fuzz.sh frontend 600     fuzz the .kl front end for 600 seconds
#   scripts/fuzz.sh ir 600           fuzz the text IR parser
#   scripts/fuzz.sh TARGET 600       any target: frontend ir safetensors npy idx rt_safetensors
#   scripts/fuzz.sh --smoke 60       build every target, run each for 60 seconds, two at a time;
#                                    exits 1 on any finding (CI runs this)
# Seeds: tests/fuzz/corpus/TARGET/ (tests/fuzz/make_corpus.py writes them), plus the models and
# goldens for frontend and ir. Findings land in build-fuzz/findings/; add each as a regression case.
set -euo pipefail
cd "$(dirname "$0")/.."
targets="frontend ir safetensors npy idx rt_safetensors"
jobs=2

build() {
  CC=clang cmake -S . -B build-fuzz -DKILN_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  local t list=()
  for t in "$@"; do list+=(--target "fuzz_$t"); done
  cmake --build build-fuzz "${list[@]}" -j"$(nproc)"
}

# seed TARGET: fill build-fuzz/corpus-TARGET (kept between runs, so coverage accumulates).
seed() {
  local t=$1 corpus=build-fuzz/corpus-$1 m
  mkdir -p "$corpus" build-fuzz/findings
  if [ -d "tests/fuzz/corpus/$t" ]; then cp tests/fuzz/corpus/"$t"/* "$corpus/"; fi
  case $t in
    frontend)
      find models tests/golden tests/ops/cases -name '*.kl' -exec cp {} "$corpus/" \; ;;
    ir)
      cmake --build build-fuzz --target kiln -j"$(nproc)" >/dev/null
      for m in models/*.kl tests/golden/*.kl; do
        build-fuzz/tools/kiln dump "$m" >"$corpus/$(basename "$m" .kl).ir" 2>/dev/null || true
      done ;;
  esac
}

# run TARGET SECONDS: libFuzzer's exit status (nonzero on a finding).
run() {
  "build-fuzz/tests/fuzz_$1" "build-fuzz/corpus-$1" -max_total_time="$2" -max_len=8192 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix=build-fuzz/findings/ -print_final_stats=1
}

known() { case " $targets " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if [ "${1:-}" = "--smoke" ]; then
  seconds=${2:-60}
  # shellcheck disable=SC2086
  build $targets
  for t in $targets; do seed "$t"; done
  failed=0 running=0 pids=() names=()
  for t in $targets; do
    run "$t" "$seconds" >"build-fuzz/smoke-$t.log" 2>&1 &
    pids+=($!) names+=("$t")
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
      wait "${pids[0]}" || { failed=1; echo "fuzz smoke: FINDING in ${names[0]}"; tail -40 "build-fuzz/smoke-${names[0]}.log"; }
      pids=("${pids[@]:1}") names=("${names[@]:1}") running=$((running - 1))
    fi
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { failed=1; echo "fuzz smoke: FINDING in ${names[$i]}"; tail -40 "build-fuzz/smoke-${names[$i]}.log"; }
  done
  for t in $targets; do
    echo "fuzz smoke: $t: $(grep -o 'number_of_executed_units: [0-9]*' "build-fuzz/smoke-$t.log" || echo 'no stats')"
  done
  exit "$failed"
fi

target=${1:-frontend}
seconds=${2:-60}
if ! known "$target"; then
  echo "fuzz.sh: unknown target '$target' (${targets// /, })" >&2
  exit 2
fi
build "$target"
seed "$target"
run "$target" "$seconds"

#!/usr/bin/env bash
# profile.sh - the raw numbers behind bench/ANALYSIS.md: for each benchmark model at 1 thread,
# a cpu-clock profile of Kiln's training step per kernel (with FLOPs, bytes and roofline per
# kernel: bench/profile_kernels.py), perf stat of Kiln's and PyTorch's training-step processes,
# PyTorch's own profile, Kiln's compile-time phases and IR sizes, and the memory breakdown.
#
#   bash bench/profile.sh [--build DIR] [--worktree] [--out DIR] [MODEL...]
#
# --build DIR  where to build (default build-prof): HEAD exported with `git archive` into
#              DIR/src and built (Release, kiln target only) into DIR/obj, so uncommitted work
#              of others in the working tree is not measured. --worktree builds the working
#              tree instead.
# --out DIR    raw files (default DIR/profile): per model M: M.compile.txt (kiln compile -v
#              --time-passes, /usr/bin/time), M.planned.txt, M.launches.txt, M.ir-size.txt,
#              M.perf.txt (perf report --sort sym), M.kernels.md (per-kernel table),
#              M.annotate.txt (the hottest instructions of the two slowest kernels),
#              M.stat.kiln.txt / M.stat.torch.txt (perf stat), M.torch.perf.txt (PyTorch's
#              profile by library and symbol), M.rss.txt; roofs.txt (bench/roofs.c: the
#              FMA and memory roofs one thread gets at the time); uptime before each.
# Needs perf (linux-perf), python3-torch, and what scripts/setup.sh installs. This VM exposes
# no hardware PMU ("no PMU driver, software events only" in dmesg): cycles and instructions
# are <not supported>, so profiles use the cpu-clock software event and perf stat gives
# task-clock, faults and switches; valgrind 3.19 cannot run the AVX-512 code (SIGILL).
# Takes about 3 minutes on the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-prof
out=
worktree=0
models=()
while [ $# -gt 0 ]; do
  case $1 in
  --build) build=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  --worktree) worktree=1; shift ;;
  -*) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
  *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(mlp cnn textcls transformer)
out=${out:-$build/profile}
root=$PWD
mkdir -p "$out"
out=$(cd "$out" && pwd)

commit=$(git rev-parse --short HEAD)
if [ $worktree = 1 ]; then
  src=.
  desc="working tree at $commit ($(git status --porcelain --untracked-files=no | wc -l) modified files)"
else
  src=$build/src
  rm -rf "$src"
  mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
  desc="HEAD $commit (git archive)"
fi
obj=$build/obj
echo "== building Kiln, $desc, into $obj (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
cmake -S "$src" -B "$obj" -DCMAKE_BUILD_TYPE=Release -DKILN_VERIFY_PASSES=OFF \
  -DKILN_WERROR=OFF >/dev/null
cmake --build "$obj" --target kiln -j"$(nproc)" >/dev/null
kiln=$root/$obj/tools/kiln
bench=$root/$build/kiln_bench
cc -O2 -g -std=c11 -Wall -Wextra -I "$src/runtime" bench/kiln_bench.c -o "$bench" -ldl
{
  echo "kiln: $desc"
  echo "date: $(date -Iseconds)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
  echo "perf: $(perf --version)"
  grep -i 'PMU' /proc/version /dev/null 2>/dev/null || true
  echo "perf stat cycles,instructions:"
  perf stat -e cycles,instructions true 2>&1 | grep -E 'cycles|instructions' || true
} >"$out/machine.txt"

freq=10000
declare -A steps=([mlp]=200 [cnn]=30 [textcls]=30 [transformer]=30)
declare -A ranges=([mlp]="--range y=10" [cnn]="--range y=10" [textcls]="--range ids=5000 --range y=2"
  [transformer]="--range ids=256 --range targets=256")
torch_env=(env -u OPENBLAS_L2_SIZE -u LD_LIBRARY_PATH -u LD_PRELOAD OPENBLAS_CORETYPE=SkylakeX
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296)
load() { echo "uptime: $(uptime)"; }

# The roofs one thread gets right now (FMA throughput, memory bandwidth; bench/roofs.c).
cc -O2 -mavx512f -std=c11 bench/roofs.c -o "$build/roofs"
{ load; "$build/roofs"; } >"$out/roofs.txt"


for m in "${models[@]}"; do
  echo "== $m (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  kl=$root/models/$m.kl
  so=$out/$m.so
  n=${steps[$m]}
  # shellcheck disable=SC2206
  rg=(${ranges[$m]})

  # Compile: Kiln's passes, LLVM's phases, wall/CPU time and peak memory of the compiler.
  { load; /usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KiB" \
      "$kiln" compile "$kl" -o "$so" --time-passes -v; } >"$out/$m.compile.txt" 2>&1
  "$kiln" dump "$kl" --stage=planned >"$out/$m.planned.txt"
  "$kiln" dump "$kl" --stage=llvm -O2 2>/dev/null >"$out/$m.O2.ll"
  sed -n 's/^define internal.*@\(kiln_k[^(]*\)(.*/\1/p' "$out/$m.O2.ll" >"$out/$m.launches.txt"
  # IR size before (-O0) and after (-O2) LLVM's optimization, machine instructions emitted.
  {
    "$kiln" dump "$kl" --stage=llvm -O0 2>/dev/null >"$out/$m.O0.ll"
    "$kiln" dump "$kl" --stage=asm -O2 2>/dev/null >"$out/$m.s"
    echo "LLVM IR instructions at -O0 (before optimization): $(grep -c '^  [^ ;]' "$out/$m.O0.ll")"
    echo "LLVM IR instructions at -O2 (after optimization):  $(grep -c '^  [^ ;]' "$out/$m.O2.ll")"
    echo "machine instructions emitted (-O2):                 $(grep -cE '^\s+[a-z]' "$out/$m.s")"
    echo "functions defined: $(grep -c '^define' "$out/$m.O2.ll")"
    echo "largest functions after -O2 (IR instructions):"
    awk '/^define/ { f = $0; sub(/\(.*/, "", f); sub(/.*@/, "", f); n = 0 }
         /^  [^ ;]/ { n++ } /^}/ { if (f != "") print n, f; f = "" }' "$out/$m.O2.ll" |
      sort -rn | head -12 || true
    echo "vector FMAs in the emitted code: $(grep -cE 'vfmadd[0-9]+ps.*zmm' "$out/$m.s") zmm," \
      "$(grep -cE 'vfmadd[0-9]+ps.*ymm' "$out/$m.s") ymm," \
      "$(grep -cE 'vfmadd[0-9]+ss' "$out/$m.s") scalar"
  } >"$out/$m.ir-size.txt"
  rm -f "$out/$m.O0.ll" "$out/$m.s"

  # Kiln's training step, 1 thread: cpu-clock profile per symbol.
  load >"$out/$m.perf.txt"
  perf record -q -e cpu-clock -F $freq -o "$out/$m.perf.data" -- \
    "$bench" "$so" train 1 --reps "$n" --warmup 3 --max-seconds 1000 "${rg[@]}" \
    >"$out/$m.bench.json" 2>/dev/null
  perf report -i "$out/$m.perf.data" --no-children --sort sym --stdio -n 2>/dev/null |
    grep '%' >>"$out/$m.perf.txt"
  median=$(sed -n 's/.*"median_ms":\([0-9.]*\).*/\1/p' "$out/$m.bench.json")
  /usr/bin/python3 bench/profile_kernels.py "$out/$m.planned.txt" "$out/$m.launches.txt" \
    "$out/$m.perf.txt" $((n + 3)) $freq "$median" >"$out/$m.kernels.md"
  # The hottest instructions of the two slowest kernels (share of that kernel's samples).
  : >"$out/$m.annotate.txt"
  for sym in $(grep -o 'kiln_k[0-9]*_[a-z0-9_]*' "$out/$m.perf.txt" | head -3 || true); do
    echo "== $sym" >>"$out/$m.annotate.txt"
    perf annotate -i "$out/$m.perf.data" --stdio -s "$sym" 2>/dev/null >"$out/ann.tmp" || true
    /usr/bin/python3 bench/profile_kernels.py --annotate "$out/ann.tmp" >>"$out/$m.annotate.txt"
    grep -E '^\s+[0-9]+\.[0-9]+ +:' "$out/ann.tmp" | sort -rn | head -20 >>"$out/$m.annotate.txt" || true
  done
  rm -f "$out/ann.tmp"
  rm -f "$out/$m.perf.data"

  # perf stat of the whole process, Kiln and PyTorch (tuned, 1 thread), 30 timed steps.
  { load; perf stat -e task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions \
      "$bench" "$so" train 1 --reps 30 --warmup 3 --max-seconds 1000 "${rg[@]}"; } \
    >"$out/$m.stat.kiln.txt" 2>&1
  { load; "${torch_env[@]}" perf stat -e task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions \
      /usr/bin/python3 bench/torch_bench.py "$m" 1 train --reps 30 --warmup 3 --max-seconds 1000; } \
    >"$out/$m.stat.torch.txt" 2>&1
  # PyTorch's profile: the whole process (import and model build included), by library and
  # by symbol.
  { load; "${torch_env[@]}" perf record -q -e cpu-clock -F $freq -o "$out/$m.torch.data" -- \
      /usr/bin/python3 bench/torch_bench.py "$m" 1 train --reps "$n" --warmup 3 \
      --max-seconds 1000 2>/dev/null
    perf report -i "$out/$m.torch.data" --no-children --sort dso --stdio -n 2>/dev/null |
      grep '%' | head -12 || true
    perf report -i "$out/$m.torch.data" --no-children --sort dso,sym --stdio -n 2>/dev/null |
      grep '%' | head -25 || true; } >"$out/$m.torch.perf.txt" 2>&1
  rm -f "$out/$m.torch.data"

  # Memory: kiln_bench's peak RSS after 50 steps and the instance block (params, gradients,
  # optimizer state, arena), and the plan's arena figures.
  { load; "$bench" "$so" rss 1 "${rg[@]}";
    grep '^#   \(arena\|sum\|lower bound\|outside\)' "$out/$m.compile.txt"; } >"$out/$m.rss.txt" 2>&1
  # Batch-1 inference (-D batch=1 --no-train): profile of 20000 calls.
  if [ "$m" = mlp ] || [ "$m" = transformer ]; then
    "$kiln" compile "$kl" -o "$out/$m.b1.so" -D batch=1 --no-train 2>/dev/null
    { load; perf record -q -e cpu-clock -F $freq -o "$out/$m.b1.data" -- \
        "$bench" "$out/$m.b1.so" infer 1 --name "$m" --reps 20000 --warmup 100 --max-seconds 1000 \
        "${rg[@]}" 2>/dev/null | grep -o '"median_ms":[0-9.]*'
      perf report -i "$out/$m.b1.data" --no-children --sort sym --stdio -n 2>/dev/null |
        grep '%' | head -20 || true; } >"$out/$m.infer1.perf.txt" 2>&1
    rm -f "$out/$m.b1.data"
  fi
done
echo "== done: $out" >&2

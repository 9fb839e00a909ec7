#!/usr/bin/env bash
# run.sh - issue 7's benchmarks in one command: build Kiln and the drivers, measure Kiln beside
# PyTorch (tuned and as installed) and OpenBLAS at 1 and 2 threads, write bench/RESULTS.md.
#
#   bash bench/run.sh [--build DIR] [--head] [--quick] [run_all.py options...]
#
# --build DIR  build directory (default build-bench): a Release build of the kiln target only,
#              KILN_VERIFY_PASSES=OFF, so nothing races other builds in build/.
# --head       build and measure the committed HEAD (exported with `git archive` into
#              DIR/head-src, built in DIR/head) instead of the working tree, whose
#              uncommitted changes may be half-done work of others.
# --quick      few repeats and a few GEMM shapes: checks the harness.
# Other options go to run_all.py (e.g. --quiet-busy 0.5 --quiet-wait 60: wait before each
# section until other processes leave the CPUs mostly idle).
# Takes about 10 minutes on the 2-core machine. Needs what scripts/setup.sh installs plus
# python3-torch and libopenblas-dev (the PyTorch and OpenBLAS peers). Raw measurements:
# DIR/bench/results.jsonl; `bench/run_all.py --report-only DIR/bench/results.jsonl` rewrites
# RESULTS.md from them. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-bench
head=0
args=()
while [ $# -gt 0 ]; do
  case $1 in
  --build) build=$2; shift 2 ;;
  --head) head=1; shift ;;
  *) args+=("$1"); shift ;;
  esac
done
jobs=$(nproc)
mkdir -p "$build/bench"

src=.
obj=$build
commit=$(git rev-parse --short HEAD)
if [ $head = 1 ]; then
  src=$build/head-src
  obj=$build/head
  rm -rf "$src"
  mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
  args+=(--src "$src" --commit "$commit")
fi
echo "== building Kiln ($([ $head = 1 ] && echo "HEAD $commit" || echo "working tree")) into $obj" \
  "(load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
cmake -S "$src" -B "$obj" -DCMAKE_BUILD_TYPE=Release -DKILN_VERIFY_PASSES=OFF -DKILN_WERROR=OFF \
  >/dev/null
cmake --build "$obj" --target kiln -j"$jobs" >/dev/null

echo "== building the drivers" >&2
cc -O2 -std=c11 -Wall -Wextra -I runtime bench/kiln_bench.c -o "$build/bench/kiln_bench" -ldl
cc -O2 -std=c11 -Wall -Wextra -I runtime bench/gemm_openblas.c -o "$build/bench/gemm_openblas" -lopenblas -ldl

# Debian's OpenMP build of OpenBLAS for PyTorch at 2 threads (issue 7), unpacked once.
omp_dir=$PWD/$build/openblas-openmp
omp_lib=$omp_dir/usr/lib/x86_64-linux-gnu/openblas-openmp
omp_note=""
if [ ! -e "$omp_lib/libopenblas.so.0" ]; then
  echo "== fetching libopenblas0-openmp" >&2
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  if (cd "$tmp" && apt-get download libopenblas0-openmp >/dev/null 2>"$tmp/err") &&
    dpkg-deb -x "$tmp"/libopenblas0-openmp_*.deb "$omp_dir"; then
    :
  else
    omp_note="apt-get download libopenblas0-openmp failed: $(tail -1 "$tmp/err" 2>/dev/null)"
    echo "warning: $omp_note; PyTorch at 2 threads uses the installed OpenBLAS" >&2
  fi
  rm -rf "$tmp"
fi
[ -e "$omp_lib/libopenblas.so.0" ] || omp_lib=""

/usr/bin/python3 bench/run_all.py --build "$build" --kiln "$obj/tools/kiln" \
  --tools "$build/bench" --openmp-blas "$omp_lib" --openmp-note "$omp_note" \
  "${args[@]+"${args[@]}"}"

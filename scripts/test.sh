#!/usr/bin/env bash
# test.sh - set up, build and run the whole test suite.
#   scripts/test.sh              the normal build, in build/
#   scripts/test.sh --sanitize   an ASan+UBSan build with -Werror, in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = "--sanitize" ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  bash scripts/build.sh build-asan -DKILN_SANITIZE=ON -DKILN_WERROR=ON -DCMAKE_BUILD_TYPE=Debug
  dir=build-asan
else
  bash scripts/build.sh build -DKILN_WERROR=ON
  dir=build
fi
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)"

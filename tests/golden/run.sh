#!/usr/bin/env bash
# run.sh - golden tests. Each case (*.kl, *.ir, *.run) holds lines "# RUN: ARGS";
# kiln runs with ARGS (%s is the case file) and its output, stderr included,
# plus "[exit N]", must equal CASE.expected. Every graph a case dumps must
# also read back: dump(parse(dump)) == dump.
#
#   run.sh KILN            check
#   run.sh KILN --update   rewrite the .expected files (review with git diff)
set -u
kiln=$(realpath "$1")
update=${2:-}
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

run_case() {
  local case=$1 line args
  grep '^# RUN: ' "$case" | sed 's/^# RUN: //' | while IFS= read -r line; do
    args=${line//%s/$case}
    echo "\$ kiln $args"
    eval "set -- $args"
    "$kiln" "$@" 2>&1
    echo "[exit $?]"
  done
}

# Every --stage=graph, fused or planned dump in a case must read back to the same text (read
# back at the graph stage: dce keeps every node, so kernels and buffers stay as printed).
check_roundtrip() {
  local case=$1 line args
  grep '^# RUN: dump .*--stage=\(graph\|fused\|planned\)' "$case" |
    grep -v -- '--format=dot\|--print\|--stop\|--time\|--explain' |
    sed 's/^# RUN: //' | while IFS= read -r line; do
      args=${line//%s/$case}
      eval "set -- $args"
      "$kiln" "$@" >"$tmp/a.ir" 2>/dev/null || continue
      "$kiln" dump "$tmp/a.ir" --stage=graph >"$tmp/b.ir" 2>&1 || true
      if ! cmp -s "$tmp/a.ir" "$tmp/b.ir"; then
        echo "FAIL round trip: $case ($line)"
        diff "$tmp/a.ir" "$tmp/b.ir" | head -20
      fi
    done
}

for case in *.kl *.ir *.run; do
  [ -f "$case" ] || continue
  expected="${case%.*}.expected"
  run_case "$case" >"$tmp/out"
  if [ "$update" = "--update" ]; then
    cp "$tmp/out" "$expected"
  fi
  rt=$(check_roundtrip "$case")
  if [ -f "$expected" ] && cmp -s "$tmp/out" "$expected" && [ -z "$rt" ]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $case"
    [ -f "$expected" ] || echo "  (no $expected: run with --update)"
    [ -f "$expected" ] && diff -u "$expected" "$tmp/out" | head -40
    [ -n "$rt" ] && echo "$rt"
  fi
done
echo "golden: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

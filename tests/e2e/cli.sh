#!/usr/bin/env bash
# cli.sh - the kiln command line as a user runs it: exit codes, messages, no crashes.
# usage: cli.sh KILN   (run from the repository root)
set -u
kiln=$(realpath "$1")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect STATUS PATTERN ARGS...: exit status STATUS, stderr+stdout matching PATTERN.
expect() {
  local want=$1 pattern=$2
  shift 2
  "$kiln" "$@" >"$tmp/out" 2>&1
  local got=$?
  if [ "$got" -ne "$want" ]; then
    bad "kiln $* exited $got, expected $want"; head -5 "$tmp/out"; return
  fi
  if ! grep -qE -- "$pattern" "$tmp/out"; then
    bad "kiln $*: output lacks /$pattern/"; head -5 "$tmp/out"; return
  fi
  ok
}

# Parameter counts of ../shared/BENCH_MODELS.md.
expect 0 '^parameters: 535818$' check models/mlp.kl
expect 0 '^parameters: 421642$' check models/cnn.kl
# --max-memory counts a planned graph's arena, not every value's own buffer: the cnn's train
# step fits in 30 MiB once planned (about 24 MiB), not unplanned (66 MiB).
expect 0 '' dump models/cnn.kl --stage=planned --max-memory 30M
expect 1 "model 'cnn' needs .* more than --max-memory 30.0 MiB" dump models/cnn.kl --stage=opt \
  --max-memory 30M
expect 0 '^parameters: 419586$' check models/textcls.kl
expect 0 '^parameters: 470784$' check models/transformer.kl
expect 0 '^parameters: 961$' check models/regression.kl
expect 0 'x +f32\[1,784\]' check models/mlp.kl -D batch=1
expect 0 'x +f32\[1,784\]' check models/mlp.kl -Dbatch=1

# Usage errors: exit 2 and a usage line.
expect 2 '^usage: kiln' 
expect 2 "unknown command 'frobnicate'" frobnicate
expect 2 "unknown flag '--bogus'" check models/mlp.kl --bogus
expect 2 "-D value must be a positive integer" check models/mlp.kl -D batch=x
expect 2 "-D value must be a positive integer" check models/mlp.kl -D batch=99999999999999999999
expect 2 'unknown stage' dump models/mlp.kl --stage=nope
expect 2 'missing MODEL' dump
expect 0 '^usage: kiln dump' dump --help
expect 0 'Commands:' help

# Bad input: exit 1, located message, never a signal.
printf 'model m {\n  input x: f32[2]\n  output x\n}\n' >"$tmp/ok.kl"
expect 0 '^parameters: 0$' check "$tmp/ok.kl"
expect 1 'cannot open' check "$tmp/missing.kl"
: >"$tmp/empty.kl"
expect 1 'empty.kl' check "$tmp/empty.kl"
head -c 4096 /dev/urandom >"$tmp/garbage.kl" 2>/dev/null || printf '\x00\xff\x01garbage' >"$tmp/garbage.kl"
expect 1 'garbage.kl:[0-9]+:[0-9]+: error:' check "$tmp/garbage.kl"
printf 'model m {\n  input x: f32[2]\x00\n  output x\n}\n' >"$tmp/nul.kl"
expect 1 'nul.kl:2:18: error:' check "$tmp/nul.kl"
printf 'model m { # caf\xe9\n  input x: f32[2]\n  output x\n}\n' >"$tmp/latin1.kl"
expect 1 'latin1.kl:1:[0-9]+: error:' check "$tmp/latin1.kl"
{ printf 'model m {\n  input x: f32[2]\n  y = '; head -c 100000 /dev/zero | tr '\0' '('; printf 'x\n  output y\n}\n'; } >"$tmp/deep.kl"
expect 1 'deep.kl:3:[0-9]+: error: .*nested too deeply' check "$tmp/deep.kl"
{ printf 'model m {\n  input x: f32[2]\n  y = '; for i in $(seq 3000); do printf -- '-'; done; printf 'x\n  output y\n}\n'; } >"$tmp/neg.kl"
expect 1 'neg.kl:3:[0-9]+: error:' check "$tmp/neg.kl"

# Every model's dot output renders.
if command -v dot >/dev/null; then
  for m in models/*.kl; do
    if "$kiln" dump "$m" --format=dot >"$tmp/g.dot" 2>&1 && dot -Tsvg "$tmp/g.dot" -o "$tmp/g.svg" &&
      grep -q '<svg' "$tmp/g.svg"; then ok; else bad "dot output of $m does not render"; fi
  done
else
  echo "note: graphviz missing, dot rendering not checked (scripts/setup.sh installs it)"
fi

# The text IR of every model reads back to the same text.
for m in models/*.kl; do
  "$kiln" dump "$m" >"$tmp/a.ir" 2>&1 && "$kiln" dump "$tmp/a.ir" >"$tmp/b.ir" 2>&1 &&
    cmp -s "$tmp/a.ir" "$tmp/b.ir" && ok || bad "IR of $m does not round-trip"
done

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

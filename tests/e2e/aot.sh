#!/usr/bin/env bash
# aot.sh - ahead-of-time compilation as a user runs it: kiln compile to .so + .h, a C program
# against the header, kiln build executables with embedded weights, kiln run --backend=jit, all
# against kiln run --backend=interp on the same inputs; dependencies and bad input.
# usage: aot.sh KILN   (run from the repository root; exits 77, "skipped", without an LLVM backend)
set -u
kiln=$(realpath "$1")
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect STATUS PATTERN CMD...: exit status STATUS, stdout+stderr matching PATTERN.
expect() {
  local want=$1 pattern=$2
  shift 2
  "$@" >"$tmp/out" 2>&1
  local got=$?
  if [ "$got" -ne "$want" ]; then
    bad "$* exited $got, expected $want"; head -5 "$tmp/out"; return
  fi
  if [ -n "$pattern" ] && ! grep -qE -- "$pattern" "$tmp/out"; then
    bad "$*: output lacks /$pattern/"; head -5 "$tmp/out"; return
  fi
  ok
}

# Nothing to test until the LLVM backend compiles a model.
if ! "$kiln" compile models/regression.kl -D batch=2 -o "$tmp/probe.so" >"$tmp/out" 2>&1; then
  echo "SKIP: kiln compile does not work yet:"; head -3 "$tmp/out"; exit 77
fi

cc=${CC:-cc}
$cc -O1 -o "$tmp/npytool" tests/e2e/aot/npytool.c -lm || { echo "cannot build npytool"; exit 1; }
npy() { "$tmp/npytool" "$@"; }

# Only libc, libm, pthreads (and the dynamic loader) in NEEDED.
needed_ok() {
  local libs
  libs=$(readelf -d "$1" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
  for l in $libs; do
    case "$l" in
      libc.so.*|libm.so.*|libpthread.so.*|ld-linux*) ;;
      *) bad "$1 needs $l (only libc, libm, pthreads allowed)"; return ;;
    esac
  done
  ok
}

# model NAME INPUT:DTYPE:DIMS[:MAX]... : the inputs of m_infer, for -D batch=2.
check_model() {
  local m=$1; shift
  local d="$tmp/$m" args=() spec name dt dims max
  mkdir -p "$d"
  for spec in "$@"; do
    IFS=: read -r name dt dims max <<<"$spec"
    npy make "$d/$name.npy" "$dt" "$dims" 7 "${max:-10}"
    args+=(--input "$name=$d/$name.npy")
  done
  expect 0 '' "$kiln" init "models/$m.kl" -D batch=2 --seed 3 -o "$d/w.safetensors"
  expect 0 '' "$kiln" run "models/$m.kl" -D batch=2 --backend=interp --weights "$d/w.safetensors" \
    "${args[@]}" --out "$d/interp"
  # JIT
  expect 0 '' "$kiln" run "models/$m.kl" -D batch=2 --backend=jit --weights "$d/w.safetensors" \
    "${args[@]}" --out "$d/jit"
  # .so + .h
  expect 0 '' "$kiln" compile "models/$m.kl" -D batch=2 -o "$d/$m.so"
  [ -f "$d/$m.so" ] && [ -f "$d/$m.h" ] && ok || bad "$m: compile wrote no $m.so and $m.h"
  needed_ok "$d/$m.so"
  local exports
  exports=$(nm -D --defined-only "$d/$m.so" | awk '{print $3}' | grep -v "^${m}_" | tr '\n' ' ')
  [ -z "$exports" ] && ok || bad "$m.so exports more than ${m}_*: $exports"
  # The header compiles on its own, in C and C++.
  printf '#include "%s.h"\nint main(void) { return %s_describe() == 0; }\n' "$m" "$m" >"$d/use.c"
  $cc -std=c11 -Wall -Wextra -Werror -I "$d" -I runtime -o "$d/use" "$d/use.c" "$d/$m.so" \
    -Wl,-rpath,"$d" && "$d/use" && ok || bad "$m.h: a program using it does not build or run"
  # Executable with embedded weights
  expect 0 '' "$kiln" build "models/$m.kl" -D batch=2 -o "$d/$m.bin" --weights "$d/w.safetensors"
  needed_ok "$d/$m.bin"
  expect 0 '' "$d/$m.bin" "${args[@]}" --out "$d/bin"
  expect 0 '' "$d/$m.bin" "${args[@]}" --out "$d/bin1" --threads 1
  for f in "$d"/interp/*.npy; do
    local o
    o=$(basename "$f")
    for v in jit bin bin1; do
      npy cmp "$d/$v/$o" "$f" && ok || bad "$m: $v/$o differs from the interpreter's"
    done
  done
}

check_model regression x:f32:2,13
check_model mlp x:f32:2,784
check_model cnn x:f32:2,1,28,28
check_model textcls ids:i32:2,50:5000
check_model transformer ids:i32:2,64:256

# A C program against mlp.h: create (= kiln init --seed), load, infer, errors, train, save.
d="$tmp/mlp"
npy make "$d/y.npy" i32 2 9 10
"$kiln" init models/mlp.kl -D batch=2 --seed 1 -o "$d/w1.safetensors"
"$kiln" run models/mlp.kl -D batch=2 --backend=interp --weights "$d/w1.safetensors" \
  --input x="$d/x.npy" --out "$d/ref1" >/dev/null
if $cc -std=c11 -O1 -Wall -Wextra -Werror -I "$d" -I runtime -o "$d/app" tests/e2e/aot/app_mlp.c \
  "$d/mlp.so" -Wl,-rpath,"$d" -lm; then
  "$d/app" "$d/w1.safetensors" "$d/w.safetensors" "$d/x.npy" "$d/y.npy" "$d/ref1/logits.npy" \
    "$d/interp/logits.npy" "$d/saved.safetensors" && ok || bad "app_mlp failed"
  # Code generation kept in one module (--threads 1) or split over three: the same program.
  for n in 1 3; do
    expect 0 '' "$kiln" compile models/mlp.kl -D batch=2 --threads "$n" -o "$d/mlp.so"
    "$d/app" "$d/w1.safetensors" "$d/w.safetensors" "$d/x.npy" "$d/y.npy" "$d/ref1/logits.npy" \
      "$d/interp/logits.npy" "$d/saved.safetensors" && ok || bad "app_mlp: .so of --threads $n"
  done
else
  bad "app_mlp does not compile against mlp.h"
fi

# Fused epilogues: the mlp's bias + relu run inside the GEMMs (and the cnn's relu inside the
# convolutions), the backward's relu masks inside the gradient GEMMs.
expect 0 'kiln_k0_matmul_epi2_relu' "$kiln" dump models/mlp.kl --stage=llvm
n=$(grep -c '^define internal .*_matmul_epi' "$tmp/out")
[ "$n" -ge 4 ] && ok || bad "mlp: $n GEMM kernels with an epilogue, expected 4 or more"
expect 0 'kiln_k0_conv2d_epi1_relu' "$kiln" dump models/cnn.kl --stage=llvm

# Identical kernels share one function (llvm_twin.c): the transformer's q, k and v projections
# are one GEMM function launched with three contexts, and far fewer functions than launches.
expect 0 '@kiln_k1_matmul_epi1_add, ptr nonnull %kiln_k2_matmul_epi1_add\.ctx' \
  "$kiln" dump models/transformer.kl --stage=llvm
fns=$(grep -c '^define internal' "$tmp/out")
launches=$(grep -oE '%kiln_k[0-9]+_[a-z0-9_]+\.ctx[0-9]* = alloca' "$tmp/out" |
  sed -E 's/\.ctx[0-9]* = alloca//' | sort -u | wc -l)
[ "$fns" -lt $((launches / 2)) ] && ok ||
  bad "transformer: $fns kernel functions for $launches launches; twins should share them"

# --time-passes: Kiln's passes, then LLVM's phases and the link, one row each.
expect 0 '^plan +[0-9.]+ ' "$kiln" compile models/regression.kl -o "$tmp/tp.so" --time-passes
for row in llvm.lower llvm.optimize llvm.codegen link.header; do
  grep -qE "^$row +[0-9]+\.[0-9]{3}\$" "$tmp/out" && ok || bad "--time-passes lacks a $row row"
done

# The executable's command line and bad input: exit 1 with a message naming what is wrong.
bin="$d/mlp.bin"
expect 0 'usage: .*--input NAME=FILE.npy' "$bin" --help
expect 0 'x +f32\[2, 784\]' "$bin" --help
expect 2 "unknown flag '--bogus'" "$bin" --bogus --out "$tmp/o"
expect 2 'missing --out' "$bin" --input x="$d/x.npy"
expect 1 "missing --input x=FILE.npy \(f32\[2, 784\]\)" "$bin" --out "$tmp/o"
npy make "$tmp/x3.npy" f32 3,784 1
expect 1 "input 'x' is f32\[3, 784\], the model expects f32\[2, 784\]" \
  "$bin" --input x="$tmp/x3.npy" --out "$tmp/o"
expect 1 "the model has no input 'z'" "$bin" --input z="$tmp/x3.npy" --out "$tmp/o"
expect 1 'not a .npy file' "$bin" --input x="$d/w.safetensors" --out "$tmp/o"
"$kiln" init models/cnn.kl -D batch=2 -o "$tmp/wcnn.safetensors"
expect 1 "unexpected tensor 'conv1.w'|missing param" \
  "$bin" --weights "$tmp/wcnn.safetensors" --input x="$d/x.npy" --out "$tmp/o"
[ ! -e "$tmp/o" ] || [ -z "$(ls -A "$tmp/o")" ] && ok || bad "a failed run left output files"

# kiln compile / build flags and bad input.
expect 0 '' "$kiln" compile models/mlp.kl -D batch=2 --emit=header -o "$tmp/only.h"
expect 0 'int mlp_infer\(mlp \*self' cat "$tmp/only.h"
expect 0 'const float \*x' cat "$tmp/only.h"
expect 0 '' "$kiln" compile models/mlp.kl -D batch=2 --no-train --emit=header -o "$tmp/nt.h"
expect 1 '' grep -q train_step "$tmp/nt.h"
expect 0 '' "$kiln" compile models/mlp.kl -D batch=2 --emit=llvm -o "$tmp/m.ll"
expect 0 'define' cat "$tmp/m.ll"
expect 0 '' "$kiln" compile models/mlp.kl -D batch=2 --emit=asm -O3 -o "$tmp/m.s"
expect 0 '' "$kiln" compile models/mlp.kl -D batch=2 --emit=obj -O0 -o "$tmp/m.o"
expect 0 'REL \(Relocatable' readelf -h "$tmp/m.o"
expect 0 '' "$kiln" compile models/mlp.kl -D batch=2 --no-train -o "$tmp/nt.so"
expect 2 "unknown --emit 'exe'" "$kiln" compile models/mlp.kl --emit=exe -o "$tmp/x"
expect 2 'missing -o' "$kiln" compile models/mlp.kl
expect 2 'missing -o' "$kiln" build models/mlp.kl
expect 1 "tensor 'fc1.w' is f32\[784, 512\]|missing param|unexpected tensor" \
  "$kiln" build models/cnn.kl -D batch=2 -o "$tmp/bad.bin" --weights "$d/w.safetensors"
[ ! -e "$tmp/bad.bin" ] && ok || bad "a failed kiln build left $tmp/bad.bin"
expect 1 "wcnn.safetensors: (unexpected tensor|missing param)" "$kiln" run models/mlp.kl \
  -D batch=2 --backend=jit --weights "$tmp/wcnn.safetensors" --input x="$d/x.npy" --out "$tmp/o2"
"$kiln" init models/mlp.kl -D batch=2 --seed 0 -o "$tmp/w3.safetensors"
expect 1 "input 'x' is f32\[3, 784\], the model expects f32\[2, 784\]" "$kiln" run models/mlp.kl \
  -D batch=2 --backend=jit --weights "$tmp/w3.safetensors" --input x="$tmp/x3.npy" --out "$tmp/o2"
# A build without weights: params as kiln init --seed 0 writes them.
"$kiln" init models/regression.kl -D batch=2 --seed 0 -o "$tmp/w0.safetensors"
"$kiln" run models/regression.kl -D batch=2 --backend=interp --weights "$tmp/w0.safetensors" \
  --input x="$tmp/regression/x.npy" --out "$tmp/r0" >/dev/null
expect 0 '' "$kiln" build models/regression.kl -D batch=2 -o "$tmp/r.bin"
expect 0 'Weights: none embedded' "$tmp/r.bin" --help
expect 0 '' "$tmp/r.bin" --input x="$tmp/regression/x.npy" --out "$tmp/r0b"
npy cmp "$tmp/r0b/pred.npy" "$tmp/r0/pred.npy" && ok || bad "seed-0 params of a build differ"
ls -A "$tmp" | grep -q '^\.kiln-' && bad "kiln left a temporary folder" || ok

echo "aot: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

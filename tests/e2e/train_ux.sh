#!/usr/bin/env bash
# train_ux.sh - kiln train's reporting and control (--eval, --log, --checkpoint-every, the
# progress bar off a terminal, Ctrl-C) on both backends; kiln build of a trained classifier vs
# kiln run; kiln sample.
# usage: train_ux.sh KILN   (needs python3 for writing test data)
set -u
kiln=$(realpath "$1")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
same() { if cmp -s "$1" "$2"; then ok; else bad "$1 and $2 differ"; fi }

# expect STATUS PATTERN ARGS...: exit status STATUS, stderr+stdout matching PATTERN.
expect() {
  local want=$1 pattern=$2
  shift 2
  "$kiln" "$@" >"$tmp/out" 2>&1
  local got=$?
  if [ "$got" -ne "$want" ]; then
    bad "kiln $* exited $got, expected $want"; head -5 "$tmp/out"; return
  fi
  if [ -n "$pattern" ] && ! grep -qE -- "$pattern" "$tmp/out"; then
    bad "kiln $*: output lacks /$pattern/"; head -5 "$tmp/out"; return
  fi
  ok
}

# A learnable task: 64 points of 4 features, the label the largest of the first 3;
# a held-out set of 37 more (not a multiple of the batch: the last batch wraps).
cat >"$tmp/gen.py" <<'EOF'
import math, struct, sys

def npy(path, descr, shape, values):
    fmt = {"<f4": "<f", "<i4": "<i"}[descr]
    shp = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shp)
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
        f.write(b"".join(struct.pack(fmt, v) for v in values))

def points(d, n, start):
    xs = [[math.sin(1.3 * i + 2.1 * j * j + 0.3 * j) for j in range(4)] for i in range(start, start + n)]
    ys = [max(range(3), key=lambda j: x[j]) for x in xs]
    npy(d + "/x.npy", "<f4", [n, 4], [v for x in xs for v in x])
    npy(d + "/y.npy", "<i4", [n], ys)

points(sys.argv[1] + "/train", 64, 0)
points(sys.argv[1] + "/test", 37, 1000)
for k in range(3):  # three batches of held-out images for kiln build vs kiln run
    points(sys.argv[1] + "/b%d" % k, 8, 2000 + 8 * k)
EOF
mkdir -p "$tmp/train" "$tmp/test" "$tmp/b0" "$tmp/b1" "$tmp/b2"
if ! python3 "$tmp/gen.py" "$tmp"; then
  echo "train_ux: python3 could not write the test data"
  exit 1
fi

cat >"$tmp/cls.kl" <<'EOF'
model cls(batch = 8) {
  input x: f32[batch, 4]
  input y: i32[batch]
  param w1: f32[4, 16] = glorot
  param b1: f32[16] = zeros
  param w2: f32[16, 3] = glorot
  logits = relu(x @ w1 + b1) @ w2
  loss = cross_entropy(logits, y)
  output logits
  train loss with adam(lr = 0.02)
}
EOF
# Not a classifier: --eval reports only the loss.
cat >"$tmp/reg.kl" <<'EOF'
model reg(batch = 8) {
  input x: f32[batch, 4]
  param w: f32[4, 4] = glorot
  loss = mse_loss(x @ w, x)
  train loss with sgd(lr = 0.1)
}
EOF

data="npy:$tmp/train"
for be in jit interp; do
  b="--backend=$be"
  # The loss falls and the held-out accuracy is high; the bar is off off a terminal.
  expect 0 'accuracy 0\.(9|8)' train "$tmp/cls.kl" $b --data "$data" --eval "npy:$tmp/test" \
    --epochs 40 --shuffle --log "$tmp/$be.csv"
  cp "$tmp/out" "$tmp/$be.log"
  if grep -q $'\r' "$tmp/$be.log"; then bad "$be: a \\r in stderr that is not a terminal"; else ok; fi
  first=$(sed -n 's/^step .*loss \([0-9.]*\).*/\1/p' "$tmp/$be.log" | head -1)
  last=$(sed -n 's/^step .*loss \([0-9.]*\).*/\1/p' "$tmp/$be.log" | tail -1)
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a / 2) }' && ok ||
    bad "$be: loss did not fall: $first -> $last"
  # An eval after every epoch (8 steps of 8 = one pass) and the end: 40 of them.
  [ "$(grep -c '^eval after step' "$tmp/$be.log")" = 40 ] && ok || bad "$be: not 40 evals"
  # The CSV: the header, one row per log point, eval columns filled at epoch ends.
  [ "$(head -1 "$tmp/$be.csv")" = "step,epoch,loss,eval_loss,eval_accuracy,seconds" ] && ok ||
    bad "$be: CSV header: $(head -1 "$tmp/$be.csv")"
  [ "$(tail -1 "$tmp/$be.csv" | cut -d, -f1,2)" = "320,40.0000" ] && ok ||
    bad "$be: CSV last row: $(tail -1 "$tmp/$be.csv")"
  awk -F, 'NR > 1 && (NF != 6 || $3 == "" || $6 == "") { exit 1 }
           NR > 1 && $5 != "" { e++ } END { exit !(e == 40) }' "$tmp/$be.csv" && ok ||
    bad "$be: malformed CSV rows"
  expect 0 'eval after step 5 .*: loss [0-9.]+$' train "$tmp/reg.kl" $b --data "$data" \
    --eval "npy:$tmp/test" --steps 5
  # --eval is checked as --data is.
  expect 1 'x.npy' train "$tmp/cls.kl" $b --data "$data" --eval "npy:$tmp/nowhere" --steps 1

  # --checkpoint-every: the checkpoint at step 4 resumes to the uninterrupted run's bytes.
  "$kiln" train "$tmp/cls.kl" $b --data "$data" --steps 7 --shuffle --save "$tmp/full.st" 2>/dev/null
  expect 0 'checkpoint at step 4' train "$tmp/cls.kl" $b --data "$data" --steps 4 --shuffle \
    --checkpoint-every 2 --save "$tmp/ck.st" -v
  grep -q 'checkpoint at step 2' "$tmp/out" && ok || bad "$be: no checkpoint at step 2"
  expect 0 'step 7/7' train "$tmp/cls.kl" $b --data "$data" --steps 3 --shuffle \
    --weights "$tmp/ck.st" --save "$tmp/resumed.st"
  same "$tmp/full.st" "$tmp/resumed.st"
  expect 2 'expects an integer >= 1' train "$tmp/cls.kl" $b --data "$data" --steps 1 \
    --checkpoint-every 0
  expect 2 'needs --save' train "$tmp/cls.kl" $b --data "$data" --steps 1 --checkpoint-every 1
  expect 2 '--eval expects npy:DIR or idx:PREFIX' train "$tmp/cls.kl" $b --data "$data" \
    --steps 1 --eval "$tmp/test"
done

# Ctrl-C: status 130, a message, and a checkpoint that resumes to the same bytes as a run
# that was never interrupted.
"$kiln" train "$tmp/cls.kl" --data "$data" --steps 100000000 --shuffle --save "$tmp/int.st" \
  --log "$tmp/int.csv" >"$tmp/int.log" 2>&1 &
pid=$!
for _ in $(seq 100); do # the CSV header comes just before the first step; at most 20 s
  [ -s "$tmp/int.csv" ] && break
  sleep 0.2
done
sleep 0.3
kill -INT "$pid"
wait "$pid"
status=$?
[ "$status" = 130 ] && ok || bad "SIGINT: exit status $status, expected 130"
k=$(sed -n 's/^kiln: interrupted after step \([0-9]*\); saved to .*/\1/p' "$tmp/int.log")
if [ -n "$k" ] && [ -s "$tmp/int.st" ]; then
  ok
  expect 0 "step $((k + 3))/$((k + 3))" train "$tmp/cls.kl" --data "$data" --steps 3 --shuffle \
    --weights "$tmp/int.st" --save "$tmp/int_resumed.st"
  if [ "$k" -le 3000000 ]; then
    "$kiln" train "$tmp/cls.kl" --data "$data" --steps $((k + 3)) --shuffle \
      --save "$tmp/int_full.st" 2>/dev/null
    same "$tmp/int_full.st" "$tmp/int_resumed.st"
  fi
else
  bad "SIGINT: no checkpoint message: $(tail -2 "$tmp/int.log")"
fi
ls "$tmp"/int.st.tmp.* >/dev/null 2>&1 && bad "SIGINT left a temporary file" || ok

# A trained classifier built with --weights classifies as kiln run does, image for image.
"$kiln" train "$tmp/cls.kl" --data "$data" --epochs 20 --shuffle --save "$tmp/cls.st" 2>/dev/null
if "$kiln" build "$tmp/cls.kl" --weights "$tmp/cls.st" -o "$tmp/cls_bin" >"$tmp/out" 2>&1; then
  ok
  for k in 0 1 2; do
    "$tmp/cls_bin" --input "x=$tmp/b$k/x.npy" --out "$tmp/bin$k" >/dev/null 2>&1
    "$kiln" run "$tmp/cls.kl" --weights "$tmp/cls.st" --input "x=$tmp/b$k/x.npy" \
      --out "$tmp/run$k" >/dev/null 2>&1
    same "$tmp/bin$k/logits.npy" "$tmp/run$k/logits.npy"
  done
else
  bad "kiln build --weights: $(head -3 "$tmp/out")"
fi

# kiln sample: a byte-level LM (untrained, but seeded) continues the prompt, the same for the
# same --seed; it needs --weights and a prompt.
cat >"$tmp/lm.kl" <<'EOF'
model lm(batch = 4, seq = 8) {
  input ids: i32[batch, seq]
  input targets: i32[batch, seq]
  param tok: f32[256, 16] = normal(1.0)
  param w: f32[16, 256] = normal(1.0)
  logits = embedding(ids, tok) @ w
  loss = cross_entropy(logits, targets)
  output logits
  train loss with adam(lr = 0.01)
}
EOF
"$kiln" init "$tmp/lm.kl" -o "$tmp/lm.st" --seed 4 2>/dev/null
expect 0 '' sample "$tmp/lm.kl" --weights "$tmp/lm.st" --prompt "Once upon a time" -n 30 --seed 7
cp "$tmp/out" "$tmp/s1"
[ "$(head -c 16 "$tmp/s1")" = "Once upon a time" ] && [ "$(wc -c <"$tmp/s1")" -ge 47 ] && ok ||
  bad "sample: output is not the prompt and 30 bytes: $(od -c "$tmp/s1" | head -3)"
expect 0 '' sample "$tmp/lm.kl" --weights "$tmp/lm.st" --prompt "Once upon a time" -n 30 --seed 7
same "$tmp/s1" "$tmp/out"
expect 0 '' sample "$tmp/lm.kl" --weights "$tmp/lm.st" --prompt "Once upon a time" -n 30 --seed 8 \
  --temperature 0.5
cmp -s "$tmp/s1" "$tmp/out" && bad "sample: --seed 8 gave --seed 7's text" || ok
expect 2 'missing --prompt' sample "$tmp/lm.kl" --weights "$tmp/lm.st"
expect 2 'missing --weights' sample "$tmp/lm.kl" --prompt hi
expect 2 'temperature expects a positive number' sample "$tmp/lm.kl" --weights "$tmp/lm.st" \
  --prompt hi --temperature 0
expect 1 'kiln sample needs a model' sample "$tmp/cls.kl" --weights "$tmp/cls.st" --prompt hi

# The README's data generators (scripts/gen_*.c) write data their models train on.
if cc -O2 -o "$tmp/gen_textcls" scripts/gen_textcls.c && cc -O2 -o "$tmp/gen_charlm" scripts/gen_charlm.c; then
  ok
  mkdir -p "$tmp/tc/train" "$tmp/tc/test" "$tmp/lm/train" "$tmp/lm/test"
  "$tmp/gen_textcls" "$tmp/tc/train" 64 1 && "$tmp/gen_textcls" "$tmp/tc/test" 40 2 && ok ||
    bad "gen_textcls failed"
  expect 0 'eval after step 2 .*accuracy' train models/textcls.kl -D batch=16 --data \
    "npy:$tmp/tc/train" --eval "npy:$tmp/tc/test" --steps 2
  head -c 20000 /usr/share/common-licenses/GPL-3 >"$tmp/corpus.txt" 2>/dev/null ||
    seq 3000 >"$tmp/corpus.txt"
  "$tmp/gen_charlm" "$tmp/lm/train" "$tmp/lm/test" "$tmp/corpus.txt" >/dev/null && ok ||
    bad "gen_charlm failed"
  expect 0 'eval after step 1 .*accuracy' train models/transformer.kl -D batch=4 --data \
    "npy:$tmp/lm/train" --eval "npy:$tmp/lm/test" --steps 1
else
  bad "cannot compile scripts/gen_textcls.c or scripts/gen_charlm.c"
fi

echo "train_ux: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

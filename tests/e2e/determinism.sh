#!/usr/bin/env bash
# determinism.sh - the same command twice gives the same bytes: kiln init, kiln run and kiln train
# (same model, seed, data and thread count) on every backend built; a different seed differs.
# usage: determinism.sh KILN   (run from the repository root; needs python3 for writing test data)
set -u
kiln=$(realpath "$1")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
same() { if cmp -s "$1" "$2"; then ok; else bad "$3: $1 and $2 differ"; fi }

# run_ok LOG ARGS...: kiln ARGS must succeed.
run_ok() {
  local log=$1
  shift
  if ! "$kiln" "$@" >"$tmp/$log" 2>&1; then bad "kiln $* failed"; head -5 "$tmp/$log"; return 1; fi
}

# ---- Models and data ----------------------------------------------------------
cat >"$tmp/mlp.kl" <<'KL'
model mlp(batch = 4) {
  input x: f32[batch, 6]
  input y: i32[batch]
  param w1: f32[6, 16] = glorot
  param b1: f32[16] = zeros
  param w2: f32[16, 3] = he
  h = gelu(x @ w1 + b1)
  logits = h @ w2
  loss = cross_entropy(logits, y)
  output logits
  train loss with adam(lr = 0.01, weight_decay = 0.01)
}
KL
cat >"$tmp/cnn.kl" <<'KL'
model cnn(batch = 2) {
  input img: f32[batch, 1, 6, 6]
  input t: f32[batch, 2]
  param k: f32[4, 1, 3, 3] = he
  param kb: f32[4] = zeros
  param w: f32[16, 2] = glorot
  c = max_pool2d(relu(conv2d(img, k, kb, padding = 1)), 3)
  z = flatten(c) @ w
  loss = mse_loss(softmax(z), t)
  output z
  train loss with sgd(lr = 0.1, momentum = 0.9)
}
KL
# lstm_grad runs in phases over blocks of rows (backend/llvm/llvm_lower_lstm.c): 24 rows are
# three blocks of the recurrence, 48 tape columns two blocks of dW, 120 steps two of dX.
cat >"$tmp/lstm.kl" <<'KL'
model lstm(batch = 24) {
  input x: f32[batch, 5, 16]
  input y: i32[batch]
  param w_ih: f32[128, 16] = glorot
  param w_hh: f32[128, 32] = glorot
  param b_ih: f32[128] = zeros
  param b_hh: f32[128] = zeros
  param w: f32[32, 3] = glorot
  h = lstm(x, w_ih, w_hh, b_ih, b_hh)
  logits = h[:, -1, :] @ w
  loss = cross_entropy(logits, y)
  output logits
  train loss with sgd(lr = 0.1)
}
KL
mkdir -p "$tmp/mlp" "$tmp/cnn" "$tmp/lstm"
python3 - "$tmp" <<'PY'
import math, struct, sys
d = sys.argv[1]
def npy(path, descr, shape, values):
    fmt = {"<f4": "<f", "<i4": "<i"}[descr]
    shp = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shp)
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
        f.write(b"".join(struct.pack(fmt, v) for v in values))
npy(d + "/mlp/x.npy", "<f4", [10, 6], [math.sin(0.7 * i) for i in range(60)])
npy(d + "/mlp/y.npy", "<i4", [10], [i % 3 for i in range(10)])
npy(d + "/cnn/img.npy", "<f4", [6, 1, 6, 6], [math.cos(0.3 * i) for i in range(216)])
npy(d + "/cnn/t.npy", "<f4", [6, 2], [(i % 2) * 1.0 for i in range(12)])
npy(d + "/x4.npy", "<f4", [4, 6], [math.sin(1.1 * i) for i in range(24)])
npy(d + "/lstm/x.npy", "<f4", [48, 5, 16], [math.sin(0.37 * i) for i in range(3840)])
npy(d + "/lstm/y.npy", "<i4", [48], [i % 3 for i in range(48)])
PY

# ---- kiln init and kiln run ------------------------------------------------------
for s in 1 2; do run_ok init "init" "$tmp/mlp.kl" -o "$tmp/init$s.safetensors" --seed 7; done
same "$tmp/init1.safetensors" "$tmp/init2.safetensors" "kiln init --seed 7 twice"
run_ok init init "$tmp/mlp.kl" -o "$tmp/init3.safetensors" --seed 8 &&
  if cmp -s "$tmp/init1.safetensors" "$tmp/init3.safetensors"; then bad "seeds 7 and 8 give the same params"; else ok; fi

# Backends: the interpreter always; the JIT when this kiln has it.
backends=interp
if "$kiln" run "$tmp/mlp.kl" --backend=jit --weights "$tmp/init1.safetensors" \
  --input x="$tmp/x4.npy" --out "$tmp/probe" >/dev/null 2>&1; then
  backends="interp jit"
fi
for be in $backends; do
  for s in 1 2; do
    run_ok run run "$tmp/mlp.kl" --backend=$be --weights "$tmp/init1.safetensors" \
      --input x="$tmp/x4.npy" --out "$tmp/run-$be-$s"
  done
  same "$tmp/run-$be-1/logits.npy" "$tmp/run-$be-2/logits.npy" "kiln run --backend=$be twice"
done

# ---- kiln train: twice, byte-identical checkpoints ------------------------------
# train NAME BACKEND THREADS SEED: a run of 7 steps (crossing epoch ends, shuffled) into NAME.
train() {
  local name=$1 be=$2 th=$3 seed=$4 model=$5
  run_ok "$name.log" train "$tmp/$model.kl" --backend=$be --threads "$th" --seed "$seed" --shuffle \
    --data "npy:$tmp/$model" --steps 7 --save "$tmp/$name.safetensors"
}
train_backends=interp
if [ "$backends" != interp ] && "$kiln" train "$tmp/mlp.kl" --backend=jit --data "npy:$tmp/mlp" \
  --steps 1 >/dev/null 2>&1; then
  train_backends="interp jit"
fi
for be in $train_backends; do
  for model in mlp cnn lstm; do
    for th in 1 2; do
      train "$model-$be-t$th-a" $be $th 3 $model
      train "$model-$be-t$th-b" $be $th 3 $model
      same "$tmp/$model-$be-t$th-a.safetensors" "$tmp/$model-$be-t$th-b.safetensors" \
        "kiln train $model --backend=$be --threads $th twice"
    done
    # Work split over threads never changes a result.
    same "$tmp/$model-$be-t1-a.safetensors" "$tmp/$model-$be-t2-a.safetensors" \
      "kiln train $model --backend=$be at 1 and 2 threads"
    train "$model-$be-seed4" $be 1 4 $model
    if cmp -s "$tmp/$model-$be-t1-a.safetensors" "$tmp/$model-$be-seed4.safetensors"; then
      bad "kiln train $model: seeds 3 and 4 give the same checkpoint"
    else
      ok
    fi
  done
done
# Resuming from a checkpoint is as deterministic as one run.
for s in 1 2; do
  run_ok "resume$s.log" train "$tmp/mlp.kl" --backend=interp --seed 3 --shuffle --data "npy:$tmp/mlp" \
    --steps 4 --weights "$tmp/mlp-interp-t1-a.safetensors" --save "$tmp/resume$s.safetensors"
done
same "$tmp/resume1.safetensors" "$tmp/resume2.safetensors" "resumed kiln train twice"

echo "determinism: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

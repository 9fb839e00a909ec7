#!/usr/bin/env bash
# train.sh - kiln train and kiln run --grads as a user runs them: data sets, checkpoints, resume, bad data.
# usage: train.sh KILN   (run from the repository root; needs python3 for writing test data)
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
  if [ -n "$pattern" ] && ! grep -qE -- "$pattern" "$tmp/out"; then
    bad "kiln $*: output lacks /$pattern/"; head -5 "$tmp/out"; return
  fi
  ok
}

# absent FILE: a failed command left nothing behind.
absent() { if [ -e "$1" ]; then bad "$1 was left behind"; else ok; fi }
same() { if cmp -s "$1" "$2"; then ok; else bad "$1 and $2 differ"; fi }

# ---- Test data ------------------------------------------------------------
# gen.py writes .npy (version 1.0), IDX (plain and gzip) and safetensors files
# with the standard library only.
cat >"$tmp/gen.py" <<'EOF'
import gzip, json, math, struct, sys

def npy(path, descr, shape, values):
    fmt = {"<f4": "<f", "<f8": "<d", "<i4": "<i"}[descr]
    shp = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shp)
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
        f.write(b"".join(struct.pack(fmt, v) for v in values))

def idx(path, magic, dims, data, gz=False, cut=0):
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)
    raw = raw[:len(raw) - cut]
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)

def safetensors(path, tensors):
    header, blobs, at = {}, [], 0
    for name, dtype, shape, values in tensors:
        raw = b"".join(struct.pack("<f" if dtype == "F32" else "<i", v) for v in values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def keys(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        print(",".join(sorted(k for k in json.loads(f.read(n)) if k != "__metadata__")))

d = sys.argv[2] if len(sys.argv) > 2 else ""
if sys.argv[1] == "data":
    # 10 samples of 4 features; the label is the largest of the first 3.
    xs = [[math.sin(1.3 * i + 0.7 * j) for j in range(4)] for i in range(10)]
    ys = [max(range(3), key=lambda j: xs[i][j]) for i in range(10)]
    flat = [v for r in xs for v in r]
    npy(d + "/npy/x.npy", "<f4", [10, 4], flat)
    npy(d + "/npy/y.npy", "<i4", [10], ys)
    npy(d + "/short/x.npy", "<f4", [10, 4], flat)
    npy(d + "/short/y.npy", "<i4", [9], ys[:9])
    npy(d + "/shape/x.npy", "<f4", [10, 5], flat + [0.0] * 10)
    npy(d + "/shape/y.npy", "<i4", [10], ys)
    npy(d + "/dtype/x.npy", "<f8", [10, 4], flat)
    npy(d + "/dtype/y.npy", "<i4", [10], ys)
    npy(d + "/missing/x.npy", "<f4", [10, 4], flat)
    npy(d + "/batch/x.npy", "<f4", [4, 4], flat[:16])
    npy(d + "/batch/y.npy", "<i4", [4], ys[:4])
    # 7 images of 2x3 pixels and their labels 0..3.
    px = [(37 * i + 11) % 256 for i in range(7 * 6)]
    lab = [i % 4 for i in range(7)]
    idx(d + "/plain-images-idx3-ubyte", 0x803, [7, 2, 3], px)
    idx(d + "/plain-labels-idx1-ubyte", 0x801, [7], lab)
    idx(d + "/gz-images-idx3-ubyte.gz", 0x803, [7, 2, 3], px, gz=True)
    idx(d + "/gz-labels-idx1-ubyte.gz", 0x801, [7], lab, gz=True)
    idx(d + "/trunc-images-idx3-ubyte", 0x803, [7, 2, 3], px, cut=5)
    idx(d + "/trunc-labels-idx1-ubyte", 0x801, [7], lab)
    idx(d + "/truncgz-images-idx3-ubyte.gz", 0x803, [7, 2, 3], px, gz=True, cut=5)
    idx(d + "/truncgz-labels-idx1-ubyte.gz", 0x801, [7], lab, gz=True)
    idx(d + "/magic-images-idx3-ubyte", 0x802, [7, 2, 3], px)
    idx(d + "/magic-labels-idx1-ubyte", 0x801, [7], lab)
    idx(d + "/count-images-idx3-ubyte", 0x803, [7, 2, 3], px)
    idx(d + "/count-labels-idx1-ubyte", 0x801, [6], lab[:6])
    idx(d + "/pix-images-idx3-ubyte", 0x803, [7, 3, 3], px + [0] * 21)
    idx(d + "/pix-labels-idx1-ubyte", 0x801, [7], lab)
    # A checkpoint whose optimizer state has the wrong shape.
    safetensors(d + "/badstate.safetensors",
                [("w", "F32", [4, 3], [0.1] * 12), ("b", "F32", [3], [0.0] * 3),
                 ("optim.w.exp_avg", "F32", [2, 2], [0.0] * 4)])
elif sys.argv[1] == "keys":
    keys(d)
elif sys.argv[1] == "close":
    # Two safetensors files with the same tensors and values within rtol 1e-4, atol 1e-6.
    def read(path):
        b = open(path, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        out = {}
        for k, v in json.loads(b[8:8 + n]).items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            f = {"F32": "f", "F64": "d"}[v["dtype"]]
            out[k] = struct.unpack("<%d%s" % ((e - s) // struct.calcsize(f), f), b[8 + n + s:8 + n + e])
        return out
    a, b = read(d), read(sys.argv[3])
    bad = [k for k in b if k not in a or len(a[k]) != len(b[k]) or
           any(abs(x - y) > 1e-6 + 1e-4 * abs(y) for x, y in zip(a[k], b[k]))]
    if sorted(a) != sorted(b) or bad:
        print("differ:", sorted(a), sorted(b), bad)
        sys.exit(1)
EOF
mkdir -p "$tmp"/{npy,short,shape,dtype,missing,batch}
if ! python3 "$tmp/gen.py" data "$tmp"; then
  echo "train: python3 could not write the test data"
  exit 1
fi
keys() { python3 "$tmp/gen.py" keys "$1"; }

cat >"$tmp/adam.kl" <<'EOF'
model tiny(batch = 4) {
  input x: f32[batch, 4]
  input y: i32[batch]
  param w: f32[4, 3] = glorot
  param b: f32[3] = zeros
  logits = x @ w + b
  loss = cross_entropy(logits, y)
  output logits
  train loss with adam(lr = 0.05, weight_decay = 0.01)
}
EOF
sed 's/adam(lr = 0.05, weight_decay = 0.01)/sgd(lr = 0.5, momentum = 0.9, weight_decay = 0.01)/' \
  "$tmp/adam.kl" >"$tmp/sgd.kl"
cat >"$tmp/img.kl" <<'EOF'
model img(batch = 3) {
  input im: f32[batch, 1, 2, 3]
  input lab: i32[batch]
  param w: f32[6, 4] = glorot
  logits = flatten(im) @ w
  loss = cross_entropy(logits, lab)
  output logits
  train loss with sgd(lr = 0.1, momentum = 0.9)
}
EOF
cat >"$tmp/one.kl" <<'EOF'
model one(batch = 4) {
  input x: f32[batch, 4]
  param w: f32[4, 4] = glorot
  loss = mse_loss(x @ w, x)
  train loss with sgd(lr = 0.1)
}
EOF
cat >"$tmp/infer.kl" <<'EOF'
model m {
  input x: f32[2]
  param w: f32[2] = ones
  y = x * w
  output y
}
EOF

# ---- Training on npy and idx data -------------------------------------------
expect 0 '^step 7/7  loss [0-9.]+  [0-9.]+ steps/s$' train "$tmp/adam.kl" --data "npy:$tmp/npy" \
  --steps 7 --save "$tmp/a7.safetensors"
[ -f "$tmp/a7.safetensors" ] && ok || bad "train --save wrote no file"
[ "$(keys "$tmp/a7.safetensors")" = "b,optim.b.exp_avg,optim.b.exp_avg_sq,optim.step,optim.steps_done,optim.w.exp_avg,optim.w.exp_avg_sq,w" ] &&
  ok || bad "adam checkpoint names: $(keys "$tmp/a7.safetensors")"
expect 0 'step 3/3' train "$tmp/sgd.kl" --data "npy:$tmp/npy" --steps 3 --save "$tmp/s3.safetensors"
[ "$(keys "$tmp/s3.safetensors")" = "b,optim.b.momentum_buffer,optim.steps_done,optim.w.momentum_buffer,w" ] &&
  ok || bad "sgd checkpoint names: $(keys "$tmp/s3.safetensors")"
# --epochs 2 over 10 samples in batches of 4: ceil(20 / 4) = 5 steps.
expect 0 'step 5/5' train "$tmp/adam.kl" --data "npy:$tmp/npy" --epochs 2
expect 0 'step 2/2' train "$tmp/adam.kl" --data "npy:$tmp/npy" --epochs 2 --steps 2
# The loss goes down.
"$kiln" train "$tmp/sgd.kl" --data "npy:$tmp/npy" --steps 60 2>"$tmp/log" >/dev/null
first=$(sed -n 's/.*loss \([0-9.]*\).*/\1/p' "$tmp/log" | head -1)
last=$(sed -n 's/.*loss \([0-9.]*\).*/\1/p' "$tmp/log" | tail -1)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' && ok || bad "loss did not fall: $first -> $last"
expect 0 'step 4/4' train "$tmp/img.kl" --data "idx:$tmp/plain" --steps 4 --save "$tmp/i1.safetensors"
expect 0 'step 4/4' train "$tmp/img.kl" --data "idx:$tmp/gz" --steps 4 --save "$tmp/i2.safetensors"
same "$tmp/i1.safetensors" "$tmp/i2.safetensors"
# Initial params are kiln init's for the seed.
"$kiln" init "$tmp/adam.kl" -o "$tmp/init5.safetensors" --seed 5
expect 0 'step 2/2' train "$tmp/adam.kl" --data "npy:$tmp/npy" --steps 2 --seed 5 --save "$tmp/n1.safetensors"
expect 0 'step 2/2' train "$tmp/adam.kl" --data "npy:$tmp/npy" --steps 2 --weights "$tmp/init5.safetensors" \
  --save "$tmp/n2.safetensors"
same "$tmp/n1.safetensors" "$tmp/n2.safetensors"

# ---- Resuming: 3 steps + 2 steps == 5 steps, byte for byte -------------------
for model in adam sgd; do
  for shuffle in "" "--shuffle --seed 9"; do
    # shellcheck disable=SC2086
    "$kiln" train "$tmp/$model.kl" --data "npy:$tmp/npy" --steps 3 --save "$tmp/r3.st" $shuffle 2>/dev/null &&
      "$kiln" train "$tmp/$model.kl" --data "npy:$tmp/npy" --steps 2 --weights "$tmp/r3.st" \
        --save "$tmp/r5.st" $shuffle 2>"$tmp/log" &&
      "$kiln" train "$tmp/$model.kl" --data "npy:$tmp/npy" --steps 5 --save "$tmp/s5.st" $shuffle 2>/dev/null ||
      bad "$model $shuffle: a training run failed"
    same "$tmp/r5.st" "$tmp/s5.st"
    grep -q 'step 5/5' "$tmp/log" && ok || bad "$model resumed run does not count from step 3"
  done
done
# Shuffling changes the order, and the seed picks it.
"$kiln" train "$tmp/adam.kl" --data "npy:$tmp/npy" --steps 2 --save "$tmp/u0.st" 2>/dev/null
"$kiln" train "$tmp/adam.kl" --data "npy:$tmp/npy" --steps 2 --save "$tmp/u1.st" --shuffle --seed 0 2>/dev/null
"$kiln" train "$tmp/adam.kl" --data "npy:$tmp/npy" --steps 2 --save "$tmp/u2.st" --shuffle --seed 0 2>/dev/null
cmp -s "$tmp/u0.st" "$tmp/u1.st" && bad "--shuffle did not change the order" || ok
same "$tmp/u1.st" "$tmp/u2.st"

# ---- kiln run --grads --------------------------------------------------------
"$kiln" init "$tmp/adam.kl" -o "$tmp/w.safetensors"
expect 0 '' run "$tmp/adam.kl" --weights "$tmp/w.safetensors" --input "x=$tmp/batch/x.npy" \
  --input "y=$tmp/batch/y.npy" --out "$tmp/g" --grads
[ -f "$tmp/g/logits.npy" ] && ok || bad "run --grads wrote no logits.npy"
[ "$(keys "$tmp/g/grads.safetensors" 2>/dev/null)" = "b,loss,w" ] && ok ||
  bad "grads.safetensors names: $(keys "$tmp/g/grads.safetensors" 2>&1)"
[ -z "$(find "$tmp/g" -name '.kiln-out-*')" ] && ok || bad "run --grads left its temporary folder"
# The default backend (the JIT's m_grad) and the interpreter give the same loss and gradients.
expect 0 '' run "$tmp/adam.kl" --backend=interp --weights "$tmp/w.safetensors" \
  --input "x=$tmp/batch/x.npy" --input "y=$tmp/batch/y.npy" --out "$tmp/gi" --grads
python3 "$tmp/gen.py" close "$tmp/g/grads.safetensors" "$tmp/gi/grads.safetensors" && ok ||
  bad "run --grads: the JIT's gradients differ from the interpreter's"
# A train checkpoint runs inference and gradients too: its optim.* state is skipped.
expect 0 '' run "$tmp/adam.kl" --weights "$tmp/a7.safetensors" --input "x=$tmp/batch/x.npy" \
  --input "y=$tmp/batch/y.npy" --out "$tmp/g2" --grads
expect 1 "missing --input y" run "$tmp/adam.kl" --weights "$tmp/w.safetensors" \
  --input "x=$tmp/batch/x.npy" --out "$tmp/g3" --grads
absent "$tmp/g3/grads.safetensors"
"$kiln" init "$tmp/infer.kl" -o "$tmp/wi.safetensors"
expect 2 'train statement' run "$tmp/infer.kl" --weights "$tmp/wi.safetensors" --out "$tmp/g4" --grads

# ---- Usage errors: exit 2 ------------------------------------------------------
expect 2 'missing --data' train "$tmp/adam.kl" --steps 1
expect 2 'npy:DIR or idx:PREFIX' train "$tmp/adam.kl" --data "$tmp/npy" --steps 1
expect 2 'missing --steps' train "$tmp/adam.kl" --data "npy:$tmp/npy"
expect 2 'no train statement' train "$tmp/infer.kl" --data "npy:$tmp/npy" --steps 1
expect 2 'steps expects' train "$tmp/adam.kl" --data "npy:$tmp/npy" --steps 0

# ---- Bad data: exit 1, the file named, nothing saved -----------------------------
expect 1 "missing/y.npy" train "$tmp/adam.kl" --data "npy:$tmp/missing" --steps 1 --save "$tmp/bad1.st"
absent "$tmp/bad1.st"
expect 1 "short/y.npy has 9 samples" train "$tmp/adam.kl" --data "npy:$tmp/short" --steps 1 --save "$tmp/bad2.st"
absent "$tmp/bad2.st"
expect 1 "shape/x.npy: input 'x' needs f32\[10,4\]" train "$tmp/adam.kl" --data "npy:$tmp/shape" --steps 1 \
  --save "$tmp/bad3.st"
absent "$tmp/bad3.st"
expect 1 "dtype/x.npy: .*got f64" train "$tmp/adam.kl" --data "npy:$tmp/dtype" --steps 1 --save "$tmp/bad4.st"
absent "$tmp/bad4.st"
expect 1 "trunc-images-idx3-ubyte: truncated" train "$tmp/img.kl" --data "idx:$tmp/trunc" --steps 1 \
  --save "$tmp/bad5.st"
absent "$tmp/bad5.st"
expect 1 "truncgz-images-idx3-ubyte.gz: (truncated|corrupt)" train "$tmp/img.kl" --data "idx:$tmp/truncgz" \
  --steps 1 --save "$tmp/bad6.st"
absent "$tmp/bad6.st"
expect 1 "magic-images-idx3-ubyte: bad magic 0x00000802" train "$tmp/img.kl" --data "idx:$tmp/magic" --steps 1 \
  --save "$tmp/bad7.st"
absent "$tmp/bad7.st"
expect 1 "7 images but .*6 labels" train "$tmp/img.kl" --data "idx:$tmp/count" --steps 1 --save "$tmp/bad8.st"
absent "$tmp/bad8.st"
expect 1 "3x3 pixels do not fit input 'im'" train "$tmp/img.kl" --data "idx:$tmp/pix" --steps 1 --save "$tmp/bad9.st"
absent "$tmp/bad9.st"
expect 1 "cannot open .*nothere-images-idx3-ubyte" train "$tmp/img.kl" --data "idx:$tmp/nothere" --steps 1
expect 1 "idx: needs a loss that reads one float input" train "$tmp/one.kl" --data "idx:$tmp/plain" --steps 1
expect 1 "optim.w.exp_avg' expects f32\[4,3\]" train "$tmp/adam.kl" --data "npy:$tmp/npy" --steps 1 \
  --weights "$tmp/badstate.safetensors" --save "$tmp/bad10.st"
absent "$tmp/bad10.st"

echo "train: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

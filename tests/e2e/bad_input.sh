#!/usr/bin/env bash
# bad_input.sh - a catalog of bad input: every case exits 1 (bad input) or 2 (usage), says why on
# stderr, is not killed by a signal, and leaves no output or temp file behind (SPEC §2).
# usage: bad_input.sh KILN   (run from the repository root; needs python3 for writing test data)
# Model-text cases are tests/e2e/bad_input/*.kl, each opening with `# expect: REGEX` (the message
# after "FILE:LINE:COL: error: "); binary cases are generated below at test time.
set -u
kiln=$(realpath "$1")
cases=$(realpath tests/e2e/bad_input)
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
data=$tmp/data
mkdir -p "$data"
pass=0
fail=0
n=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# try STATUS PATTERN OUT ARGS...: runs `kiln ARGS` in a fresh folder (its working directory) and
# checks the exit status, that stderr matches PATTERN, that no signal (or the 60 s limit) ended
# it, that OUT (relative to the folder; - for none) does not exist afterwards and that the folder
# holds nothing new (no stray temp files).
try() {
  local want=$1 pattern=$2 out=$3
  shift 3
  n=$((n + 1))
  local dir=$tmp/case$n
  mkdir -p "$dir"
  [ -n "${SETUP:-}" ] && (cd "$dir" && eval "$SETUP")
  local before after got
  before=$(cd "$dir" && find . | sort)
  (cd "$dir" && exec timeout 60 "$kiln" "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr")
  got=$?
  after=$(cd "$dir" && find . | sort)
  if [ "$got" -ge 124 ]; then
    bad "kiln $* ended with $got (a signal or a hang)"; head -5 "$tmp/stderr"
  elif [ "$got" -ne "$want" ]; then
    bad "kiln $* exited $got, expected $want"; head -5 "$tmp/stderr"
  elif ! grep -qE -- "$pattern" "$tmp/stderr"; then
    bad "kiln $*: stderr lacks /$pattern/"; head -5 "$tmp/stderr"
  elif [ "$out" != - ] && [ -e "$dir/$out" ]; then
    bad "kiln $*: left $out behind"
  elif [ "$before" != "$after" ]; then
    bad "kiln $*: left files behind:"; diff <(echo "$before") <(echo "$after") | grep '^>'
  else
    ok
  fi
}

# ---- Model text: tests/e2e/bad_input/*.kl ---------------------------------
for f in "$cases"/*.kl; do
  pat=$(sed -n 's/^# expect: //p' "$f")
  cp "$f" "$data/"
  try 1 "^(.*/)?$(basename "$f"):[0-9]+:[0-9]+: error: $pat" - check "$data/$(basename "$f")"
done
# Generated text: deep nesting, garbage, empty, NUL bytes, non-UTF-8.
python3 - "$data" <<'PY'
import sys
d = sys.argv[1]
open(d + "/deep.kl", "w").write("model m {\n  input x: f32[2]\n  y = " + "(" * 100000 + "x" + ")" * 100000 + "\n  output y\n}\n")
open(d + "/deepneg.kl", "w").write("model m {\n  input x: f32[2]\n  y = " + "-" * 100000 + "x\n  output y\n}\n")
open(d + "/deepdim.kl", "w").write("model m {\n  input x: f32[" + "(" * 100000 + "2" + ")" * 100000 + "]\n  output x\n}\n")
open(d + "/garbage.kl", "wb").write(bytes((i * 131 + 7) % 256 for i in range(4096)))
open(d + "/empty.kl", "wb").write(b"")
open(d + "/nul.kl", "wb").write(b"model m {\n  input x: f32[2]\x00\n  output x\n}\n")
open(d + "/latin1.kl", "wb").write(b"model m\xe9 {\n  input x: f32[2]\n  output x\n}\n")
open(d + "/utf8_bad.kl", "wb").write(b"model m {\n  input x: f32[2]  # \xc3\x28 \xf0\x28\x8c\x28\n  output x\n}\n")
PY
try 1 'deep.kl:3:[0-9]+: error: .*nested too deeply' - check "$data/deep.kl"
try 1 'deepneg.kl:3:[0-9]+: error: .*nested too deeply' - check "$data/deepneg.kl"
try 1 'deepdim.kl:2:[0-9]+: error: .*nested too deeply' - check "$data/deepdim.kl"
try 1 'garbage.kl:[0-9]+:[0-9]+: error:' - check "$data/garbage.kl"
try 1 'empty.kl:1:1: error: no model' - check "$data/empty.kl"
try 1 'nul.kl:2:[0-9]+: error: unexpected character .\\x00' - check "$data/nul.kl"
try 1 'latin1.kl:1:[0-9]+: error: .*UTF-8' - check "$data/latin1.kl"
try 1 'utf8_bad.kl:2:[0-9]+: error: .*UTF-8' - check "$data/utf8_bad.kl"
try 1 "cannot open '.*missing.kl'" - check "$data/missing.kl"
try 1 "cannot (open|read)" - check "$data"
try 1 "has no size parameter 'nosuch'" - check "$cases/dim_inexact.kl" -D nosuch=3

# ---- Valid models, weights and inputs the binary cases start from ---------
cat >"$data/lin.kl" <<'KL'
model lin {
  input x: f32[2, 3]
  param w: f32[3, 4] = glorot
  param b: f32[4] = zeros
  y = x @ w + b
  output y
}
KL
cat >"$data/emb.kl" <<'KL'
model emb {
  input ids: i32[2, 3]
  param table: f32[10, 4] = normal(1)
  e = embedding(ids, table)
  output e
}
KL
cat >"$data/cls.kl" <<'KL'
model cls {
  input x: f32[4, 3]
  input y: i32[4]
  param w: f32[3, 5] = glorot
  logits = x @ w
  loss = cross_entropy(logits, y)
  output logits
  train loss with sgd(lr = 0.1, momentum = 0.9)
}
KL
cat >"$data/embtrain.kl" <<'KL'
model embtrain {
  input ids: i32[4]
  input t: f32[4, 2]
  param table: f32[10, 2] = normal(1)
  e = embedding(ids, table)
  loss = mse_loss(e, t)
  output e
  train loss with adam(lr = 0.1)
}
KL
"$kiln" init "$data/lin.kl" -o "$data/lin.safetensors" || bad "kiln init lin.kl failed"
"$kiln" init "$data/emb.kl" -o "$data/emb.safetensors" || bad "kiln init emb.kl failed"
"$kiln" init "$data/cls.kl" -o "$data/cls.safetensors" || bad "kiln init cls.kl failed"
python3 - "$data" <<'PY'
import json, math, os, struct, sys
d = sys.argv[1]

def npy(name, descr, shape, raw, fortran=False, version=b"\x01\x00", magic=b"\x93NUMPY", header=None):
    shp = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    h = header or "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shp)
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    open(os.path.join(d, name), "wb").write(magic + version + struct.pack("<H", len(h)) + h.encode() + raw)

def f32(*v): return struct.pack("<%df" % len(v), *v)
def i32(*v): return struct.pack("<%di" % len(v), *v)

def st(name, tensors=(), header=None, tail=b"", hlen=None):
    h, blob = {}, b""
    for tname, dtype, shape, raw in tensors:
        h[tname] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    text = (header if header is not None else json.dumps(h)).encode()
    text += b" " * (-len(text) % 8)
    n = len(text) if hlen is None else hlen
    open(os.path.join(d, name), "wb").write(struct.pack("<Q", n) + text + blob + tail)

w, b = f32(*range(12)), f32(0, 0, 0, 0)
good = [("w", "F32", [3, 4], w), ("b", "F32", [4], b)]
# Weights for lin.kl (w f32[3,4], b f32[4]).
open(os.path.join(d, "st_empty.safetensors"), "wb").write(b"")
open(os.path.join(d, "st_short.safetensors"), "wb").write(b"\x10\x00\x00")
st("st_hlen_past_end.safetensors", good, hlen=1 << 20)
st("st_hlen_huge.safetensors", good, hlen=(1 << 64) - 8)
st("st_truncated_header.safetensors", good, hlen=None)
raw = open(os.path.join(d, "st_truncated_header.safetensors"), "rb").read()
open(os.path.join(d, "st_truncated_header.safetensors"), "wb").write(raw[:40])
st("st_json.safetensors", header='{"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]')
st("st_not_object.safetensors", header='[1, 2, 3]')
st("st_offsets_past_end.safetensors", header=json.dumps({
    "w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
    "b": {"dtype": "F32", "shape": [4], "data_offsets": [48, 6400]}}), tail=w + b)
st("st_negative_shape.safetensors", header=json.dumps({
    "w": {"dtype": "F32", "shape": [-3, -4], "data_offsets": [0, 48]},
    "b": {"dtype": "F32", "shape": [4], "data_offsets": [48, 64]}}), tail=w + b)
st("st_overflow_shape.safetensors", header=json.dumps({
    "w": {"dtype": "F32", "shape": [1 << 62, 1 << 62, 16], "data_offsets": [0, 48]},
    "b": {"dtype": "F32", "shape": [4], "data_offsets": [48, 64]}}), tail=w + b)
st("st_bad_dtype.safetensors", [("w", "F16", [3, 4], w[:24]), ("b", "F32", [4], b)])
st("st_wrong_dtype.safetensors", [("w", "I32", [3, 4], w), ("b", "F32", [4], b)])
st("st_f64.safetensors", [("w", "F64", [3, 4], w + w), ("b", "F32", [4], b)])
st("st_wrong_shape.safetensors", [("w", "F32", [4, 3], w), ("b", "F32", [4], b)])
st("st_missing.safetensors", [("w", "F32", [3, 4], w)])
st("st_extra.safetensors", good + [("c", "F32", [1], f32(1))])
st("st_size_mismatch.safetensors", header=json.dumps({
    "w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 44]},
    "b": {"dtype": "F32", "shape": [4], "data_offsets": [44, 60]}}), tail=w[:44] + b)
st("st_trailing.safetensors", good, tail=b"\0" * 8)
# Inputs for lin.kl (x f32[2,3]).
x = f32(1, 2, 3, 4, 5, 6)
npy("x.npy", "<f4", [2, 3], x)
open(os.path.join(d, "npy_empty.npy"), "wb").write(b"")
npy("npy_magic.npy", "<f4", [2, 3], x, magic=b"\x93NUMPX")
npy("npy_version.npy", "<f4", [2, 3], x, version=b"\x03\x00")
npy("npy_big_endian.npy", ">f4", [2, 3], x)
npy("npy_fortran.npy", "<f4", [2, 3], x, fortran=True)
npy("npy_truncated.npy", "<f4", [2, 3], x[:20])
npy("npy_extra.npy", "<f4", [2, 3], x + x)
npy("npy_shape.npy", "<f4", [3, 2], x)
npy("npy_dtype.npy", "<i4", [2, 3], i32(1, 2, 3, 4, 5, 6))
npy("npy_u8.npy", "|u1", [2, 3], bytes(6))
npy("npy_header.npy", "", [], b"", header="{'descr': '<f4', 'fortran_order': False}")
npy("npy_overflow.npy", "<f4", [1 << 62, 1 << 62], x)
npy("npy_nan.npy", "<f4", [2, 3], f32(float("nan"), 1, 2, 3, 4, 5))
npy("npy_inf.npy", "<f4", [2, 3], f32(float("inf"), 1, float("-inf"), 3, 4, 5))
# Embedding ids for emb.kl (table [10, 4]).
npy("ids_ok.npy", "<i4", [2, 3], i32(0, 1, 2, 3, 4, 9))
npy("ids_high.npy", "<i4", [2, 3], i32(0, 1, 2, 3, 4, 10))
npy("ids_negative.npy", "<i4", [2, 3], i32(0, -1, 2, 3, 4, 5))
# Training data for cls.kl (4 samples of 3 features, 5 classes) and embtrain.kl.
os.makedirs(os.path.join(d, "cls_ok"))
os.makedirs(os.path.join(d, "cls_label_high"))
os.makedirs(os.path.join(d, "cls_label_negative"))
os.makedirs(os.path.join(d, "cls_counts"))
os.makedirs(os.path.join(d, "cls_nan"))
os.makedirs(os.path.join(d, "emb_id_high"))
xs = f32(*[math.sin(i) for i in range(24)])
npy("cls_ok/x.npy", "<f4", [8, 3], xs)
npy("cls_ok/y.npy", "<i4", [8], i32(0, 1, 2, 3, 4, 0, 1, 2))
npy("cls_label_high/x.npy", "<f4", [8, 3], xs)
npy("cls_label_high/y.npy", "<i4", [8], i32(0, 1, 2, 3, 4, 5, 1, 2))
npy("cls_label_negative/x.npy", "<f4", [8, 3], xs)
npy("cls_label_negative/y.npy", "<i4", [8], i32(0, 1, -1, 3, 4, 0, 1, 2))
npy("cls_counts/x.npy", "<f4", [8, 3], xs)
npy("cls_counts/y.npy", "<i4", [7], i32(0, 1, 2, 3, 4, 0, 1))
npy("cls_nan/x.npy", "<f4", [8, 3], f32(float("nan"), *[math.sin(i) for i in range(1, 24)]))
npy("cls_nan/y.npy", "<i4", [8], i32(0, 1, 2, 3, 4, 0, 1, 2))
npy("cls_x.npy", "<f4", [4, 3], xs[:48])
npy("cls_y_high.npy", "<i4", [4], i32(0, 1, 5, 2))
npy("emb_id_high/ids.npy", "<i4", [4], i32(0, 1, 10, 3))
npy("emb_id_high/t.npy", "<f4", [4, 2], f32(*range(8)))
# IDX data: bad magic, truncated gzip.
import gzip
img = struct.pack(">IIII", 0x803, 4, 1, 3) + bytes(range(12))
lab = struct.pack(">II", 0x801, 4) + bytes([0, 1, 2, 3])
open(os.path.join(d, "magic-images-idx3-ubyte"), "wb").write(struct.pack(">I", 0x802) + img[4:])
open(os.path.join(d, "magic-labels-idx1-ubyte"), "wb").write(lab)
open(os.path.join(d, "gz-images-idx3-ubyte.gz"), "wb").write(gzip.compress(img)[:-10])
open(os.path.join(d, "gz-labels-idx1-ubyte.gz"), "wb").write(gzip.compress(lab))
open(os.path.join(d, "labels-high-images-idx3-ubyte"), "wb").write(img)
open(os.path.join(d, "labels-high-labels-idx1-ubyte"), "wb").write(lab[:-1] + b"\xff")
PY

# ---- Weights files (kiln run --weights) ------------------------------------
run_w() { try 1 "$1" out run "$data/lin.kl" --backend=interp --weights "$data/$2" --input x="$data/x.npy" --out out; }
run_w 'st_empty.safetensors: .*(too short|empty)' st_empty.safetensors
run_w 'st_short.safetensors: .*too short' st_short.safetensors
run_w 'st_hlen_past_end.safetensors: .*header' st_hlen_past_end.safetensors
run_w 'st_hlen_huge.safetensors: .*header' st_hlen_huge.safetensors
run_w 'st_truncated_header.safetensors: .*header' st_truncated_header.safetensors
run_w 'st_json.safetensors: .*(JSON|header)' st_json.safetensors
run_w 'st_not_object.safetensors: .*object' st_not_object.safetensors
run_w "st_offsets_past_end.safetensors: .*'b'" st_offsets_past_end.safetensors
run_w "st_negative_shape.safetensors: .*'w'" st_negative_shape.safetensors
run_w "st_overflow_shape.safetensors: .*'w'" st_overflow_shape.safetensors
run_w "st_bad_dtype.safetensors: .*F16" st_bad_dtype.safetensors
run_w "st_wrong_dtype.safetensors: .*'w'.*(dtype|i32|I32)" st_wrong_dtype.safetensors
run_w "st_wrong_shape.safetensors: param 'w' expects f32\\[3,4\\], got f32\\[4,3\\]" st_wrong_shape.safetensors
run_w "st_missing.safetensors: missing param 'b'" st_missing.safetensors
run_w "st_extra.safetensors: unexpected tensor 'c'" st_extra.safetensors
run_w "st_size_mismatch.safetensors: .*'w'" st_size_mismatch.safetensors
run_w "st_trailing.safetensors: .*bytes \\[64, 72\\) at the end belong to no tensor" st_trailing.safetensors
run_w "cannot open" nothere.safetensors

# ---- Input files (kiln run --input) ----------------------------------------
run_x() { try 1 "$1" out run "$data/lin.kl" --backend=interp --weights "$data/lin.safetensors" --input x="$data/$2" --out out; }
run_x 'npy_empty.npy: .*(too short|empty|magic)' npy_empty.npy
run_x 'npy_magic.npy: .*magic' npy_magic.npy
run_x 'npy_version.npy: .*version' npy_version.npy
run_x 'npy_big_endian.npy: .*>f4' npy_big_endian.npy
run_x 'npy_fortran.npy: .*[Ff]ortran' npy_fortran.npy
run_x 'npy_truncated.npy: .*(truncated|expected 24 bytes|bytes)' npy_truncated.npy
run_x 'npy_extra.npy: .*bytes' npy_extra.npy
run_x "npy_shape.npy: .*(shape|\\[3, ?2\\])" npy_shape.npy
run_x "npy_dtype.npy: .*(dtype|i32|<i4)" npy_dtype.npy
run_x "npy_u8.npy: .*u1" npy_u8.npy
run_x "npy_header.npy: .*shape" npy_header.npy
run_x "npy_overflow.npy: .*(overflow|too large|large)" npy_overflow.npy
run_x "cannot open" nothere.npy
try 1 "no input 'z'" out run "$data/lin.kl" --backend=interp --weights "$data/lin.safetensors" \
  --input z="$data/x.npy" --out out
try 1 "missing --input x=FILE.npy" out run "$data/lin.kl" --backend=interp --weights "$data/lin.safetensors" --out out
# Embedding ids out of range: a run-time error naming the id, nothing written.
try 1 "(id|index) 10 .*(range|10)" out run "$data/emb.kl" --backend=interp \
  --weights "$data/emb.safetensors" --input ids="$data/ids_high.npy" --out out
try 1 "(id|index) -1 .*range" out run "$data/emb.kl" --backend=interp \
  --weights "$data/emb.safetensors" --input ids="$data/ids_negative.npy" --out out

# Class labels out of range: kiln run --grads computes the loss.
try 1 "label 5 .*(range|5)" out run "$data/cls.kl" --backend=interp --grads \
  --weights "$data/cls.safetensors" --input x="$data/cls_x.npy" --input y="$data/cls_y_high.npy" --out out

# ---- Training data (kiln train --data) -------------------------------------
train() { try 1 "$1" w.safetensors train "$data/$2" --backend=interp --data "$3" --steps 2 --save w.safetensors; }
train "label 5 .*(range|5)" cls.kl "npy:$data/cls_label_high"
train "label -1 .*range" cls.kl "npy:$data/cls_label_negative"
train "(id|index) 10 .*(range|10)" embtrain.kl "npy:$data/emb_id_high"
train "8 samples but .*7|7 samples but .*8" cls.kl "npy:$data/cls_counts"
train "nothere/x.npy: cannot open" cls.kl "npy:$data/nothere"
train "magic-images-idx3-ubyte: bad magic" cls.kl "idx:$data/magic"
train "gz-images-idx3-ubyte.gz: (truncated|corrupt)" cls.kl "idx:$data/gz"
train "label 255 .*range" cls.kl "idx:$data/labels-high"

# ---- NaN and Inf propagate: exit 0, the outputs hold them, no crash ---------
nonfinite() {
  local what=$1 file=$2
  (cd "$tmp" && "$kiln" run "$data/lin.kl" --backend=interp --weights "$data/lin.safetensors" \
    --input x="$data/$file" --out "nf_$what" >/dev/null 2>"$tmp/stderr")
  local got=$?
  if [ "$got" -ne 0 ]; then bad "run with $what input exited $got"; head -3 "$tmp/stderr"; return; fi
  if python3 - "$tmp/nf_$what/y.npy" "$what" <<'PY'; then ok; else bad "run with $what input: y.npy lacks $what"; fi
import math, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<H", raw[8:10])[0]
v = [x[0] for x in struct.iter_unpack("<f", raw[10 + n:])]
sys.exit(0 if any(math.isnan(x) if sys.argv[2] == "nan" else math.isinf(x) for x in v) else 1)
PY
}
nonfinite nan npy_nan.npy
nonfinite inf npy_inf.npy
(cd "$tmp" && "$kiln" train "$data/cls.kl" --backend=interp --data "npy:$data/cls_nan" --steps 2 \
  --save nan.safetensors >/dev/null 2>"$tmp/stderr")
got=$?
if [ "$got" -ge 2 ]; then bad "train on NaN data exited $got"; head -3 "$tmp/stderr"; else ok; fi

# ---- Unwritable output paths -------------------------------------------------
SETUP='touch afile' try 1 "afile/w.safetensors" afile/w.safetensors init "$data/lin.kl" -o afile/w.safetensors
try 1 "nodir/w.safetensors" nodir init "$data/lin.kl" -o nodir/w.safetensors
SETUP='touch afile' try 1 "afile" afile/out run "$data/lin.kl" --backend=interp \
  --weights "$data/lin.safetensors" --input x="$data/x.npy" --out afile/out
try 1 "nodir/w.safetensors" nodir train "$data/cls.kl" --backend=interp --data "npy:$data/cls_ok" \
  --steps 1 --save nodir/w.safetensors
if [ "$(id -u)" -ne 0 ]; then
  SETUP='mkdir ro && chmod 555 ro' try 1 "ro/w.safetensors" ro/w.safetensors init "$data/lin.kl" -o ro/w.safetensors
  SETUP='mkdir ro && chmod 555 ro' try 1 "ro/out" ro/out run "$data/lin.kl" --backend=interp \
    --weights "$data/lin.safetensors" --input x="$data/x.npy" --out ro/out
else
  # root writes into read-only folders; /proc takes no new files from anyone.
  try 1 "/proc/kiln-bad-input.safetensors" - init "$data/lin.kl" -o /proc/kiln-bad-input.safetensors
  try 1 "/proc/kiln-bad-input" - run "$data/lin.kl" --backend=interp \
    --weights "$data/lin.safetensors" --input x="$data/x.npy" --out /proc/kiln-bad-input
fi

# ---- The command line: exit 2 ------------------------------------------------
try 2 "unknown command 'frobnicate'" - frobnicate
try 2 "missing command" -
try 2 "unknown flag '--bogus'" - check "$data/lin.kl" --bogus
try 2 "unknown flag '--steps'" - check "$data/lin.kl" --steps 3
try 2 "missing MODEL" - check
try 2 "unexpected argument" - check "$data/lin.kl" "$data/cls.kl"
try 2 "-D value must be a positive integer" - check "$data/lin.kl" -D n=0
try 2 "-D expects NAME=VALUE" - check "$data/lin.kl" -D 3=4
try 2 "needs a value" - init "$data/lin.kl" -o
try 2 "missing -o" - init "$data/lin.kl"
try 2 "unknown optimization level" - check "$data/lin.kl" -O7
try 2 "--seed expects an integer" w.safetensors init "$data/lin.kl" -o w.safetensors --seed -1
try 2 "--threads expects an integer" - check "$data/lin.kl" --threads many
try 2 "--steps expects an integer" w.safetensors train "$data/cls.kl" --data "npy:$data/cls_ok" \
  --steps 0 --save w.safetensors
try 2 "--epochs expects an integer" w.safetensors train "$data/cls.kl" --data "npy:$data/cls_ok" \
  --epochs 1e3 --save w.safetensors
try 2 "--data expects npy:DIR or idx:PREFIX" - train "$data/cls.kl" --data "$data/cls_ok" --steps 1
try 2 "--input expects NAME=FILE" out run "$data/lin.kl" --weights "$data/lin.safetensors" \
  --input "$data/x.npy" --out out
try 2 "unknown backend" out run "$data/lin.kl" --backend=gpu --weights "$data/lin.safetensors" \
  --input x="$data/x.npy" --out out
try 2 "unknown stage" - dump "$data/lin.kl" --stage=nope
try 2 "unknown format" - dump "$data/lin.kl" --format=svg
try 2 "--max-memory expects BYTES" - check "$data/lin.kl" --max-memory 12Q
try 2 "--max-memory expects BYTES" - check "$data/lin.kl" --max-memory=-5
try 2 "--max-memory expects BYTES" - check "$data/lin.kl" --max-memory 99999999999T

# ---- --max-memory: a model too big is refused after building its graph ------
cat >"$data/big.kl" <<'KL'
model big(n = 65536) {
  input x: f32[n, n]
  param w: f32[n, n] = zeros
  y = x @ w
  output y
}
KL
try 1 "model 'big' needs 48.0 GiB \(params 16.0 GiB, activations 32.0 GiB\), more than --max-memory 24.0 GiB" \
  - check "$data/big.kl" --max-memory 24G
try 1 "model 'big' needs .*more than --max-memory" w.safetensors init "$data/big.kl" -o w.safetensors --max-memory 1G
try 1 "model 'big' needs .*more than --max-memory" - dump "$data/big.kl" --max-memory 1G
# The train graph counts grads and optimizer state (the forward graph alone needs about 200 bytes).
try 1 "model 'cls' needs .* \(params 60 bytes, grads 60 bytes, optimizer state 60 bytes, activations .*\), more than --max-memory 300 bytes" \
  w.safetensors train "$data/cls.kl" --backend=interp --data "npy:$data/cls_ok" --steps 1 \
  --save w.safetensors --max-memory 300
(cd "$tmp" && "$kiln" check "$data/big.kl" --max-memory 64G >/dev/null 2>&1) && ok || bad "check big.kl --max-memory 64G refused"

echo "bad_input: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

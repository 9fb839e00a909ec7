"""Writes the fixtures of tests/diff/reduce_cases (inputs and params, seeded): /usr/bin/python3 gen.py

Params p, q, r get 3x spread (softmax rows with large differences); i32 inputs are
labels or ids in range; params named nan* get NaN, +inf and -inf at fixed places and
NaN in every seventh element past 150."""
import json, re, struct, zlib
import numpy as np

def write(path, tensors):
    header, data, off = {}, b"", 0
    for name, arr in tensors:
        raw = arr.tobytes()
        dtype = "I32" if arr.dtype == np.int32 else "F32"
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)

for name in [l.split()[0] for l in open("MANIFEST") if l.strip()]:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    tensors = []
    for n, dt, dims in re.findall(r"^\s*(?:input|param)\s+(\w+):\s*(\w+)\[([^\]]*)\]", open(name + ".kl").read(), re.M):
        shape = [int(d) for d in dims.split(",") if d.strip()]
        if dt == "i32":
            a = rng.integers(0, {"ids": 11, "lab": 37}.get(n, 300), size=shape).astype(np.int32)
        else:
            a = (rng.standard_normal(shape) * (3 if n in ("p", "q", "r") else 1)).astype("<f4")
        if n.startswith("nan"):
            f = a.reshape(-1)
            f[3], f[40], f[77], f[100], f[101] = np.nan, np.inf, -np.inf, np.nan, np.inf
            f[150:] = np.where(np.arange(f.size - 150) % 7 == 0, np.nan, f[150:])
        tensors.append((n, a))
    write(name + ".safetensors", tensors)

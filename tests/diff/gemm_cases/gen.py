"""Writes the fixtures of tests/diff/gemm_cases (inputs and params, seeded): /usr/bin/python3 gen.py"""
import json, re, struct, sys, zlib
import numpy as np

def shapes(path):
    out = []
    for m in re.finditer(r"^\s*(?:input|param)\s+(\w+):\s*(f32|f64)\[([\d, ]+)\]", open(path).read(), re.M):
        out.append((m.group(1), m.group(2), [int(d) for d in m.group(3).split(",")]))
    return out

def write(path, tensors):
    header, data, off = {}, b"", 0
    for name, arr in tensors:
        raw = arr.astype("<f8" if arr.dtype == np.float64 else "<f4").tobytes()
        header[name] = {"dtype": "F64" if arr.dtype == np.float64 else "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)

for name in [l.split()[0] for l in open("MANIFEST") if l.strip()]:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    dt = {"f32": np.float32, "f64": np.float64}
    write(name + ".safetensors", [(n, (rng.standard_normal(s) * 0.5).astype(dt[t])) for n, t, s in shapes(name + ".kl")])

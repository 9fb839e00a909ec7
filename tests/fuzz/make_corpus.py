#!/usr/bin/env python3
"""make_corpus.py - writes the seed corpora of the file-format fuzz targets into corpus/<target>/.

A handful of small valid files and near misses each; run from anywhere, standard library only:
    python3 tests/fuzz/make_corpus.py
"""
import gzip, json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def st(tensors, meta=None, header=None, pad=True):
    """A safetensors file: [(name, dtype, shape, raw bytes)] in data order."""
    h, blob = {}, b""
    if meta is not None:
        h["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    text = (header if header is not None else json.dumps(h)).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def i32(*v):
    return struct.pack("<%di" % len(v), *v)


def npy(descr, shape, raw, fortran=False, version=b"\x01\x00", magic=b"\x93NUMPY"):
    shp = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shp)
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    return magic + version + struct.pack("<H", len(h)) + h.encode() + raw


def idx(magic, dims, data):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


# The model fuzz_rt_safetensors.c loads: w f32[2, 3], b f32[3], n f64[].
w, b, n = f32(1, 2, 3, 4, 5, 6), f32(0.5, -1, 2), struct.pack("<d", 7)
model = [("w", "F32", [2, 3], w), ("b", "F32", [3], b), ("n", "F64", [], n)]
for target in ("safetensors", "rt_safetensors"):
    put(target, "model.safetensors", st(model))
    put(target, "meta.safetensors", st(model, meta={"format": "pt"}))
    put(target, "reordered.safetensors", st([model[2], model[0], model[1]]))
    put(target, "f64.safetensors", st([("d", "F64", [2], struct.pack("<2d", 1.5, -2))]))
    put(target, "empty.safetensors", st([]))
    put(target, "escaped.safetensors", st([("w\\u00e9\u00e9", "F32", [1], f32(1))]))
    put(target, "bad_dtype.safetensors", st([("w", "BF16", [2], b"\0" * 4)]))
    put(target, "bad_offsets.safetensors", st(model)[:-4])
    put(target, "overlap.safetensors",
        st([], header='{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                      '"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}') + f32(1))
    put(target, "huge_len.safetensors", struct.pack("<Q", 1 << 62) + b"{}")
    put(target, "neg_shape.safetensors",
        st([], header='{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}') + f32(1))
    put(target, "truncated.safetensors", st(model)[:20])

put("npy", "f32.npy", npy("<f4", [2, 3], f32(1, 2, 3, 4, 5, 6)))
put("npy", "i32.npy", npy("<i4", [4], i32(1, -2, 3, 4)))
put("npy", "f64_scalar.npy", npy("<f8", [], struct.pack("<d", 3.25)))
put("npy", "zero_dim.npy", npy("<f4", [0, 5], b""))
put("npy", "rank4.npy", npy("<f4", [1, 2, 1, 2], f32(1, 2, 3, 4)))
put("npy", "fortran.npy", npy("<f4", [2, 2], f32(1, 2, 3, 4), fortran=True))
put("npy", "big_endian.npy", npy(">f4", [2], f32(1, 2)))
put("npy", "version2.npy", npy("<f4", [2], f32(1, 2), version=b"\x02\x00"))
put("npy", "bad_magic.npy", npy("<f4", [2], f32(1, 2), magic=b"\x93NUMPX"))
put("npy", "short_data.npy", npy("<f4", [3], f32(1, 2)))
put("npy", "u8.npy", npy("|u1", [3], b"\1\2\3"))

img = idx(0x803, [3, 2, 2], range(0, 240, 20))
lab = idx(0x801, [5], [0, 1, 9, 3, 255])
put("idx", "images.idx", img)
put("idx", "labels.idx", lab)
put("idx", "images.idx.gz", gzip.compress(img, mtime=0))
put("idx", "labels.idx.gz", gzip.compress(lab, mtime=0))
put("idx", "two_members.gz", gzip.compress(lab[:6], mtime=0) + gzip.compress(lab[6:], mtime=0))
put("idx", "truncated.gz", gzip.compress(img, mtime=0)[:-6])
put("idx", "bad_magic.idx", idx(0x802, [3, 2, 2], range(12)))
put("idx", "zero_dim.idx", idx(0x803, [0, 2, 2], []))
put("idx", "huge_dim.idx", idx(0x803, [0xFFFFFFFF, 0xFFFFFFFF, 2], []))
put("idx", "extra.idx", lab + b"\0")

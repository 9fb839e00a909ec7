#!/usr/bin/env python3
"""Generate the PyTorch reference fixtures Kiln's ops and models are tested against.

Run with the system Python, which has Debian's PyTorch 1.13:

    /usr/bin/python3 tests/ops/gen_reference.py            # regenerate tests/ops/cases/
    /usr/bin/python3 tests/ops/gen_reference.py --check    # re-read and verify what is there
    /usr/bin/python3 tests/ops/gen_reference.py --list     # print the case names

Every case NAME becomes
  cases/NAME.kl           a complete, self-contained model (SPEC section 1);
  cases/NAME.safetensors  every `input` and `param` of that model under its own
                          name, every expected output under `out.NAME`, the
                          train loss under `loss`, and the loss's gradient for
                          every param under `grad.PARAM` (a sample of it,
                          `gradidx.PARAM` / `gradval.PARAM`, for a param of
                          more than GRAD_FULL_MAX elements);
and one line `NAME CLASS` of cases/MANIFEST.  The format is described in
tests/ops/README.md.

Op cases make every float operand a `param` and train
`loss = sum(OUT * dy_OUT) + ...` with a random cotangent input per output, so
each op's gradient is checked too (see op_case).

References are computed in float64 from the stored float32 operands and rounded
to float32 once at the end.  As a self-test, every case is also run in
float32 by PyTorch itself, and generation fails unless that float32 result
(outputs, loss and gradients) passes the case's tolerance class: the
tolerances are achievable by a float32 implementation.
"""

import argparse
import glob
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CASES_DIR = os.path.join(HERE, "cases")

# Tolerance classes: a value passes when |got - want| <= ATOL + RTOL * |want|,
# infinities must match exactly (same sign), NaN never passes.
TOLERANCES = {
    "elementwise": (1e-5, 1e-5),   # (rtol, atol)
    "reduction": (1e-4, 1e-4),
}

SIZE_BUDGET = 8 * 1000 * 1000      # bytes, all fixtures together

# A param with more elements than this stores its gradient as a sample:
# GRAD_SAMPLE flat indices (always 0 and the last) and the values there.
GRAD_FULL_MAX = 16384
GRAD_SAMPLE = 4096

torch.set_num_threads(1)


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

DTYPES = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32", np.dtype("<f8"): "F64"}
DTYPE_SIZE = {"F32": 4, "I32": 4, "F64": 8}


def write_safetensors(path, tensors):
    """tensors: list of (name, np.ndarray) in file order."""
    names = [n for n, _ in tensors]
    assert len(set(names)) == len(names), "duplicate tensor names in %s" % path
    header = {}
    blobs = []
    off = 0
    for name, arr in tensors:
        arr = np.array(arr, order="C")          # keeps 0-d arrays 0-d
        dt = arr.dtype.newbyteorder("<")
        assert dt in DTYPES, (name, arr.dtype)
        data = arr.astype(dt).tobytes(order="C")
        header[name] = {"dtype": DTYPES[dt], "shape": list(arr.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """Return an ordered list of (name, np.ndarray); verify the layout strictly."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("%s: shorter than 8 bytes" % path)
    (hlen,) = struct.unpack("<Q", raw[:8])
    if hlen % 8 or 8 + hlen > len(raw):
        raise ValueError("%s: bad header length %d" % (path, hlen))
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    data = raw[8 + hlen:]
    entries = sorted(((v["data_offsets"][0], v["data_offsets"][1], k, v)
                      for k, v in header.items() if k != "__metadata__"))
    pos = 0
    out = []
    for b, e, name, v in entries:
        if b != pos:
            raise ValueError("%s: %s starts at %d, expected %d (hole or overlap)"
                             % (path, name, b, pos))
        if e > len(data):
            raise ValueError("%s: %s ends at %d, past the end of the data (%d bytes)"
                             % (path, name, e, len(data)))
        n = int(np.prod(v["shape"], dtype=np.int64))
        if v["dtype"] not in DTYPE_SIZE or e - b != n * DTYPE_SIZE[v["dtype"]]:
            raise ValueError("%s: %s: %s %s does not fit %d bytes"
                             % (path, name, v["dtype"], v["shape"], e - b))
        np_dt = {"F32": "<f4", "I32": "<i4", "F64": "<f8"}[v["dtype"]]
        out.append((name, np.frombuffer(data[b:e], dtype=np_dt).reshape(v["shape"])))
        pos = e
    if pos != len(data):
        raise ValueError("%s: %d trailing bytes after the last tensor" % (path, len(data) - pos))
    # Our writer lays tensors out in header order; keep that order.
    order = [k for k in header if k != "__metadata__"]
    d = dict(out)
    return [(k, d[k]) for k in order]


# --------------------------------------------------------------------------
# case registry and random operands
# --------------------------------------------------------------------------

CASES = []          # (name, cls, builder)
_gen = None         # the current case's torch.Generator


def case(name, cls):
    assert cls in TOLERANCES
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), name

    def deco(builder):
        assert name not in [c[0] for c in CASES], name
        CASES.append((name, cls, builder))
        return builder
    return deco


def seed_for(name):
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def U(lo, hi, *shape):
    """Uniform float32 in [lo, hi)."""
    return (torch.rand(tuple(shape), generator=_gen, dtype=torch.float32) * (hi - lo) + lo).float()


def N(std, *shape, mean=0.0):
    return (torch.randn(tuple(shape), generator=_gen, dtype=torch.float32) * std + mean).float()


def AWAY(lo, hi, *shape):
    """Random sign times uniform [lo, hi): well away from zero (divisors)."""
    s = torch.randint(0, 2, shape, generator=_gen).float() * 2 - 1
    return (U(lo, hi, *shape) * s).float()


def IDS(n, *shape):
    return torch.randint(0, n, shape, generator=_gen, dtype=torch.int64).to(torch.int32)


def L(x):
    """A .kl numeric literal: an f32 scalar."""
    return float(np.float32(x))


def causal_mask(n, dtype):
    return torch.full((n, n), float("-inf"), dtype=dtype).triu(1)


class Spec:
    """What a builder returns.

    inputs, params: lists of (name, tensor); float tensors are float32, ids int32.
    kl:      the complete .kl text.
    fn:      fn(env) -> dict name -> tensor of outputs (in output order), plus
             the loss under its name when the model has `train`; env maps every
             input/param name to a tensor (floats in the compute dtype, ints int64).
    outputs: output names in order.
    loss:    the train statement's loss name, or None.
    """

    def __init__(self, kl, inputs, params, fn, outputs, loss=None):
        self.kl, self.inputs, self.params = kl, inputs, params
        self.fn, self.outputs, self.loss = fn, outputs, loss


def kl_type(t):
    dt = "i32" if t.dtype == torch.int32 else "f32"
    return "%s[%s]" % (dt, ", ".join(str(d) for d in t.shape))


def op_case(name, inputs, lines, fn, params=(), init="zeros"):
    """An op case: a model named NAME with the given operands and body lines.

    The outputs are the keys of fn's result, in order; each must be bound by
    one of the lines.  Every float operand becomes a `param`, so it gets a
    gradient; `i32` operands (ids, labels) stay `input`s.  The case then
    trains a scalar loss that reaches every differentiable output:

        loss = sum(OUT * dy_OUT) + ...      (OUT * dy_OUT for a scalar OUT)

    with one fixed random `input dy_OUT` per output, so d loss / d operand is
    the vector-Jacobian product of the op with cotangent dy_OUT: each op's
    backward is checked against PyTorch's.  Outputs that depend on no float
    operand or hold infinities (causal_mask) stay out of the loss.
    """
    floats = [(n, t) for n, t in list(inputs) + list(params) if t.dtype != torch.int32]
    ints = [(n, t) for n, t in inputs if t.dtype == torch.int32]
    assert not [n for n, t in params if t.dtype == torch.int32], name

    # A dry float64 run: the output names, and which outputs enter the loss.
    env = make_env(ints, floats, torch.float64)
    for n, _ in floats:
        env[n].requires_grad_(True)
    dry = fn(env)
    outputs = list(dry.keys())
    body = "\n".join("  " + l for l in lines)
    for o in outputs:
        assert re.search(r"^\s*%s\s*=" % re.escape(o), body, re.M), (name, o)
    used = [o for o in outputs if dry[o].requires_grad and torch.isfinite(dry[o]).all()]
    assert used, name
    # Cotangents come after every operand from the case's generator, so the
    # operands (and the forward references) do not depend on them.
    dys = [("dy_" + o, U(-1, 1, *dry[o].shape)) for o in used]
    names = {n for n, _ in floats + ints}
    assert "loss" not in outputs and not names & {n for n, _ in dys}, name
    terms = ["%s * dy_%s" % (o, o) if dry[o].dim() == 0 else "sum(%s * dy_%s)" % (o, o)
             for o in used]
    loss_line = "loss = " + ("(" + "\n        + ".join(terms) + ")" if len(terms) > 1 else terms[0])

    def with_loss(t):
        vals = fn(t)
        loss = sum((vals[o] * t["dy_" + o]).sum() for o in used)
        return dict(vals, loss=loss)

    in_decl = ints + dys
    decl = ["  input %s: %s" % (n, kl_type(t)) for n, t in in_decl]
    decl += ["  param %s: %s = %s" % (n, kl_type(t), init) for n, t in floats]
    kl = ("# Generated by tests/ops/gen_reference.py; do not edit.\n"
          "model %s {\n%s\n\n%s\n\n  %s\n\n  output %s\n  train loss with sgd(lr = 0.1)\n}\n"
          % (name, "\n".join(decl), body, loss_line.replace("\n", "\n  "),
             ", ".join(outputs)))
    return Spec(kl, in_decl, floats, with_loss, outputs, "loss")


def make_env(inputs, params, dtype):
    env = {}
    for n, t in list(inputs) + list(params):
        t = t.detach().clone()
        env[n] = t.to(torch.int64) if t.dtype == torch.int32 else t.to(dtype)
    return env


# --------------------------------------------------------------------------
# elementwise binary ops
# --------------------------------------------------------------------------

def _binary(opname, sym, tfn, gen):
    @case(opname, "elementwise")
    def _():
        a, b = gen(3, 4), gen(3, 4)
        c, d = gen(2, 3, 4), gen(4)
        e, f = gen(2, 1, 4), gen(3, 1)
        g, h = gen(7, 13), gen(7, 1)
        return op_case(opname,
                       [("a", a), ("b", b), ("c", c), ("d", d), ("e", e), ("f", f),
                        ("g", g), ("h", h)],
                       ["same = a %s b" % sym,          # [3,4] . [3,4]
                        "rank = c %s d" % sym,          # [2,3,4] . [4]
                        "rank_left = d %s c" % sym,     # [4] . [2,3,4]
                        "ones = e %s f" % sym,          # [2,1,4] . [3,1] -> [2,3,4]
                        "col = g %s h" % sym,           # [7,13] . [7,1]
                        "row = h %s g" % sym],
                       lambda t: {"same": tfn(t["a"], t["b"]), "rank": tfn(t["c"], t["d"]),
                                  "rank_left": tfn(t["d"], t["c"]), "ones": tfn(t["e"], t["f"]),
                                  "col": tfn(t["g"], t["h"]), "row": tfn(t["h"], t["g"])})


_binary("add", "+", lambda x, y: x + y, lambda *s: U(-2, 2, *s))
_binary("sub", "-", lambda x, y: x - y, lambda *s: U(-2, 2, *s))
_binary("mul", "*", lambda x, y: x * y, lambda *s: U(-2, 2, *s))
_binary("div", "/", lambda x, y: x / y, lambda *s: AWAY(0.5, 2, *s))


@case("neg", "elementwise")
def _():
    a, b = U(-2, 2, 3, 4), U(-2, 2, 7, 13)
    return op_case("neg", [("a", a), ("b", b)],
                   ["y0 = -a", "y1 = -b", "y2 = -(-a)", "y3 = -a * a", "y4 = a * -a",
                    "y5 = -(a + a)"],
                   lambda t: {"y0": -t["a"], "y1": -t["b"], "y2": t["a"],
                              "y3": (-t["a"]) * t["a"], "y4": t["a"] * (-t["a"]),
                              "y5": -(t["a"] + t["a"])})


@case("binary_literal", "elementwise")
def _():
    a, b = U(-2, 2, 3, 4), AWAY(0.5, 2, 2, 5)
    return op_case("binary_literal", [("a", a), ("b", b)],
                   ["y0 = a + 1.5", "y1 = 2 - a", "y2 = a * 3", "y3 = 1 / b", "y4 = b / 4",
                    "y5 = a - 0.25", "y6 = 0.5 * a + 1e-3", "y7 = a * -2.5"],
                   lambda t: {"y0": t["a"] + L(1.5), "y1": L(2) - t["a"], "y2": t["a"] * L(3),
                              "y3": L(1) / t["b"], "y4": t["b"] / L(4), "y5": t["a"] - L(0.25),
                              "y6": L(0.5) * t["a"] + L(1e-3), "y7": t["a"] * L(-2.5)})


@case("scalar_input", "elementwise")
def _():
    s, a = U(0.5, 1.5), U(-2, 2, 3, 4)
    return op_case("scalar_input", [("s", s), ("a", a)],
                   ["y0 = a * s", "y1 = s - a", "y2 = s + s", "y3 = exp(s) * 2",
                    "y4 = a / s"],
                   lambda t: {"y0": t["a"] * t["s"], "y1": t["s"] - t["a"], "y2": t["s"] + t["s"],
                              "y3": torch.exp(t["s"]) * L(2), "y4": t["a"] / t["s"]})


@case("precedence", "elementwise")
def _():
    a, b, c = U(-2, 2, 3, 4), U(-2, 2, 3, 4), U(-2, 2, 3, 4)
    d, e = AWAY(0.5, 2, 3, 4), AWAY(0.5, 2, 3, 4)
    return op_case("precedence", [("a", a), ("b", b), ("c", c), ("d", d), ("e", e)],
                   ["y0 = a + b * c - d / e",
                    "y1 = a - b - c",
                    "y2 = a / d / e",
                    "y3 = -a * b",
                    "y4 = (a + b) * c",
                    "y5 = a * b / d * c"],
                   lambda t: {"y0": t["a"] + t["b"] * t["c"] - t["d"] / t["e"],
                              "y1": (t["a"] - t["b"]) - t["c"],
                              "y2": (t["a"] / t["d"]) / t["e"],
                              "y3": (-t["a"]) * t["b"],
                              "y4": (t["a"] + t["b"]) * t["c"],
                              "y5": ((t["a"] * t["b"]) / t["d"]) * t["c"]})


# --------------------------------------------------------------------------
# elementwise unary ops
# --------------------------------------------------------------------------

def _unary(opname, tfn, lo, hi):
    @case(opname, "elementwise")
    def _():
        a, b, c = U(lo, hi, 7, 13), U(lo, hi, 2, 3, 5), U(lo, hi, 4)
        return op_case(opname, [("a", a), ("b", b), ("c", c)],
                       ["y0 = %s(a)" % opname, "y1 = %s(b)" % opname, "y2 = %s(c)" % opname],
                       lambda t: {"y0": tfn(t["a"]), "y1": tfn(t["b"]), "y2": tfn(t["c"])})


_unary("relu", torch.relu, -3, 3)
_unary("sigmoid", torch.sigmoid, -6, 6)
_unary("tanh", torch.tanh, -4, 4)
_unary("exp", torch.exp, -4, 4)
_unary("log", torch.log, 0.05, 8)
_unary("sqrt", torch.sqrt, 0.05, 8)
_unary("rsqrt", torch.rsqrt, 0.05, 8)
_unary("abs", torch.abs, -3, 3)
_unary("gelu", F.gelu, -5, 5)
_unary("silu", F.silu, -6, 6)


@case("pow", "elementwise")
def _():
    a, p = U(-2, 2, 7, 13), U(0.2, 3, 2, 3, 5)
    return op_case("pow", [("a", a), ("p", p)],
                   ["sq = pow(a, 2)", "cube = pow(a, 3)", "half = pow(p, 0.5)",
                    "inv = pow(p, -1)", "neg_frac = pow(p, -1.5)", "frac = pow(p, 2.5)"],
                   lambda t: {"sq": torch.pow(t["a"], 2.0), "cube": torch.pow(t["a"], 3.0),
                              "half": torch.pow(t["p"], 0.5), "inv": torch.pow(t["p"], -1.0),
                              "neg_frac": torch.pow(t["p"], -1.5),
                              "frac": torch.pow(t["p"], 2.5)})


def _maxmin(opname, tfn):
    @case(opname, "elementwise")
    def _():
        a, b = U(-2, 2, 3, 4), U(-2, 2, 3, 4)
        c, d = U(-2, 2, 2, 3, 4), U(-2, 2, 3, 1)
        g, h = U(-2, 2, 7, 13), U(-2, 2, 13)
        return op_case(opname, [("a", a), ("b", b), ("c", c), ("d", d), ("g", g), ("h", h)],
                       ["same = %s(a, b)" % opname,
                        "bcast = %s(c, d)" % opname,      # [2,3,4] , [3,1]
                        "rank = %s(h, g)" % opname,       # [13] , [7,13]
                        "lit = %s(a, 0.5)" % opname,
                        "lit_left = %s(-0.25, g)" % opname],
                       lambda t: {"same": tfn(t["a"], t["b"]), "bcast": tfn(t["c"], t["d"]),
                                  "rank": tfn(t["h"], t["g"]),
                                  "lit": tfn(t["a"], torch.full_like(t["a"], L(0.5))),
                                  "lit_left": tfn(torch.full_like(t["g"], L(-0.25)), t["g"])})


_maxmin("maximum", torch.maximum)
_maxmin("minimum", torch.minimum)


# --------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------

def _red_basic(opname, tfn):
    # tfn(x, dims, keepdim); dims None = all
    @case(opname, "reduction")
    def _():
        x, m, v, r = U(-2, 2, 2, 3, 5), U(-2, 2, 7, 13), U(-2, 2, 4), U(-1, 1, 3, 257)
        return op_case(opname, [("x", x), ("m", m), ("v", v), ("r", r)],
                       ["ax1 = %s(x, axis=1)" % opname,
                        "ax_neg = %s(x, axis=-1)" % opname,
                        "ax0_keep = %s(x, axis=0, keepdim=true)" % opname,
                        "m_neg2 = %s(m, axis=-2)" % opname,
                        "m_keep = %s(m, axis=1, keepdim=true)" % opname,
                        "v0 = %s(v, axis=0)" % opname,
                        "long = %s(r, axis=-1)" % opname],
                       lambda t: {"ax1": tfn(t["x"], [1], False),
                                  "ax_neg": tfn(t["x"], [-1], False),
                                  "ax0_keep": tfn(t["x"], [0], True),
                                  "m_neg2": tfn(t["m"], [-2], False),
                                  "m_keep": tfn(t["m"], [1], True),
                                  "v0": tfn(t["v"], [0], False),
                                  "long": tfn(t["r"], [-1], False)})

    @case(opname + "_multi", "reduction")
    def _():
        x, m, v = U(-2, 2, 2, 3, 5), U(-2, 2, 7, 13), U(-2, 2, 4)
        return op_case(opname + "_multi", [("x", x), ("m", m), ("v", v)],
                       ["l02 = %s(x, axis=[0, 2])" % opname,
                        "l02_keep = %s(x, axis=[0, 2], keepdim=true)" % opname,
                        "l_neg = %s(x, axis=[-1, 0])" % opname,
                        "l01 = %s(x, axis=[0, 1])" % opname,
                        "all3 = %s(x)" % opname,
                        "all3_keep = %s(x, keepdim=true)" % opname,
                        "all2 = %s(m)" % opname,
                        "all1 = %s(v)" % opname],
                       lambda t: {"l02": tfn(t["x"], [0, 2], False),
                                  "l02_keep": tfn(t["x"], [0, 2], True),
                                  "l_neg": tfn(t["x"], [-1, 0], False),
                                  "l01": tfn(t["x"], [0, 1], False),
                                  "all3": tfn(t["x"], None, False),
                                  "all3_keep": tfn(t["x"], None, True),
                                  "all2": tfn(t["m"], None, False),
                                  "all1": tfn(t["v"], None, False)})


def _dims(x, dims):
    return list(range(x.dim())) if dims is None else dims


_red_basic("sum", lambda x, d, k: torch.sum(x, dim=_dims(x, d), keepdim=k))
_red_basic("mean", lambda x, d, k: torch.mean(x, dim=_dims(x, d), keepdim=k))
_red_basic("max", lambda x, d, k: torch.amax(x, dim=_dims(x, d), keepdim=k))


def _softmax_case(opname, tfn):
    @case(opname, "reduction")
    def _():
        x, m, big = U(-3, 3, 2, 3, 5), U(-3, 3, 7, 13), U(-60, 60, 4, 13)
        return op_case(opname, [("x", x), ("m", m), ("big", big)],
                       ["last = %s(x)" % opname,
                        "ax1 = %s(x, axis=1)" % opname,
                        "ax0 = %s(x, axis=0)" % opname,
                        "ax_neg2 = %s(m, axis=-2)" % opname,
                        "m_last = %s(m, axis=-1)" % opname,
                        "stable = %s(big)" % opname],
                       lambda t: {"last": tfn(t["x"], -1), "ax1": tfn(t["x"], 1),
                                  "ax0": tfn(t["x"], 0), "ax_neg2": tfn(t["m"], -2),
                                  "m_last": tfn(t["m"], -1), "stable": tfn(t["big"], -1)})


_softmax_case("softmax", lambda x, a: F.softmax(x, dim=a))
_softmax_case("log_softmax", lambda x, a: F.log_softmax(x, dim=a))


# --------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------

@case("matmul_2d", "reduction")
def _():
    a, b = U(-1, 1, 7, 13), U(-1, 1, 13, 5)
    c, d = U(-1, 1, 5, 1), U(-1, 1, 1, 7)
    e, f = U(-1, 1, 1, 64), U(-1, 1, 64, 3)
    return op_case("matmul_2d", [("a", a), ("b", b), ("c", c), ("d", d), ("e", e), ("f", f)],
                   ["ab = a @ b", "outer = c @ d", "long = e @ f", "chain = a @ b @ c"],
                   lambda t: {"ab": t["a"] @ t["b"], "outer": t["c"] @ t["d"],
                              "long": t["e"] @ t["f"], "chain": t["a"] @ t["b"] @ t["c"]})


@case("matmul_batched", "reduction")
def _():
    a, b = U(-1, 1, 2, 3, 4), U(-1, 1, 2, 4, 5)
    w = U(-1, 1, 4, 6)
    m, n = U(-1, 1, 4, 6), U(-1, 1, 2, 6, 3)
    return op_case("matmul_batched", [("a", a), ("b", b), ("w", w), ("m", m), ("n", n)],
                   ["bmm = a @ b",        # [2,3,4] @ [2,4,5]
                    "by_2d = a @ w",      # [2,3,4] @ [4,6]
                    "from_2d = m @ n"],   # [4,6] @ [2,6,3]
                   lambda t: {"bmm": t["a"] @ t["b"], "by_2d": t["a"] @ t["w"],
                              "from_2d": t["m"] @ t["n"]})


@case("matmul_bcast", "reduction")
def _():
    a, b = U(-1, 1, 2, 1, 3, 4), U(-1, 1, 3, 4, 5)
    c = U(-1, 1, 1, 5, 4, 2)
    return op_case("matmul_bcast", [("a", a), ("b", b), ("c", c)],
                   ["ab = a @ b",    # [2,1,3,4] @ [3,4,5] -> [2,3,3,5]
                    "ac = a @ c"],   # [2,1,3,4] @ [1,5,4,2] -> [2,5,3,2]
                   lambda t: {"ab": t["a"] @ t["b"], "ac": t["a"] @ t["c"]})


# --------------------------------------------------------------------------
# shape ops and indexing
# --------------------------------------------------------------------------

@case("reshape", "elementwise")
def _():
    x = U(-2, 2, 2, 3, 4)
    return op_case("reshape", [("x", x)],
                   ["r0 = reshape(x, [6, -1])",
                    "r1 = reshape(x, [-1])",
                    "r2 = reshape(x, [4, -1, 2])",
                    "r3 = reshape(x, [24, 1])",
                    "r4 = reshape(x, [1, 2, 12])",
                    "r5 = reshape(transpose(x, 0, 2), [-1, 6])",
                    "r6 = reshape(x * 2, [2, 12])"],
                   lambda t: {"r0": t["x"].reshape(6, -1), "r1": t["x"].reshape(-1),
                              "r2": t["x"].reshape(4, -1, 2), "r3": t["x"].reshape(24, 1),
                              "r4": t["x"].reshape(1, 2, 12),
                              "r5": t["x"].transpose(0, 2).reshape(-1, 6),
                              "r6": (t["x"] * L(2)).reshape(2, 12)})


@case("flatten", "elementwise")
def _():
    x = U(-2, 2, 2, 3, 4, 5)
    return op_case("flatten", [("x", x)],
                   ["f1 = flatten(x)", "f0 = flatten(x, start=0)", "f2 = flatten(x, start=2)",
                    "f_neg = flatten(x, start=-2)", "f_t = flatten(transpose(x, 1, 3))"],
                   lambda t: {"f1": torch.flatten(t["x"], 1), "f0": torch.flatten(t["x"], 0),
                              "f2": torch.flatten(t["x"], 2), "f_neg": torch.flatten(t["x"], -2),
                              "f_t": torch.flatten(t["x"].transpose(1, 3), 1)})


@case("transpose", "elementwise")
def _():
    x, m = U(-2, 2, 2, 3, 4), U(-2, 2, 7, 13)
    return op_case("transpose", [("x", x), ("m", m)],
                   ["t01 = transpose(x, 0, 1)", "t_neg = transpose(x, -2, -1)",
                    "t02 = transpose(x, 0, 2)", "t10 = transpose(x, 1, 0)",
                    "tm = transpose(m, 0, 1)", "tt = transpose(transpose(x, 0, 2), 1, 2) + 1"],
                   lambda t: {"t01": t["x"].transpose(0, 1), "t_neg": t["x"].transpose(-2, -1),
                              "t02": t["x"].transpose(0, 2), "t10": t["x"].transpose(1, 0),
                              "tm": t["m"].transpose(0, 1),
                              "tt": t["x"].transpose(0, 2).transpose(1, 2) + L(1)})


@case("permute", "elementwise")
def _():
    x, y = U(-2, 2, 2, 3, 4, 5), U(-2, 2, 2, 3, 4)
    return op_case("permute", [("x", x), ("y", y)],
                   ["p0 = permute(x, [0, 2, 3, 1])", "p1 = permute(x, [3, 2, 1, 0])",
                    "p2 = permute(y, [2, 0, 1])", "p_id = permute(y, [0, 1, 2])",
                    "pp = permute(permute(x, [0, 2, 1, 3]), [0, 2, 1, 3]) * 2"],
                   lambda t: {"p0": t["x"].permute(0, 2, 3, 1), "p1": t["x"].permute(3, 2, 1, 0),
                              "p2": t["y"].permute(2, 0, 1), "p_id": t["y"].permute(0, 1, 2),
                              "pp": t["x"].permute(0, 2, 1, 3).permute(0, 2, 1, 3) * L(2)})


@case("permute_negative", "elementwise")
def _():
    y = U(-2, 2, 2, 3, 4)
    return op_case("permute_negative", [("y", y)],
                   ["p = permute(y, [-1, 0, 1])", "q = permute(y, [0, -1, -2])"],
                   lambda t: {"p": t["y"].permute(-1, 0, 1), "q": t["y"].permute(0, -1, -2)})


@case("concat", "elementwise")
def _():
    a, b, c = U(-2, 2, 2, 3), U(-2, 2, 2, 5), U(-2, 2, 4, 3)
    x, y, z, w = U(-2, 2, 2, 3, 4), U(-2, 2, 2, 1, 4), U(-2, 2, 2, 2, 4), U(-2, 2, 2, 3, 2)
    return op_case("concat", [("a", a), ("b", b), ("c", c), ("x", x), ("y", y), ("z", z), ("w", w)],
                   ["c1 = concat([a, b], 1)", "c0 = concat([a, c, a], 0)",
                    "c3 = concat([x, y, z], 1)", "c_neg = concat([x, w], -1)",
                    "c_t = concat([transpose(a, 0, 1), transpose(b, 0, 1)], 0)"],
                   lambda t: {"c1": torch.cat([t["a"], t["b"]], 1),
                              "c0": torch.cat([t["a"], t["c"], t["a"]], 0),
                              "c3": torch.cat([t["x"], t["y"], t["z"]], 1),
                              "c_neg": torch.cat([t["x"], t["w"]], -1),
                              "c_t": torch.cat([t["a"].transpose(0, 1), t["b"].transpose(0, 1)], 0)})


@case("index", "elementwise")
def _():
    x, m, v = U(-2, 2, 2, 7, 4), U(-2, 2, 7, 13), U(-2, 2, 13)
    return op_case("index", [("x", x), ("m", m), ("v", v)],
                   ["last = x[:, -1, :]", "first = x[0]", "mid = x[:, 2:5]",
                    "head = x[:, :-1]", "whole = x[:]", "one = x[1, 2, 3]",
                    "clamp = x[:, 1:100]", "neg_first = x[-1]", "tail = x[:, -3:]",
                    "mixed = x[1, 2:5, 1:]", "rows = m[2:5]", "cols = m[:, 3:4]",
                    "v_slice = v[2:5]", "v_last = v[-1]"],
                   lambda t: {"last": t["x"][:, -1, :], "first": t["x"][0], "mid": t["x"][:, 2:5],
                              "head": t["x"][:, :-1], "whole": t["x"][:], "one": t["x"][1, 2, 3],
                              "clamp": t["x"][:, 1:100], "neg_first": t["x"][-1],
                              "tail": t["x"][:, -3:], "mixed": t["x"][1, 2:5, 1:],
                              "rows": t["m"][2:5], "cols": t["m"][:, 3:4],
                              "v_slice": t["v"][2:5], "v_last": t["v"][-1]})


@case("index_expr", "elementwise")
def _():
    x, w = U(-2, 2, 2, 7, 4), U(-1, 1, 4, 3)
    return op_case("index_expr", [("x", x), ("w", w)],
                   ["a = (x * 2)[:, 0]", "b = (x @ w)[1, -2:]", "c = transpose(x, 1, 2)[0][1]",
                    "d = x[1][2:4][0]"],
                   lambda t: {"a": (t["x"] * L(2))[:, 0], "b": (t["x"] @ t["w"])[1, -2:],
                              "c": t["x"].transpose(1, 2)[0][1], "d": t["x"][1][2:4][0]})


# --------------------------------------------------------------------------
# layer_norm, conv2d, pooling, embedding, lstm, attention
# --------------------------------------------------------------------------

@case("layer_norm", "reduction")
def _():
    a, g1, b1 = U(-2, 2, 7, 13), N(0.2, 13, mean=1.0), N(0.2, 13)
    x, g2, b2 = N(1.5, 2, 3, 16), N(0.2, 16, mean=1.0), N(0.2, 16)
    off = N(1.0, 3, 8, mean=10.0)
    g3, b3 = N(0.2, 8, mean=1.0), N(0.2, 8)
    return op_case("layer_norm", [("a", a), ("x", x), ("off", off)],
                   ["n2 = layer_norm(a, g1, b1)",
                    "n3 = layer_norm(x, g2, b2, eps=1e-3)",
                    "n_off = layer_norm(off, g3, b3)"],
                   lambda t: {"n2": F.layer_norm(t["a"], (13,), t["g1"], t["b1"], eps=L(1e-5)),
                              "n3": F.layer_norm(t["x"], (16,), t["g2"], t["b2"], eps=L(1e-3)),
                              "n_off": F.layer_norm(t["off"], (8,), t["g3"], t["b3"], eps=L(1e-5))},
                   params=[("g1", g1), ("b1", b1), ("g2", g2), ("b2", b2), ("g3", g3), ("b3", b3)])


@case("conv2d", "reduction")
def _():
    x, w, b = U(-1, 1, 2, 3, 7, 7), N(0.3, 4, 3, 3, 3), N(0.1, 4)
    return op_case("conv2d", [("x", x)],
                   ["y = conv2d(x, w, b)"],
                   lambda t: {"y": F.conv2d(t["x"], t["w"], t["b"])},
                   params=[("w", w), ("b", b)])


@case("conv2d_stride_pad", "reduction")
def _():
    x, w, b = U(-1, 1, 2, 3, 7, 7), N(0.3, 4, 3, 3, 3), N(0.1, 4)
    x8 = U(-1, 1, 1, 3, 8, 8)
    return op_case("conv2d_stride_pad", [("x", x), ("x8", x8)],
                   ["s2p1 = conv2d(x, w, b, stride=2, padding=1)",
                    "p2 = conv2d(x, w, b, padding=2)",
                    "s3 = conv2d(x, w, b, stride=3)",
                    "even = conv2d(x8, w, b, stride=2, padding=1)"],
                   lambda t: {"s2p1": F.conv2d(t["x"], t["w"], t["b"], stride=2, padding=1),
                              "p2": F.conv2d(t["x"], t["w"], t["b"], padding=2),
                              "s3": F.conv2d(t["x"], t["w"], t["b"], stride=3),
                              "even": F.conv2d(t["x8"], t["w"], t["b"], stride=2, padding=1)},
                   params=[("w", w), ("b", b)])


@case("conv2d_nobias", "reduction")
def _():
    x, w = U(-1, 1, 2, 3, 7, 7), N(0.3, 4, 3, 3, 3)
    return op_case("conv2d_nobias", [("x", x)],
                   ["y = conv2d(x, w)", "s2 = conv2d(x, w, stride=2, padding=1)"],
                   lambda t: {"y": F.conv2d(t["x"], t["w"]),
                              "s2": F.conv2d(t["x"], t["w"], stride=2, padding=1)},
                   params=[("w", w)])


@case("conv2d_shapes", "reduction")
def _():
    x = U(-1, 1, 1, 2, 6, 9)
    wr, br = N(0.3, 3, 2, 2, 3), N(0.1, 3)      # rectangular kernel
    w1, b1 = N(0.3, 5, 2, 1, 1), N(0.1, 5)      # 1x1
    g = U(-1, 1, 3, 1, 5, 5)                    # one input channel
    wg, bg = N(0.3, 2, 1, 5, 5), N(0.1, 2)      # kernel == image
    return op_case("conv2d_shapes", [("x", x), ("g", g)],
                   ["rect = conv2d(x, wr, br, padding=1)",
                    "pointwise = conv2d(x, w1, b1)",
                    "full = conv2d(g, wg, bg)",
                    "full_pad = conv2d(g, wg, bg, stride=2, padding=2)"],
                   lambda t: {"rect": F.conv2d(t["x"], t["wr"], t["br"], padding=1),
                              "pointwise": F.conv2d(t["x"], t["w1"], t["b1"]),
                              "full": F.conv2d(t["g"], t["wg"], t["bg"]),
                              "full_pad": F.conv2d(t["g"], t["wg"], t["bg"], stride=2, padding=2)},
                   params=[("wr", wr), ("br", br), ("w1", w1), ("b1", b1), ("wg", wg), ("bg", bg)])


def _pool(opname, cls, tfn):
    @case(opname, cls)
    def _():
        x, x7 = U(-2, 2, 2, 3, 8, 8), U(-2, 2, 1, 2, 7, 7)
        r = U(-2, 2, 1, 1, 6, 9)
        return op_case(opname, [("x", x), ("x7", x7), ("r", r)],
                       ["k2 = %s(x, 2)" % opname,
                        "k3s2 = %s(x7, 3, stride=2)" % opname,
                        "floor = %s(x7, 2)" % opname,
                        "k2s1 = %s(x7, 2, stride=1)" % opname,
                        "k3s1 = %s(x, 3, stride=1)" % opname,
                        "rect = %s(r, 3)" % opname],
                       lambda t: {"k2": tfn(t["x"], 2, 2), "k3s2": tfn(t["x7"], 3, 2),
                                  "floor": tfn(t["x7"], 2, 2), "k2s1": tfn(t["x7"], 2, 1),
                                  "k3s1": tfn(t["x"], 3, 1), "rect": tfn(t["r"], 3, 3)})


_pool("max_pool2d", "elementwise", lambda x, k, s: F.max_pool2d(x, k, stride=s))
_pool("avg_pool2d", "reduction", lambda x, k, s: F.avg_pool2d(x, k, stride=s))


@case("embedding", "elementwise")
def _():
    table = N(1.0, 10, 3)
    ids = torch.tensor([[1, 3, 3, 9, 0], [9, 1, 1, 2, 7]], dtype=torch.int32)
    ids1 = IDS(10, 6)
    ids3 = IDS(10, 2, 2, 3)
    return op_case("embedding", [("ids", ids), ("ids1", ids1), ("ids3", ids3)],
                   ["e2 = embedding(ids, table)", "e1 = embedding(ids1, table)",
                    "e3 = embedding(ids3, table)"],
                   lambda t: {"e2": F.embedding(t["ids"], t["table"]),
                              "e1": F.embedding(t["ids1"], t["table"]),
                              "e3": F.embedding(t["ids3"], t["table"])},
                   params=[("table", table)])


def lstm_ref(x, w_ih, w_hh, b_ih, b_hh):
    """One-layer LSTM, batch_first, zero initial state, gates i, f, g, o."""
    B, T, _ = x.shape
    H = w_hh.shape[1]
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    outs = []
    for s in range(T):
        gates = x[:, s] @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1)


def _lstm_params(I, H):
    k = 1.0 / math.sqrt(H)
    return [("w_ih", U(-k, k, 4 * H, I)), ("w_hh", U(-k, k, 4 * H, H)),
            ("b_ih", U(-k, k, 4 * H)), ("b_hh", U(-k, k, 4 * H))]


def _lstm_t(t):
    return lstm_ref(t["x"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"])


@case("lstm", "reduction")
def _():
    x = U(-1.5, 1.5, 2, 3, 4)
    params = _lstm_params(4, 5)
    return op_case("lstm", [("x", x)],
                   ["hs = lstm(x, w_ih, w_hh, b_ih, b_hh)", "last = hs[:, -1, :]"],
                   lambda t: {"hs": _lstm_t(t), "last": _lstm_t(t)[:, -1, :]},
                   params=params)


@case("lstm_t1", "reduction")
def _():
    x = U(-1.5, 1.5, 3, 1, 2)
    params = _lstm_params(2, 3)
    return op_case("lstm_t1", [("x", x)],
                   ["hs = lstm(x, w_ih, w_hh, b_ih, b_hh)"],
                   lambda t: {"hs": _lstm_t(t)}, params=params)


@case("causal_mask", "elementwise")
def _():
    x = U(-2, 2, 4, 4)
    return op_case("causal_mask", [("x", x)],
                   ["m1 = causal_mask(1)", "m4 = causal_mask(4)", "masked = x + causal_mask(4)",
                    "soft = softmax(x + causal_mask(4))"],
                   lambda t: {"m1": causal_mask(1, t["x"].dtype),
                              "m4": causal_mask(4, t["x"].dtype),
                              "masked": t["x"] + causal_mask(4, t["x"].dtype),
                              "soft": F.softmax(t["x"] + causal_mask(4, t["x"].dtype), -1)})


@case("attention", "reduction")
def _():
    q, k, v = U(-1, 1, 2, 2, 5, 4), U(-1, 1, 2, 2, 5, 4), U(-1, 1, 2, 2, 5, 4)
    x, wq = U(-1, 1, 2, 5, 8), N(0.5, 8, 8)

    def attn(t):
        s = t["q"] @ t["k"].transpose(-2, -1) * L(0.5) + causal_mask(5, t["q"].dtype)
        return F.softmax(s, -1) @ t["v"]

    def heads(t):
        z = (t["x"] @ t["wq"]).reshape(2, 5, 2, 4).permute(0, 2, 1, 3)
        s = z @ z.transpose(-2, -1) * L(0.5) + causal_mask(5, z.dtype)
        mixed = F.softmax(s, -1) @ z
        return mixed.permute(0, 2, 1, 3).reshape(2, 5, 8)

    return op_case("attention", [("q", q), ("k", k), ("v", v), ("x", x)],
                   ["att = softmax(q @ transpose(k, -2, -1) * 0.5 + causal_mask(5)) @ v",
                    "z = permute(reshape(x @ wq, [2, 5, 2, 4]), [0, 2, 1, 3])",
                    "s = z @ transpose(z, -2, -1) * 0.5 + causal_mask(5)",
                    "merged = reshape(permute(softmax(s) @ z, [0, 2, 1, 3]), [2, 5, 8])"],
                   lambda t: {"att": attn(t), "merged": heads(t)},
                   params=[("wq", wq)])


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------

def cross_entropy_ref(logits, labels):
    """Kiln's cross_entropy: class-last logits [..., C], labels [...], mean."""
    C = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1).long())


@case("mse_loss", "reduction")
def _():
    p, q = U(-2, 2, 7, 3), U(-2, 2, 7, 3)
    v, u = U(-2, 2, 13), U(-2, 2, 13)
    x, y = U(-2, 2, 2, 3, 4), U(-2, 2, 2, 3, 4)
    return op_case("mse_loss", [("p", p), ("q", q), ("v", v), ("u", u), ("x", x), ("y", y)],
                   ["l2 = mse_loss(p, q)", "l1 = mse_loss(v, u)", "l3 = mse_loss(x, y)"],
                   lambda t: {"l2": F.mse_loss(t["p"], t["q"]), "l1": F.mse_loss(t["v"], t["u"]),
                              "l3": F.mse_loss(t["x"], t["y"])})


@case("cross_entropy", "reduction")
def _():
    z, y = U(-3, 3, 6, 5), IDS(5, 6)
    z3, y3 = U(-3, 3, 2, 3, 7), IDS(7, 2, 3)
    big, yb = U(-40, 40, 4, 10), IDS(10, 4)
    one, y1 = U(-3, 3, 1, 4), IDS(4, 1)
    return op_case("cross_entropy",
                   [("z", z), ("y", y), ("z3", z3), ("y3", y3), ("big", big), ("yb", yb),
                    ("one", one), ("y1", y1)],
                   ["l2 = cross_entropy(z, y)", "l3 = cross_entropy(z3, y3)",
                    "stable = cross_entropy(big, yb)", "single = cross_entropy(one, y1)"],
                   lambda t: {"l2": cross_entropy_ref(t["z"], t["y"]),
                              "l3": cross_entropy_ref(t["z3"], t["y3"]),
                              "stable": cross_entropy_ref(t["big"], t["yb"]),
                              "single": cross_entropy_ref(t["one"], t["y1"])})


@case("bce_loss", "reduction")
def _():
    p, soft = U(0.05, 0.95, 7, 3), U(0, 1, 7, 3)
    hard = torch.randint(0, 2, (7, 3), generator=_gen).float()
    p1, t1 = U(0.05, 0.95, 13), U(0, 1, 13)
    return op_case("bce_loss", [("p", p), ("soft", soft), ("hard", hard), ("p1", p1), ("t1", t1)],
                   ["l_soft = bce_loss(p, soft)", "l_hard = bce_loss(p, hard)",
                    "l1 = bce_loss(p1, t1)"],
                   lambda t: {"l_soft": F.binary_cross_entropy(t["p"], t["soft"]),
                              "l_hard": F.binary_cross_entropy(t["p"], t["hard"]),
                              "l1": F.binary_cross_entropy(t["p1"], t["t1"])})


@case("bce_with_logits", "reduction")
def _():
    z, soft = U(-5, 5, 7, 3), U(0, 1, 7, 3)
    hard = torch.randint(0, 2, (7, 3), generator=_gen).float()
    big, tb = U(-30, 30, 2, 3, 4), U(0, 1, 2, 3, 4)
    return op_case("bce_with_logits", [("z", z), ("soft", soft), ("hard", hard), ("big", big),
                                       ("tb", tb)],
                   ["l_soft = bce_with_logits(z, soft)", "l_hard = bce_with_logits(z, hard)",
                    "stable = bce_with_logits(big, tb)"],
                   lambda t: {"l_soft": F.binary_cross_entropy_with_logits(t["z"], t["soft"]),
                              "l_hard": F.binary_cross_entropy_with_logits(t["z"], t["hard"]),
                              "stable": F.binary_cross_entropy_with_logits(t["big"], t["tb"])})


# --------------------------------------------------------------------------
# the five models (models/*.kl with smaller header defaults)
# --------------------------------------------------------------------------

def model_kl(src_name, dims):
    """models/SRC.kl with the header defaults in dims replaced; returns (text, all dims)."""
    path = os.path.join(REPO, "models", src_name + ".kl")
    with open(path) as f:
        text = f.read()
    m = re.search(r"^model\s+(\w+)\s*\(([^)]*)\)", text, re.M)
    assert m, path
    header = {}
    for part in m.group(2).split(","):
        k, v = part.split("=")
        header[k.strip()] = int(v)
    for k in dims:
        assert k in header, (src_name, k)
    header.update(dims)
    new = "model %s(%s)" % (m.group(1), ", ".join("%s = %d" % kv for kv in header.items()))
    text = text[:m.start()] + new + text[m.end():]
    note = ("# Generated by tests/ops/gen_reference.py from models/%s.kl; do not edit.\n"
            "# Only the header defaults differ: %s.\n"
            % (src_name, ", ".join("%s = %d" % kv for kv in dims.items())))
    return note + text, header


def glorot(n_in, n_out):
    lim = math.sqrt(6.0 / (n_in + n_out))
    return U(-lim, lim, n_in, n_out)


def linear_params(prefix, n_in, n_out, w=None):
    return [(prefix + ".w", glorot(n_in, n_out) if w is None else w),
            (prefix + ".b", U(-0.1, 0.1, n_out))]


def lin(t, prefix, x):
    return x @ t[prefix + ".w"] + t[prefix + ".b"]


def model_case(name, src, dims, inputs_fn, params_fn, forward, out_names, loss="loss"):
    @case(name, "reduction")
    def _():
        kl, D = model_kl(src, dims)
        inputs = inputs_fn(D)
        params = params_fn(D)

        def fn(t):
            vals = forward(t, D)
            return vals

        return Spec(kl, inputs, params, fn, out_names, loss)


def _mlp_forward(t, D):
    h = torch.relu(lin(t, "fc1", t["x"]))
    h = torch.relu(lin(t, "fc2", h))
    logits = lin(t, "fc3", h)
    return {"logits": logits, "loss": cross_entropy_ref(logits, t["y"])}


model_case("model_mlp", "mlp", {"batch": 2},
           lambda D: [("x", U(0, 1, D["batch"], 784)), ("y", IDS(10, D["batch"]))],
           lambda D: linear_params("fc1", 784, 512) + linear_params("fc2", 512, 256)
           + linear_params("fc3", 256, 10),
           _mlp_forward, ["logits"])


def _he(cout, cin, kh, kw):
    return N(math.sqrt(2.0 / (cin * kh * kw)), cout, cin, kh, kw)


def _cnn_forward(t, D):
    c1 = F.conv2d(t["x"], t["conv1.w"], t["conv1.b"], padding=1)
    p1 = F.max_pool2d(torch.relu(c1), 2)
    c2 = F.conv2d(p1, t["conv2.w"], t["conv2.b"], padding=1)
    p2 = F.max_pool2d(torch.relu(c2), 2)
    f1 = lin(t, "fc1", torch.flatten(p2, 1))
    logits = lin(t, "fc2", torch.relu(f1))
    return {"logits": logits, "loss": cross_entropy_ref(logits, t["y"])}


model_case("model_cnn", "cnn", {"batch": 2},
           lambda D: [("x", U(0, 1, D["batch"], 1, 28, 28)), ("y", IDS(10, D["batch"]))],
           lambda D: [("conv1.w", _he(32, 1, 3, 3)), ("conv1.b", U(-0.1, 0.1, 32)),
                      ("conv2.w", _he(64, 32, 3, 3)), ("conv2.b", U(-0.1, 0.1, 64))]
           + linear_params("fc1", 64 * 7 * 7, 128) + linear_params("fc2", 128, 10),
           _cnn_forward, ["logits"])


def _textcls_forward(t, D):
    emb = F.embedding(t["ids"], t["table"])
    states = lstm_ref(emb, t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"])
    logits = lin(t, "head", states[:, -1, :])
    return {"logits": logits, "loss": cross_entropy_ref(logits, t["y"])}


def _textcls_params(D):
    H, E = D["hidden"], D["embed"]
    k = 1.0 / math.sqrt(H)
    return ([("table", N(1.0, D["vocab"], E)),
             ("w_ih", U(-k, k, 4 * H, E)), ("w_hh", U(-k, k, 4 * H, H)),
             ("b_ih", U(-k, k, 4 * H)), ("b_hh", U(-k, k, 4 * H))]
            + linear_params("head", H, 2))


TEXTCLS_DIMS = {"batch": 2, "seq": 12, "vocab": 100, "hidden": 64}
model_case("model_textcls", "textcls", TEXTCLS_DIMS,
           lambda D: [("ids", IDS(D["vocab"], D["batch"], D["seq"])), ("y", IDS(2, D["batch"]))],
           _textcls_params, _textcls_forward, ["logits"])


def _ln(t, prefix, x):
    return F.layer_norm(x, (x.shape[-1],), t[prefix + ".gamma"], t[prefix + ".beta"], eps=L(1e-5))


def _transformer_forward(t, D):
    B, T, d, H = D["batch"], D["seq"], D["d"], D["heads"]
    dh = d // H

    def split(z):
        return z.reshape(B, T, H, dh).permute(0, 2, 1, 3)

    def attention(x, p):
        qh = split(lin(t, p + ".q", x))
        kh = split(lin(t, p + ".k", x))
        vh = split(lin(t, p + ".v", x))
        scores = qh @ kh.transpose(-2, -1) * L(0.17677669529663687) + causal_mask(T, x.dtype)
        mixed = F.softmax(scores, -1) @ vh
        merged = mixed.permute(0, 2, 1, 3).reshape(B, T, d)
        return lin(t, p + ".o", merged)

    def block(x, p):
        h = x + attention(_ln(t, p + ".ln1", x), p + ".attn")
        return h + lin(t, p + ".down", F.gelu(lin(t, p + ".up", _ln(t, p + ".ln2", h))))

    x = F.embedding(t["ids"], t["tok"]) + t["pos"]
    x = block(block(x, "block1"), "block2")
    logits = lin(t, "head", _ln(t, "lnf", x))
    return {"logits": logits, "loss": cross_entropy_ref(logits, t["targets"])}


def _transformer_params(D):
    d, V, T = D["d"], D["vocab"], D["seq"]

    def norm(p):
        return [(p + ".gamma", N(0.1, d, mean=1.0)), (p + ".beta", N(0.1, d))]

    def linear(p, n_in, n_out):
        return [(p + ".w", N(1.0 / math.sqrt(n_in), n_in, n_out)),
                (p + ".b", U(-0.1, 0.1, n_out))]

    ps = [("tok", N(1.0, V, d)), ("pos", N(0.5, T, d))]
    for b in ("block1", "block2"):
        ps += norm(b + ".ln1")
        for n in ("q", "k", "v", "o"):
            ps += linear("%s.attn.%s" % (b, n), d, d)
        ps += norm(b + ".ln2")
        ps += linear(b + ".up", d, 4 * d) + linear(b + ".down", 4 * d, d)
    ps += norm("lnf") + linear("head", d, V)
    return ps


# d / heads = 32 as in the benchmark, so the literal scale 1/sqrt(32) still matches.
TRANSFORMER_DIMS = {"batch": 2, "seq": 16, "vocab": 64, "d": 64, "heads": 2}
model_case("model_transformer", "transformer", TRANSFORMER_DIMS,
           lambda D: [("ids", IDS(D["vocab"], D["batch"], D["seq"])),
                      ("targets", IDS(D["vocab"], D["batch"], D["seq"]))],
           _transformer_params, _transformer_forward, ["logits"])


def _regression_forward(t, D):
    pred = lin(t, "out", torch.tanh(lin(t, "hidden", t["x"])))
    return {"pred": pred, "loss": F.mse_loss(pred, t["y"])}


model_case("model_regression", "regression", {"batch": 2},
           lambda D: [("x", N(1.0, D["batch"], 13)), ("y", N(1.0, D["batch"], 1))],
           lambda D: linear_params("hidden", 13, 64) + linear_params("out", 64, 1),
           _regression_forward, ["pred"])


# --------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------

def build(name, builder):
    global _gen
    torch.manual_seed(seed_for(name))
    _gen = torch.Generator().manual_seed(seed_for(name))
    spec = builder()
    _gen = None
    return spec


def compute(spec, dtype, grads=True):
    """Run the case in dtype; returns {name: tensor} for outputs (+ loss).

    With grads, params get requires_grad and the loss's gradients are
    returned under grad.NAME (zeros for a param the loss does not reach).
    """
    env = make_env(spec.inputs, spec.params, dtype)
    if grads:
        for n, _ in spec.params:
            env[n].requires_grad_(True)
    vals = spec.fn(env)
    res = {o: vals[o] for o in spec.outputs}
    if spec.loss is not None:
        res[spec.loss] = vals[spec.loss]
    if grads and spec.loss is not None:
        vals[spec.loss].backward()
        for n, _ in spec.params:
            g = env[n].grad
            res["grad." + n] = torch.zeros_like(env[n]) if g is None else g
    return {k: v.detach() for k, v in res.items()}


def within(got, want, cls):
    """The harness's comparison; returns the worst |err| / (atol + rtol|want|)."""
    rtol, atol = TOLERANCES[cls]
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    if np.isnan(got).any() or np.isnan(want).any():
        return float("inf")
    inf = np.isinf(want)
    if (np.isinf(got) != inf).any() or (got[inf] != want[inf]).any():
        return float("inf")
    fin = ~inf
    if not fin.any():
        return 0.0
    err = np.abs(got[fin] - want[fin]) / (atol + rtol * np.abs(want[fin]))
    return float(err.max())


def selftest():
    """The hand-written references against PyTorch's own modules."""
    g = torch.Generator().manual_seed(1)
    B, T, I, H = 2, 3, 4, 5
    mod = torch.nn.LSTM(I, H, batch_first=True)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)
    x = torch.randn(B, T, I, generator=g)
    want, _ = mod(x)
    got = lstm_ref(x.double(), mod.weight_ih_l0.double(), mod.weight_hh_l0.double(),
                   mod.bias_ih_l0.double(), mod.bias_hh_l0.double())
    assert torch.allclose(got.float(), want, rtol=1e-5, atol=1e-6), "lstm_ref != nn.LSTM"
    z, y = torch.randn(2, 3, 7, generator=g), torch.randint(0, 7, (2, 3), generator=g)
    want = F.nll_loss(F.log_softmax(z, -1).reshape(6, 7), y.reshape(6))
    assert torch.allclose(cross_entropy_ref(z, y.int()), want), "cross_entropy_ref"
    cm = causal_mask(3, torch.float32)
    assert cm[0, 1] == float("-inf") and cm[1, 1] == 0 and cm[2, 0] == 0


def grad_sample_indices(case_name, param, numel):
    """GRAD_SAMPLE sorted, distinct flat indices of a param's gradient: 0, the
    last, and the rest drawn by a generator seeded from the case and param."""
    g = torch.Generator().manual_seed(seed_for(case_name + "/" + param))
    mid = torch.randperm(numel - 2, generator=g)[:GRAD_SAMPLE - 2].numpy() + 1
    return np.sort(np.concatenate([[0], mid, [numel - 1]])).astype(np.int32)


def grad_tensors(case_name, param, grad):
    """grad.PARAM, or gradidx.PARAM + gradval.PARAM for a large param."""
    if grad.size <= GRAD_FULL_MAX:
        return [("grad." + param, grad)]
    idx = grad_sample_indices(case_name, param, grad.size)
    return [("gradidx." + param, idx), ("gradval." + param, grad.reshape(-1)[idx])]


def generate(out_dir, only=None, verbose=True, grads=True):
    selftest()
    os.makedirs(out_dir, exist_ok=True)
    written = []
    manifest = []
    worst = []
    for name, cls, builder in CASES:
        manifest.append("%s %s" % (name, cls))
        if only and name not in only:
            continue
        spec = build(name, builder)
        ref = compute(spec, torch.float64, grads)
        f32 = compute(spec, torch.float32, grads)
        # Self-test: PyTorch's own float32 answer passes the tolerance class.
        for k in ref:
            r = within(f32[k].numpy(), ref[k].float().numpy(), cls)
            worst.append((r, name, k))
            if not r <= 0.5:
                sys.exit("%s: %s: float32 PyTorch is %.3g tolerances off the float64 "
                         "reference" % (name, k, r))
        tensors = []
        for n, t in spec.inputs + spec.params:
            tensors.append((n, t.numpy()))
        for o in spec.outputs:
            tensors.append(("out." + o, ref[o].float().numpy()))
        if spec.loss is not None:
            tensors.append((spec.loss, ref[spec.loss].float().numpy()))
        for n, _ in spec.params:
            if "grad." + n in ref:
                tensors += grad_tensors(name, n, ref["grad." + n].float().numpy())
        with open(os.path.join(out_dir, name + ".kl"), "w") as f:
            f.write(spec.kl)
        write_safetensors(os.path.join(out_dir, name + ".safetensors"), tensors)
        written.append(name)
    if not only:
        with open(os.path.join(out_dir, "MANIFEST"), "w") as f:
            f.write("\n".join(manifest) + "\n")
        # Remove fixtures of cases that no longer exist.
        names = {c[0] for c in CASES}
        for p in glob.glob(os.path.join(out_dir, "*.kl")) + \
                glob.glob(os.path.join(out_dir, "*.safetensors")):
            base = os.path.basename(p).rsplit(".", 1)[0]
            if base not in names:
                os.remove(p)
    if verbose:
        worst.sort(reverse=True)
        print("wrote %d cases to %s" % (len(written), os.path.relpath(out_dir)))
        print("float32 PyTorch vs reference, worst error / tolerance:")
        for r, n, k in worst[:5]:
            print("  %.3f  %s %s" % (r, n, k))
    return written


# --------------------------------------------------------------------------
# --check: re-read everything and verify it against the .kl files
# --------------------------------------------------------------------------

def _eval_dim(expr, env):
    expr = expr.strip()
    if not re.fullmatch(r"[\w\s+\-*/()]*", expr):
        raise ValueError(expr)
    py = re.sub(r"(?<!/)/(?!/)", "//", expr)
    return int(eval(py, {"__builtins__": {}}, dict(env)))


def _split_args(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def kl_interface(text):
    """A tiny, independent reading of a .kl file: inputs, params (with fn-call
    prefixes expanded), outputs and the train loss, with shapes evaluated from
    the header defaults.  Enough for the fixtures; not a parser."""
    text = re.sub(r"#[^\n]*", "", text)
    blocks = {}
    for m in re.finditer(r"\b(fn|model)\s+(\w+)\s*(\(([^)]*)\))?\s*\{", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        blocks[(m.group(1), m.group(2))] = (m.group(4) or "", text[m.end():i - 1])
    (mkey,) = [k for k in blocks if k[0] == "model"]
    fns = {k[1]: v for k, v in blocks.items() if k[0] == "fn"}
    hdr, mbody = blocks[mkey]
    dims = {}
    for part in _split_args(hdr):
        k, v = part.split("=")
        dims[k.strip()] = int(v)

    def shape(tystr, env):
        m = re.fullmatch(r"\s*(f32|i32|f64)\s*\[(.*)\]\s*", tystr)
        return m.group(1), [_eval_dim(e, env) for e in _split_args(m.group(2))]

    def params_of(body, env, prefix):
        out = []
        for line in body.split("\n"):
            m = re.match(r"\s*param\s+(\w+)\s*:\s*([^=]+)=", line)
            if m:
                out.append((prefix + m.group(1), shape(m.group(2), env)))
                continue
            m = re.match(r"\s*(\w+)\s*=\s*(\w+)\s*\((.*)\)\s*$", line)
            if m and m.group(2) in fns:
                fargs, fbody = fns[m.group(2)]
                names = [a.strip() for a in fargs.split(",") if a.strip()]
                vals = _split_args(m.group(3))
                sub = {}
                for n, v in zip(names, vals):
                    try:
                        sub[n] = _eval_dim(v, env)
                    except Exception:
                        pass          # a tensor argument
                out += params_of(fbody, sub, prefix + m.group(1) + ".")
        return out

    inputs = [(m.group(1), shape(m.group(2), dims))
              for m in re.finditer(r"^\s*input\s+(\w+)\s*:\s*(.+)$", mbody, re.M)]
    outputs = []
    for m in re.finditer(r"^\s*output\s+(.+)$", mbody, re.M):
        outputs += [o.strip() for o in m.group(1).split(",")]
    lm = re.search(r"^\s*train\s+(\w+)\s+with", mbody, re.M)
    return {"dims": dims, "inputs": inputs, "params": params_of(mbody, dims, ""),
            "outputs": outputs, "loss": lm.group(1) if lm else None}


def find_kiln():
    cands = glob.glob(os.path.join(REPO, "build*", "tools", "kiln")) + \
        glob.glob(os.path.join(REPO, "build*", "kiln"))
    cands = [c for c in cands if os.access(c, os.X_OK)]
    return max(cands, key=os.path.getmtime) if cands else None


GRAD_PREFIXES = ("grad.", "gradidx.", "gradval.")


def check_grads(iface, have):
    """Gradients: none, or one per param (only with `train`): grad.PARAM shaped
    like the param, or for a param of more than GRAD_FULL_MAX elements the
    sample gradidx.PARAM (i32, sorted, distinct, in range, with 0 and the
    last) and gradval.PARAM (f32, as many)."""
    gnames = {n for n in have if n.startswith(GRAD_PREFIXES)}
    if not gnames:
        return []
    if not iface["loss"]:
        return ["gradients without a train statement"]
    problems, expected = [], set()
    for p, (_, shape) in iface["params"]:
        numel = int(np.prod(shape, dtype=np.int64))
        if numel <= GRAD_FULL_MAX:
            expected.add("grad." + p)
            g = have.get("grad." + p)
            if g is not None and (list(g.shape) != shape or g.dtype != np.float32):
                problems.append("grad.%s is %s%s, the param f32%s" % (p, g.dtype, list(g.shape),
                                                                       shape))
            if g is not None and np.isnan(g).any():
                problems.append("grad.%s holds NaN" % p)
            continue
        expected |= {"gradidx." + p, "gradval." + p}
        idx, val = have.get("gradidx." + p), have.get("gradval." + p)
        if idx is None or val is None:
            continue
        if idx.dtype != np.int32 or val.dtype != np.float32 or idx.ndim != 1 \
                or idx.shape != val.shape:
            problems.append("gradidx.%s / gradval.%s: not i32[k] and f32[k]" % (p, p))
        elif idx[0] != 0 or idx[-1] != numel - 1 or (np.diff(idx) <= 0).any():
            problems.append("gradidx.%s: not sorted distinct indices from 0 to %d"
                            % (p, numel - 1))
        elif np.isnan(val).any():
            problems.append("gradval.%s holds NaN" % p)
    for n in sorted(expected - gnames):
        problems.append("missing tensor %s" % n)
    for n in sorted(gnames - expected):
        problems.append("unexpected tensor %s" % n)
    return problems


def check(out_dir, kiln=None):
    problems = []
    with open(os.path.join(out_dir, "MANIFEST")) as f:
        lines = [l.split() for l in f.read().splitlines() if l.strip()]
    names = [l[0] for l in lines]
    for l in lines:
        if len(l) != 2 or l[1] not in TOLERANCES:
            problems.append("MANIFEST: bad line %r" % " ".join(l))
    if len(set(names)) != len(names):
        problems.append("MANIFEST: duplicate names")
    on_disk = {os.path.basename(p).rsplit(".", 1)[0]
               for p in glob.glob(os.path.join(out_dir, "*.kl"))
               + glob.glob(os.path.join(out_dir, "*.safetensors"))}
    for extra in sorted(on_disk - set(names)):
        problems.append("%s: on disk but not in MANIFEST" % extra)
    total = os.path.getsize(os.path.join(out_dir, "MANIFEST"))
    for name in names:
        kl_path = os.path.join(out_dir, name + ".kl")
        st_path = os.path.join(out_dir, name + ".safetensors")
        try:
            total += os.path.getsize(kl_path) + os.path.getsize(st_path)
            with open(kl_path) as f:
                iface = kl_interface(f.read())
            tensors = read_safetensors(st_path)
        except Exception as e:                    # noqa: BLE001
            problems.append("%s: %s" % (name, e))
            continue
        have = {n: a for n, a in tensors}
        want = {}
        for n, (dt, shp) in iface["inputs"] + iface["params"]:
            want[n] = ({"f32": "float32", "i32": "int32", "f64": "float64"}[dt], shp)
        for o in iface["outputs"]:
            want["out." + o] = ("float32", None)
        if iface["loss"]:
            want[iface["loss"]] = ("float32", [])
        for n, (dt, shp) in want.items():
            if n not in have:
                problems.append("%s: missing tensor %s" % (name, n))
            elif str(have[n].dtype) != dt or (shp is not None and list(have[n].shape) != shp):
                problems.append("%s: %s is %s%s, the .kl says %s%s"
                                % (name, n, have[n].dtype, list(have[n].shape), dt, shp))
            elif dt != "int32" and np.isnan(have[n]).any():
                problems.append("%s: %s holds NaN" % (name, n))
        for n in have:
            if n not in want and not n.startswith(GRAD_PREFIXES):
                problems.append("%s: unexpected tensor %s" % (name, n))
        problems += ["%s: %s" % (name, p) for p in check_grads(iface, have)]
        if kiln:
            r = subprocess.run([kiln, "check", kl_path], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append("%s: kiln check exit %d: %s"
                                % (name, r.returncode, (r.stderr or r.stdout).strip()[:300]))
                continue
            # Compare the shapes kiln infers with the fixture's tensors.
            section, seen = None, 0
            for line in r.stdout.splitlines():
                m = re.match(r"^(inputs|params|outputs):\s*$", line)
                if m:
                    section = m.group(1)
                    continue
                m = re.match(r"^\s+(\S+)\s+(f32|i32|f64)\[([\d,\s]*)\]", line)
                if not (m and section):
                    continue
                key = ("out." if section == "outputs" else "") + m.group(1)
                shp = [int(d) for d in m.group(3).replace(" ", "").split(",") if d]
                seen += 1
                if key not in have:
                    problems.append("%s: kiln lists %s, the fixture lacks it" % (name, key))
                elif list(have[key].shape) != shp:
                    problems.append("%s: %s: kiln infers %s, fixture has %s"
                                    % (name, key, shp, list(have[key].shape)))
            expected = len([n for n in have
                            if n != iface["loss"] and not n.startswith(GRAD_PREFIXES)])
            if seen != expected:
                problems.append("%s: kiln check lists %d tensors, the fixture holds %d"
                                % (name, seen, expected))
    return problems, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=CASES_DIR, help="output directory (default: %(default)s)")
    ap.add_argument("--only", nargs="*", help="regenerate only these cases (no MANIFEST rewrite)")
    ap.add_argument("--check", action="store_true",
                    help="do not generate; re-read and verify the fixtures in --out")
    ap.add_argument("--kiln", help="also run `KILN check` on every case (default: the newest "
                    "build*/tools/kiln if any, with --check)")
    ap.add_argument("--no-kiln", action="store_true", help="never run kiln")
    ap.add_argument("--determinism", action="store_true",
                    help="generate twice into temporary directories and compare bytes")
    ap.add_argument("--list", action="store_true", help="print the case names and classes")
    ap.add_argument("--no-grads", action="store_true",
                    help="leave out the gradients (grad.PARAM, gradidx/gradval.PARAM)")
    args = ap.parse_args()

    if args.list:
        for n, c, _ in CASES:
            print(n, c)
        return 0
    if args.determinism:
        import tempfile
        digests = []
        for _ in range(2):
            d = tempfile.mkdtemp(prefix="kiln-ref-")
            generate(d, verbose=False, grads=not args.no_grads)
            h = hashlib.sha256()
            for p in sorted(os.listdir(d)):
                h.update(p.encode())
                with open(os.path.join(d, p), "rb") as f:
                    h.update(f.read())
            digests.append(h.hexdigest())
            shutil.rmtree(d)
        print("run 1 %s\nrun 2 %s" % tuple(digests))
        return 0 if digests[0] == digests[1] else 1
    if not args.check:
        generate(args.out, only=args.only, grads=not args.no_grads)
    kiln = None if args.no_kiln else (args.kiln or (find_kiln() if args.check else None))
    problems, total = check(args.out, kiln)
    sys.stdout.flush()
    for p in problems:
        print("error: " + p, file=sys.stderr)
    print("%d cases, %d bytes (%.2f MB) of fixtures%s" % (
        len(CASES), total, total / 1e6, ", kiln check: " + kiln if kiln else ""))
    if total > SIZE_BUDGET:
        print("error: fixtures exceed the %d byte budget" % SIZE_BUDGET, file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

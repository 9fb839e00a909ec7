#!/usr/bin/python3
"""gen_optim_reference.py - torch.optim reference for Kiln's optimizer pass.

Five steps of torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01) and
torch.optim.Adam(lr=0.01, weight_decay=0.01) on a 4->3->2 tanh MLP with
cross_entropy, a new batch of 8 each step. Writes, next to this script:

  tiny_sgd.kl, tiny_adam.kl   the model with each train statement
  reference.safetensors       init.{w1,b1,w2,b2}; data.x [5,8,4] f32,
                              data.y [5,8] i32; for OPT in sgd, adam and
                              step k = 1..5: OPT.loss{k} (the loss of step k,
                              before its update) and OPT.step{k}.{param}
                              (the params after step k)

Run with PyTorch 1.13: /usr/bin/python3 tests/optim/gen_optim_reference.py
The safetensors file is written by hand (no safetensors package needed).
"""
import json
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 5
PARAMS = ["w1", "b1", "w2", "b2"]

MODEL = """# {what}: tests/optim/gen_optim_reference.py writes this file.
model tiny(batch = 8) {{
  input x: f32[batch, 4]
  input y: i32[batch]
  param w1: f32[4, 3] = glorot
  param b1: f32[3] = zeros
  param w2: f32[3, 2] = glorot
  param b2: f32[2] = zeros
  h = tanh(x @ w1 + b1)
  logits = h @ w2 + b2
  loss = cross_entropy(logits, y)
  output logits
  train loss with {optim}
}}
"""

OPTIMS = {
    "sgd": ("sgd(lr = 0.1, momentum = 0.9, weight_decay = 0.01)",
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "adam": ("adam(lr = 0.01, weight_decay = 0.01)",
             lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01)),
}


def write_safetensors(path, tensors):
    """tensors: list of (name, tensor); F32 / I32, C order, in the given order."""
    header, blobs, at = {}, [], 0
    for name, t in tensors:
        t = t.detach().contiguous()
        dtype = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    torch.manual_seed(1234)
    init = {"w1": torch.empty(4, 3).uniform_(-0.9, 0.9), "b1": torch.empty(3).uniform_(-0.1, 0.1),
            "w2": torch.empty(3, 2).uniform_(-0.9, 0.9), "b2": torch.empty(2).uniform_(-0.1, 0.1)}
    xs = torch.randn(STEPS, 8, 4)
    ys = torch.randint(0, 2, (STEPS, 8), dtype=torch.int32)
    out = [("init." + k, init[k]) for k in PARAMS] + [("data.x", xs), ("data.y", ys)]
    for opt, (stmt, make) in OPTIMS.items():
        with open(os.path.join(HERE, "tiny_%s.kl" % opt), "w") as f:
            f.write(MODEL.format(what="torch.optim reference model, " + opt, optim=stmt))
        ps = {k: init[k].clone().requires_grad_(True) for k in PARAMS}
        o = make([ps[k] for k in PARAMS])
        for k in range(STEPS):
            o.zero_grad()
            h = torch.tanh(xs[k] @ ps["w1"] + ps["b1"])
            loss = torch.nn.functional.cross_entropy(h @ ps["w2"] + ps["b2"], ys[k].long())
            loss.backward()
            o.step()
            out.append(("%s.loss%d" % (opt, k + 1), loss.detach().reshape(())))
            out += [("%s.step%d.%s" % (opt, k + 1, p), ps[p].detach().clone()) for p in PARAMS]
    write_safetensors(os.path.join(HERE, "reference.safetensors"), out)


if __name__ == "__main__":
    main()

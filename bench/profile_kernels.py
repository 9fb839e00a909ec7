#!/usr/bin/python3
"""profile_kernels.py - per-kernel time, FLOPs, bytes and roofline of one model's training
step, from bench/profile.sh's raw files.

    bench/profile_kernels.py PLANNED.txt LAUNCHES.txt PERF_REPORT.txt STEPS FREQ [MEDIAN_MS]

PLANNED.txt: `kiln dump M.kl --stage=planned`; LAUNCHES.txt: the backend's launches in order
(`kiln dump --stage=llvm | grep '^define internal'`, one kiln_kN_NAME a line);
PERF_REPORT.txt: `perf report --no-children --sort sym --stdio -n` of a cpu-clock recording
(-F FREQ) of kiln_bench running STEPS train steps (warm-up included).

Each launch kiln_kN_<op>... is matched to the plan's kernel by op name and order (a group that
splits into several launches gives several rows with the same plan kernel; launches of views
the plan marks [inline] (reshape, slice, pad, embedding, const) match no plan kernel).
FLOPs: 2*M*K*N for matmul and the convolutions (as their im2col GEMMs), 2*B*T*4H*(E+H) for
lstm and twice that for lstm_grad; every other node counts one FLOP per output element (sum:
per input element). Bytes: every value a kernel reads from outside itself (params, state,
inputs, other kernels' results, inline views at their own size) plus every value it stores
(arena, @grad, @update), each once: the compulsory traffic, a lower bound. Roof:
min(PEAK, AI * BW) with PEAK = 222 GFLOP/s (AVX-512 FMA, one core) and BW = 34 GB/s (one
core's DRAM bandwidth, issue 7); most of these working sets fit the 4 MiB L2, so the memory
roof is conservative.
Prints a markdown table per launch and one per kernel family.
"""
import re
import sys
from collections import OrderedDict, defaultdict

PEAK = 222.0  # GFLOP/s
BW = 34.0  # GB/s
DSIZE = {"f32": 4, "i32": 4, "f64": 8, "i64": 8, "f16": 2, "bf16": 2, "i8": 1, "u8": 1,
         "bool": 1}
NODE = re.compile(r"^  %(\S+) = (\w+)(.*?) : (\w+)\[([\d,]*)\](?: \[([^\]]*)\])?")
VIEW_OPS = {"reshape", "slice", "pad", "embedding", "const", "permute"}


def prod(xs):
    p = 1
    for x in xs:
        p *= x
    return p


def parse_plan(path):
    nodes = OrderedDict()
    kernels = defaultdict(list)
    for line in open(path):
        m = NODE.match(line)
        if not m:
            continue
        name, op, rest, dt, shape, place = m.groups()
        place = place or ""
        rest = rest.split("#")[0]
        args = re.findall(r"%([\w.]+)", rest.split("{")[0])
        attrs = rest[rest.index("{"):] if "{" in rest else ""
        shape = [int(s) for s in shape.split(",") if s]
        k = re.match(r"k(\d+)", place)
        n = {"name": name, "op": op, "args": args, "shape": shape, "dt": dt,
             "bytes": prod(shape) * DSIZE.get(dt, 4), "place": place, "attrs": attrs,
             "k": int(k.group(1)) if k else None}
        nodes[name] = n
        if n["k"] is not None:
            kernels[n["k"]].append(n)
    return nodes, dict(sorted(kernels.items()))


def node_flops(n, nodes):
    op, s = n["op"], n["shape"]
    a = [nodes[x] for x in n["args"] if x in nodes]
    if op == "matmul":
        return 2 * prod(s) * a[0]["shape"][-1], True
    if op == "conv2d":
        w = a[1]["shape"]
        return 2 * prod(s) * prod(w[1:]), True
    if op == "conv2d_grad_input":
        w = a[1]["shape"]
        return 2 * prod(s) * w[0] * prod(w[2:]), True
    if op == "conv2d_grad_weight":
        dy = a[1]["shape"]
        return 2 * prod(s) * dy[0] * prod(dy[2:]), True
    if op in ("lstm", "lstm_grad"):
        x, wih, whh = a[0]["shape"], a[1]["shape"], a[2]["shape"]
        f = 2 * x[0] * x[1] * wih[0] * (wih[1] + whh[1])
        return (f if op == "lstm" else 2 * f), True
    if op in ("sum", "mean", "max", "cross_entropy", "cross_entropy_grad", "softmax",
              "layer_norm", "layer_norm_grad", "max_pool2d", "max_pool2d_grad"):
        return max(prod(a[0]["shape"]) if a else 0, prod(s)), False
    if op in VIEW_OPS or op in ("input", "param", "state"):
        return 0, False
    return prod(s), False


def kernel_figures(nodes, kern):
    inside = {n["name"] for n in kern}
    reads, writes = set(), 0
    flops = gemm = 0
    for n in kern:
        f, is_gemm = node_flops(n, nodes)
        flops += f
        gemm += f if is_gemm else 0
        for x in n["args"]:
            if x not in inside and x in nodes:
                reads.add(x)
        if "@" in n["place"]:
            writes += n["bytes"]
    rbytes = sum(nodes[x]["bytes"] for x in reads if nodes[x]["op"] != "const")
    return flops, gemm, rbytes + writes


def launch_op(sym):
    s = re.sub(r"^kiln_k\d+_", "", sym)
    s = re.sub(r"^fused\d+_", "", s)
    return re.sub(r"_epi\d+.*$", "", s)


def family(kern, op):
    ops = {n["op"] for n in kern} if kern else {op}
    if "lstm" in ops or "lstm_grad" in ops:
        return "lstm (fwd / bwd, recurrence + gates)"
    if ops & {"conv2d", "conv2d_grad_input", "conv2d_grad_weight"}:
        return "convolution (fwd, dx, dW)"
    if "matmul" in ops:
        return "GEMM (matmul + fused epilogue)"
    if ops & {"layer_norm", "layer_norm_grad", "softmax", "cross_entropy",
              "cross_entropy_grad", "max_pool2d", "max_pool2d_grad", "gelu", "gelu_grad",
              "embedding_grad", "causal_mask"}:
        return "norm / softmax / pool / loss / embedding"
    if kern and any("@update" in n["place"] for n in kern):
        return "optimizer update (SGD / Adam)"
    if ops <= {"sum"}:
        return "bias-gradient sums"
    return "other elementwise / views"


def describe(kern):
    outs = [n for n in kern if "@" in n["place"]] or kern[-1:]
    ops = []
    for n in kern:
        if n["op"] not in ops:
            ops.append(n["op"])
    o = outs[0]
    shp = "x".join(map(str, o["shape"])) or "scalar"
    more = f" +{len(outs) - 1}" if len(outs) > 1 else ""
    return f"{'+'.join(ops)} -> %{o['name']}[{shp}]{more}"


def annotate(path):
    """Share of a kernel's samples inside its FMA loop: the address range of the densest
    cluster of vector FMAs (gaps under 256 bytes), from `perf annotate --stdio`."""
    ins = []
    for line in open(path):
        m = re.match(r"\s+([\d.]+)\s+:\s+([0-9a-f]+):\s+(.*)", line)
        if m:
            ins.append((int(m.group(2), 16), float(m.group(1)), m.group(3).strip()))
    fma = sorted(a for a, _, t in ins if re.match(r"vfmadd\d+ps", t))
    if not fma:
        print(f"no vector FMAs; {len(ins)} instructions")
        return
    clusters, cur = [], [fma[0]]
    for a in fma[1:]:
        if a - cur[-1] > 256:
            clusters.append(cur)
            cur = []
        cur.append(a)
    clusters.append(cur)
    best = max(clusters, key=len)
    lo, hi = best[0], best[-1]
    inside = [(p, t) for a, p, t in ins if lo - 64 <= a <= hi + 16]
    share = sum(p for p, _ in inside)
    kinds = defaultdict(int)
    for _, t in inside:
        kinds[t.split()[0]] += 1
    body = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items(), key=lambda x: -x[1])[:6])
    print(f"FMA loop {lo:#x}-{hi:#x}: {share:.1f}% of the kernel's samples; its body: {body}")
    print(f"outside the FMA loop: {100 - share:.1f}% (packing, edges, epilogue, loop control)")


def main():
    if sys.argv[1] == "--annotate":
        annotate(sys.argv[2])
        return
    plan_p, launch_p, rep_p, steps, freq = sys.argv[1:6]
    median = float(sys.argv[6]) if len(sys.argv) > 6 else None
    steps, freq = int(steps), float(freq)
    nodes, kernels = parse_plan(plan_p)
    launches = [l.strip() for l in open(launch_p) if l.strip()]
    samples, total = {}, 0
    for line in open(rep_p):
        m = re.match(r"\s*([\d.]+)%\s+(\d+)\s+\[.\]\s+(\S+)", line)
        if m:
            samples[m.group(3)] = samples.get(m.group(3), 0) + int(m.group(2))
            total += int(m.group(2))
    ms = {s: c / freq * 1e3 / steps for s, c in samples.items()}

    # Match launches to plan kernels by op and order.
    kidx = list(kernels)
    p, rows = 0, []
    for sym in launches:
        op = launch_op(sym)
        hit = None
        if p < len(kidx) and op in {n["op"] for n in kernels[kidx[p]]}:
            hit = p
        elif p > 0 and op in {n["op"] for n in kernels[kidx[p - 1]]}:
            hit = p - 1
        elif op not in VIEW_OPS:
            for q in range(p + 1, min(p + 6, len(kidx))):
                if op in {n["op"] for n in kernels[kidx[q]]}:
                    hit = q
                    break
        if hit is not None and hit >= p:
            p = hit + 1
        rows.append((sym, kidx[hit] if hit is not None else None))

    seen = set()
    out = []
    fam_t = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    step_ms = sum(ms.values())
    kern_ms = 0.0
    for sym, k in rows:
        t = ms.get(sym, 0.0)
        kern_ms += t
        kern = kernels.get(k, []) if k is not None else []
        first = k not in seen
        seen.add(k)
        if kern and first:
            # Time of every launch of this plan kernel.
            tk = sum(ms.get(s, 0.0) for s, kk in rows if kk == k)
            flops, gemm, byts = kernel_figures(nodes, kern)
        else:
            tk, flops, gemm, byts = t, 0, 0, 0
        fam = family(kern, launch_op(sym))
        f = fam_t[fam]
        f[0] += t
        if first or not kern:
            f[1] += flops
            f[2] += byts
        f[3] += 1
        if t < 0.0005 * step_ms and not (kern and first and flops > 1e7):
            continue
        ai = flops / byts if byts else 0
        roof = min(PEAK, ai * BW) if byts else PEAK
        gfs = flops / (tk * 1e6) if tk > 0 and first else 0
        gbs = byts / (tk * 1e6) if tk > 0 and first else 0
        bound = "compute" if ai * BW >= PEAK else "memory"
        label = f"k{k}" if k is not None else "(view)"
        what = describe(kern) if kern else launch_op(sym)
        if kern and first:
            fig = (f"{flops / 1e6:.1f} | {byts / 2**20:.2f} | {ai:.1f} | {gfs:.1f} | "
                   f"{gbs:.1f} | {bound} "
                   f"{100 * (gfs / roof if roof > 0 else gbs / BW):.0f}%")
        else:
            fig = "| | | | | " + ("(same kernel, above)" if kern else "")
        out.append(f"| {sym} | {label} | {what} | {t:.3f} | {100 * t / step_ms:.1f} | {fig} |")

    print(f"samples: {total} in {steps} steps at {freq:.0f} Hz; "
          f"{step_ms:.2f} ms CPU per step in all symbols (model creation spread over the steps), "
          f"{kern_ms:.2f} ms in kernels (kiln_k*)"
          + (f"; kiln_bench's median step: {median:.2f} ms" if median else ""))
    print()
    print("| launch | plan | what | ms/step | % | MFLOP | MiB moved | FLOP/B | GFLOP/s | "
          "GB/s | bound, % of roof |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in out:
        print(r)
    others = sorted(((v, s) for s, v in ms.items() if not s.startswith("kiln_k")),
                    reverse=True)[:6]
    print()
    print("Outside kernels: " + ", ".join(f"{s} {v:.3f} ms" for v, s in others))
    print()
    print("| family | launches | ms/step | % of step | MFLOP | MiB moved | GFLOP/s | "
          "% of FMA peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for fam, (t, fl, by, n) in sorted(fam_t.items(), key=lambda x: -x[1][0]):
        g = fl / (t * 1e6) if t > 0 else 0
        print(f"| {fam} | {n} | {t:.2f} | {100 * t / step_ms:.1f} | {fl / 1e6:.0f} | "
              f"{by / 2**20:.1f} | {g:.1f} | {100 * g / PEAK:.0f}% |")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""run_all.py - every measurement of issue 7, Kiln beside PyTorch and OpenBLAS, and the
report bench/RESULTS.md. bench/run.sh builds the tools and calls this; run it directly only
to re-measure with tools already built, or to rewrite the report from saved measurements:

    bench/run_all.py --build BUILD --tools DIR [--openmp-blas DIR] [--quick]
    bench/run_all.py --report-only BUILD/bench/results.jsonl

--build: Kiln's build directory (BUILD/tools/kiln is timed). --tools: where run.sh put
kiln_bench and gemm_openblas. --openmp-blas: the directory holding Debian's OpenMP build of
OpenBLAS (libopenblas0-openmp), put first on LD_LIBRARY_PATH for PyTorch at 2 threads.
--quick: few repeats and a subset of the GEMM shapes, for checking the harness.

Every figure is one fresh process (bench/kiln_bench, bench/torch_bench.py,
bench/gemm_openblas) printing one JSON line; this script appends each line, tagged, to
BUILD/bench/results.jsonl and writes RESULTS.md from that file.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"

MODELS = ["mlp", "cnn", "textcls", "transformer"]
THREADS = [1, 2]
# Integer inputs' ranges (kiln_bench --range): classes 10 (mlp, cnn) and 2 (textcls), vocab
# 5000 (textcls ids) and 256 (transformer ids and targets), as models/*.kl and
# bench/torch_models.py. A wrong range makes the compiled model return KILN_ERR_RANGE, which
# kiln_bench reports as a failure.
RANGES = {"mlp": ["y=10"], "cnn": ["y=10"], "textcls": ["ids=5000", "y=2"],
          "transformer": ["ids=256", "targets=256"]}
# Timed calls per process (each loop also stops after MAX_S seconds once 5 calls are timed).
TRAIN_REPS = {"mlp": 60, "cnn": 20, "textcls": 20, "transformer": 20}
INFER_REPS = {"mlp": 100, "cnn": 30, "textcls": 30, "transformer": 30}
INFER1_REPS = 300
MAX_S = 1.5
TRAIN_ROUNDS = 2  # interleaved kiln / PyTorch processes per training-step figure
GEMM_ROUNDS = 2  # interleaved kiln / OpenBLAS processes per GEMM figure at 2 threads
COMPILE_RUNS = 3

# Issue 7's targets.
TRAIN_TARGET = {"mlp": 0.8, "cnn": 0.5, "textcls": 0.5, "transformer": 0.5}
COMPILE_TARGET = {"mlp": 0.3, "transformer": 1.5}
PEAK_PER_CORE = 222.0  # GFLOP/s, FP32 AVX-512 FMA (2 x 16 lanes x 2 FLOP x ~3.5 GHz)

TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
CLEAN_VARS = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS", "GLIBC_TUNABLES", "OPENBLAS_VERBOSE", "LD_LIBRARY_PATH",
              "ATEN_CPU_CAPABILITY", "LD_PRELOAD"]

# Every matrix product in the four models' training steps, as (model, phase, M, K, N, batch,
# form, count, what). C[M,N] = op(A) op(B); form NN = A·B, TN = Aᵀ·B (A stored [K,M]: weight
# gradients), NT = A·Bᵀ (B stored [N,K]: input gradients, and PyTorch-layout LSTM weights).
# batch > 1: that many independent products (attention over batch x heads); count: how many
# times a training step runs the product (layers of the same shape, LSTM time steps). Only
# products needed for the parameters' gradients are listed (no gradient w.r.t. the model's
# own inputs x). Convolutions are listed as the GEMMs of im2col (Kiln runs them as implicit
# GEMMs with the same FLOPs). These also give the FLOP counts of the fraction-of-peak figures.
GEMMS = [
    # mlp, batch 128: 784 -> 512 -> 256 -> 10
    ("mlp", "fwd", 128, 784, 512, 1, "NN", 1, "fc1 x·W1"),
    ("mlp", "bwd", 784, 128, 512, 1, "TN", 1, "fc1 dW1 = xᵀ·dY1"),
    ("mlp", "fwd", 128, 512, 256, 1, "NN", 1, "fc2 h1·W2"),
    ("mlp", "bwd", 512, 128, 256, 1, "TN", 1, "fc2 dW2 = h1ᵀ·dY2"),
    ("mlp", "bwd", 128, 256, 512, 1, "NT", 1, "fc2 dh1 = dY2·W2ᵀ"),
    ("mlp", "fwd", 128, 256, 10, 1, "NN", 1, "fc3 h2·W3"),
    ("mlp", "bwd", 256, 128, 10, 1, "TN", 1, "fc3 dW3 = h2ᵀ·dY3"),
    ("mlp", "bwd", 128, 10, 256, 1, "NT", 1, "fc3 dh2 = dY3·W3ᵀ"),
    # cnn, batch 64: conv1 1->32 on 28x28, conv2 32->64 on 14x14, fc 3136 -> 128 -> 10
    ("cnn", "fwd", 32, 9, 784, 64, "NN", 1, "conv1 fwd per image: W[32,9]·col[9,784]"),
    ("cnn", "bwd", 32, 50176, 9, 1, "NT", 1, "conv1 dW = dY[32,64·784]·colᵀ"),
    ("cnn", "fwd", 64, 288, 196, 64, "NN", 1, "conv2 fwd per image: W[64,288]·col[288,196]"),
    ("cnn", "bwd", 64, 12544, 288, 1, "NT", 1, "conv2 dW = dY[64,64·196]·colᵀ"),
    ("cnn", "bwd", 288, 64, 196, 64, "TN", 1, "conv2 dx per image: Wᵀ·dY (then col2im)"),
    ("cnn", "fwd", 64, 3136, 128, 1, "NN", 1, "fc1 x·W"),
    ("cnn", "bwd", 3136, 64, 128, 1, "TN", 1, "fc1 dW"),
    ("cnn", "bwd", 64, 128, 3136, 1, "NT", 1, "fc1 dx"),
    ("cnn", "fwd", 64, 128, 10, 1, "NN", 1, "fc2 h·W"),
    ("cnn", "bwd", 128, 64, 10, 1, "TN", 1, "fc2 dW"),
    ("cnn", "bwd", 64, 10, 128, 1, "NT", 1, "fc2 dh"),
    # textcls, batch 32, 50 steps, embed 64, hidden 128 (4 gates: 512)
    ("textcls", "fwd", 1600, 64, 512, 1, "NT", 1, "lstm input projection, all steps: X·W_ihᵀ"),
    ("textcls", "fwd", 32, 128, 512, 1, "NT", 50, "lstm recurrence per step: h·W_hhᵀ (x50)"),
    ("textcls", "fwd", 32, 128, 2, 1, "NN", 1, "head h·W"),
    ("textcls", "bwd", 128, 32, 2, 1, "TN", 1, "head dW"),
    ("textcls", "bwd", 32, 2, 128, 1, "NT", 1, "head dh"),
    ("textcls", "bwd", 32, 512, 128, 1, "NN", 50, "lstm dh per step: dG·W_hh (x50)"),
    ("textcls", "bwd", 512, 1600, 128, 1, "TN", 1, "lstm dW_hh = dGᵀ·H (all steps)"),
    ("textcls", "bwd", 512, 1600, 64, 1, "TN", 1, "lstm dW_ih = dGᵀ·X (all steps)"),
    ("textcls", "bwd", 1600, 512, 64, 1, "NN", 1, "lstm dX = dG·W_ih (embedding gradient)"),
    # transformer, batch 16 x seq 64 = 1024 tokens, d 128, 4 heads of 32, 2 blocks
    ("transformer", "fwd", 1024, 128, 128, 1, "NN", 8, "q, k, v, o projections (x8)"),
    ("transformer", "bwd", 128, 1024, 128, 1, "TN", 8, "q, k, v, o dW (x8)"),
    ("transformer", "bwd", 1024, 128, 128, 1, "NT", 8, "q, k, v, o dx (x8)"),
    ("transformer", "fwd", 1024, 128, 512, 1, "NN", 2, "mlp up (x2)"),
    ("transformer", "bwd", 128, 1024, 512, 1, "TN", 2, "mlp up dW (x2)"),
    ("transformer", "bwd", 1024, 512, 128, 1, "NT", 2, "mlp up dx (x2)"),
    ("transformer", "fwd", 1024, 512, 128, 1, "NN", 2, "mlp down (x2)"),
    ("transformer", "bwd", 512, 1024, 128, 1, "TN", 2, "mlp down dW (x2)"),
    ("transformer", "bwd", 1024, 128, 512, 1, "NT", 2, "mlp down dx (x2)"),
    ("transformer", "fwd", 1024, 128, 256, 1, "NN", 1, "head"),
    ("transformer", "bwd", 128, 1024, 256, 1, "TN", 1, "head dW"),
    ("transformer", "bwd", 1024, 256, 128, 1, "NT", 1, "head dx"),
    ("transformer", "fwd", 64, 32, 64, 64, "NT", 2, "attn scores q·kᵀ, 16x4 heads (x2)"),
    ("transformer", "fwd", 64, 64, 32, 64, "NN", 2, "attn P·v (x2)"),
    ("transformer", "bwd", 64, 32, 64, 64, "NT", 2, "attn dP = dO·vᵀ (x2)"),
    ("transformer", "bwd", 64, 64, 32, 64, "TN", 2, "attn dv = Pᵀ·dO (x2)"),
    ("transformer", "bwd", 64, 64, 32, 64, "NN", 2, "attn dq = dS·k (x2)"),
    ("transformer", "bwd", 64, 64, 32, 64, "TN", 2, "attn dk = dSᵀ·q (x2)"),
]
# Kiln times a GEMM through a one-product model; convolutions through a one-conv2d model
# (implicit GEMM, against OpenBLAS's im2col GEMM without the im2col). The backward
# convolutions only run inside a training step, so they have no Kiln row of their own.
KILN_CONV = {
    (32, 9, 784, 64, "NN"): "input x: f32[64, 1, 28, 28]\n  input w: f32[32, 1, 3, 3]\n"
                            "  y = conv2d(x, w, padding = 1)",
    (64, 288, 196, 64, "NN"): "input x: f32[64, 32, 14, 14]\n  input w: f32[64, 32, 3, 3]\n"
                              "  y = conv2d(x, w, padding = 1)",
}
KILN_NONE = {(32, 50176, 9, 1, "NT"), (64, 12544, 288, 1, "NT"), (288, 64, 196, 64, "TN")}
SKINNY = 16  # a "skinny" GEMM has a dimension <= this: there Kiln should beat OpenBLAS


def flops(m, k, n, batch=1, count=1):
    return 2.0 * m * k * n * batch * count


def model_flops(model, phases=("fwd", "bwd")):
    return sum(flops(m, k, n, b, c) for (mo, ph, m, k, n, b, f, c, _) in GEMMS
               if mo == model and ph in phases)


def gemm_shapes():
    """Distinct (M, K, N, batch, form) with every place they come from, 1024³ first."""
    shapes = {(1024, 1024, 1024, 1, "NN"): ["reference 1024³"]}
    for (mo, ph, m, k, n, b, f, c, what) in GEMMS:
        shapes.setdefault((m, k, n, b, f), []).append(f"{mo}: {what}")
    return shapes


def gemm_kl(key):
    m, k, n, b, form = key
    if key in KILN_CONV:
        body = KILN_CONV[key]
    else:
        pre = f"{b}, " if b > 1 else ""
        a = f"f32[{pre}{k}, {m}]" if form == "TN" else f"f32[{pre}{m}, {k}]"
        bb = f"f32[{pre}{n}, {k}]" if form == "NT" else f"f32[{pre}{k}, {n}]"
        ea = "transpose(a, -2, -1)" if form == "TN" else "a"
        eb = "transpose(b, -2, -1)" if form == "NT" else "b"
        body = f"input a: {a}\n  input b: {bb}\n  y = {ea} @ {eb}"
    return f"# {m}x{k}x{n} {form} batch {b}\nmodel g {{\n  {body}\n  output y\n}}\n"


def gemm_key_name(key):
    m, k, n, b, form = key
    return f"g_{m}_{k}_{n}_{b}_{form}"


class Runner:
    def __init__(self, args):
        self.args = args
        self.kiln = os.path.abspath(args.kiln or os.path.join(args.build, "tools", "kiln"))
        self.src = os.path.abspath(args.src or ROOT)  # the sources Kiln was built from
        self.tools = os.path.abspath(args.tools)
        self.out = os.path.join(os.path.abspath(args.build), "bench")
        self.sodir = os.path.join(self.out, "so")
        os.makedirs(self.sodir, exist_ok=True)
        self.results = os.path.join(self.out, "results.jsonl")
        if not args.only:  # a full run starts afresh; --only adds to the previous results
            open(self.results, "w").close()
        self.omp = args.openmp_blas
        self.quick = args.quick

    def log(self, msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def save(self, rec):
        with open(self.results, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def section(self, name):
        """Log the machine's load before a section: the load averages, and the CPUs kept busy by
        other processes over one second (this script is idle then). With --quiet-busy B, wait
        (up to --quiet-wait seconds) until other processes use at most B CPUs."""
        waited = 0.0
        busy = busy_cpus()
        while (self.args.quiet_busy > 0 and busy > self.args.quiet_busy
               and waited < self.args.quiet_wait):
            time.sleep(4)
            waited += 5
            busy = busy_cpus()
        load = os.getloadavg()
        self.log(f"== {name} (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
                 f"{busy:.2f} CPUs busy" + (f", waited {waited:.0f} s" if waited else "") + ")")
        self.save({"kind": "load", "section": name, "load": load, "busy": busy,
                   "waited": waited, "time": time.time()})

    def base_env(self):
        env = dict(os.environ)
        for k in CLEAN_VARS:
            env.pop(k, None)
        return env

    def torch_env(self, threads, tuned, coretype=None):
        env = self.base_env()
        if tuned:
            env["GLIBC_TUNABLES"] = TUNABLES
            env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
            if coretype:
                env["OPENBLAS_CORETYPE"] = coretype
            if threads > 1 and self.omp:
                env["LD_LIBRARY_PATH"] = self.omp
        return env

    def run_tool(self, cmd, env, timeout):
        """Run one measuring process: (its stdout's lines, or None when it exited non-zero or
        timed out; what to report if its output is not what was wanted)."""
        try:
            p = subprocess.run(cmd, env=env or self.base_env(), capture_output=True, text=True,
                               timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout} s"
        why = p.stderr.strip()[-500:] or f"exit {p.returncode}"
        return (p.stdout.strip().splitlines() if p.returncode == 0 else None), why

    def measure(self, tags, cmd, env=None, timeout=300):
        """Run one measuring process; save its JSON line with tags; return it (or None)."""
        t0 = time.time()
        lines, why = self.run_tool(cmd, env, timeout)
        rec = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
        out = {"kind": "measure", **tags, "wall_s": time.time() - t0}
        if rec:
            out.update(rec)
        else:
            out["error"] = why
            self.log(f"   FAILED {tags}: {why}")
        self.save(out)
        if rec:
            self.log(f"   {tags} {rec['median_ms']:.4f} ms")
        return out

    def measure_lines(self, tags, configs, cmd, env=None, timeout=300):
        """Run one measuring process printing one JSON line per implementation (impl ->
        config in configs); save each with tags."""
        t0 = time.time()
        lines, why = self.run_tool(cmd, env, timeout)
        recs = [json.loads(l) for l in lines or [] if l.startswith("{")]
        if len(recs) != len(configs):
            for impl, config in configs.items():
                self.save({"kind": "measure", **tags, "impl": impl, "config": config,
                           "wall_s": time.time() - t0, "error": why})
            self.log(f"   FAILED {tags}: {why}")
            return
        for rec in recs:
            out = {"kind": "measure", **tags, "config": configs[rec["impl"]],
                   "wall_s": time.time() - t0, **rec}
            self.save(out)
            self.log(f"   {tags} {rec['impl']} {rec['median_ms']:.4f} ms")

    def kiln_cmd(self, so, name, mode, threads, reps, extra=(), max_s=None):
        return [os.path.join(self.tools, "kiln_bench"), so, mode, str(threads), "--name", name,
                "--reps", str(reps), "--max-seconds", str(max_s or MAX_S), *extra]

    def torch_cmd(self, model, threads, what, reps, max_s=None):
        return [PY, os.path.join(HERE, "torch_bench.py"), model, str(threads), what,
                "--reps", str(reps), "--max-seconds", str(max_s or MAX_S)]

    def ranges(self, model):
        return [a for r in RANGES[model] for a in ("--range", r)]

    def reps(self, n):
        return max(5, n // 5) if self.quick else n

    # ---------------------------------------------------------------- sections

    def machine(self):
        info = {"kind": "machine", "date": datetime.datetime.now().astimezone().isoformat(
            timespec="seconds")}
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for key in ("Model name", "CPU(s)", "Core(s) per socket", "Thread(s) per core",
                    "L1d cache", "L2 cache", "L3 cache", "Hypervisor vendor"):
            m = re.search(rf"^{re.escape(key)}:\s*(.*)$", lscpu, re.M)
            info[key] = m.group(1).strip() if m else "?"
        flags = re.search(r"^Flags:\s*(.*)$", lscpu, re.M)
        flags = flags.group(1).split() if flags else []
        info["avx512f"] = "avx512f" in flags
        info["avx2"] = "avx2" in flags

        def git(*a):
            return subprocess.run(["git", *a], capture_output=True, text=True,
                                  cwd=ROOT).stdout

        info["commit"] = self.args.commit or git("rev-parse", "--short", "HEAD").strip()
        dirty = [l[3:] for l in git("status", "--porcelain", "--untracked-files=no").splitlines()
                 if len(l) > 3]
        info["dirty"] = len(dirty)
        info["dirty_files"] = dirty[:40]
        cache = os.path.join(os.path.dirname(os.path.dirname(self.kiln)), "CMakeCache.txt")
        if os.path.exists(cache):
            txt = open(cache).read()
            for var in ("CMAKE_BUILD_TYPE", "KILN_VERIFY_PASSES", "CMAKE_C_COMPILER"):
                m = re.search(rf"^{var}:\w+=(.*)$", txt, re.M)
                info[var] = m.group(1) if m else "?"
        info["build"] = os.path.relpath(os.path.dirname(os.path.dirname(self.kiln)), ROOT)
        info["head_export"] = self.src != ROOT
        info["openmp_blas"] = self.omp or None
        info["openmp_blas_note"] = self.args.openmp_note
        ver = subprocess.run([PY, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, env=self.base_env())
        info["torch"] = ver.stdout.strip()
        # Which OpenBLAS kernels PyTorch gets, as installed and with the tuned environment.
        probe = "import torch; a = torch.ones(64, 64); (a @ a).sum()"
        cores = {}
        for label, env in (("as installed", self.torch_env(1, False)),
                           ("tuned, no OPENBLAS_CORETYPE", self.torch_env(2, True)),
                           ("tuned, OPENBLAS_CORETYPE=SkylakeX",
                            self.torch_env(2, True, "SkylakeX"))):
            env["OPENBLAS_VERBOSE"] = "2"
            p = subprocess.run([PY, "-c", probe], capture_output=True, text=True, env=env)
            m = re.findall(r"Core: (\S+)", p.stdout + p.stderr)
            cores[label] = m[0] if m else "?"
        info["torch_openblas_core"] = cores
        self.save(info)
        self.log(f"machine: {info['Model name']}, commit {info['commit']} (+{info['dirty']} "
                 f"modified), OpenBLAS cores under PyTorch: {cores}")

    def compile_times(self):
        self.section("compile")
        for model in MODELS:
            src = os.path.join(self.src, "models", f"{model}.kl")
            for variant, flags in (("train", []), ("no-train", ["--no-train"])):
                d = os.path.join(self.sodir, variant)
                os.makedirs(d, exist_ok=True)
                out = os.path.join(d, f"{model}.so")
                for run in range(1 if self.quick else COMPILE_RUNS):
                    t0 = time.perf_counter()
                    p = subprocess.run([self.kiln, "compile", src, "-o", out, *flags],
                                       capture_output=True, text=True)
                    dt = time.perf_counter() - t0
                    rec = {"kind": "compile", "model": model, "variant": variant, "run": run,
                           "seconds": dt, "rc": p.returncode}
                    if p.returncode == 0:
                        rec["so_bytes"] = os.path.getsize(out)
                    else:
                        rec["error"] = p.stderr[-500:]
                    self.save(rec)
                    self.log(f"   compile {model} {variant} run {run}: {dt:.3f} s rc {p.returncode}")
        for model in ("mlp", "transformer"):
            src = os.path.join(self.src, "models", f"{model}.kl")
            out = os.path.join(self.sodir, f"tp_{model}.so")
            p = subprocess.run([self.kiln, "compile", src, "-o", out, "--time-passes"],
                               capture_output=True, text=True)
            self.save({"kind": "time_passes", "model": model, "rc": p.returncode,
                       "text": p.stderr})
        # Batch-1 inference builds (not timed).
        d = os.path.join(self.sodir, "b1")
        os.makedirs(d, exist_ok=True)
        for model in MODELS:
            src = os.path.join(self.src, "models", f"{model}.kl")
            p = subprocess.run([self.kiln, "compile", src, "-o", os.path.join(d, f"{model}.so"),
                                "-D", "batch=1", "--no-train"], capture_output=True, text=True)
            if p.returncode:
                self.save({"kind": "error", "what": f"compile {model} batch 1",
                           "error": p.stderr[-500:]})

    def train(self):
        for threads in THREADS:
            self.section(f"train {threads}")
            for model in MODELS:
                so = os.path.join(self.sodir, "train", f"{model}.so")
                reps = self.reps(TRAIN_REPS[model])
                for rnd in range(1 if self.quick else TRAIN_ROUNDS):
                    self.measure({"section": "train", "impl": "kiln", "config": "kiln",
                                  "model": model, "threads": threads, "round": rnd},
                                 self.kiln_cmd(so, model, "train", threads, reps,
                                               self.ranges(model)))
                    self.measure({"section": "train", "impl": "torch", "config": "tuned-SkylakeX",
                                  "model": model, "threads": threads, "round": rnd},
                                 self.torch_cmd(model, threads, "train", reps),
                                 self.torch_env(threads, True, "SkylakeX"))
                    if rnd == 0:
                        self.measure({"section": "train", "impl": "torch",
                                      "config": "tuned-default", "model": model,
                                      "threads": threads, "round": rnd},
                                     self.torch_cmd(model, threads, "train", max(5, reps // 2),
                                                    MAX_S / 2),
                                     self.torch_env(threads, True))

    def best_coretype(self, model, threads):
        """SkylakeX or the default detection, whichever gave PyTorch the faster training step
        in this run: the tuned configuration for the other PyTorch figures of that row."""
        recs = self.load_results()
        return choose_coretype(recs, model, threads)

    def load_results(self):
        return [json.loads(l) for l in open(self.results) if l.strip()]

    def infer(self):
        for threads in THREADS:
            self.section(f"infer {threads}")
            for model in MODELS:
                ct = self.best_coretype(model, threads)
                so = os.path.join(self.sodir, "no-train", f"{model}.so")
                self.measure({"section": "infer", "impl": "kiln", "config": "kiln", "model": model,
                              "threads": threads},
                             self.kiln_cmd(so, model, "infer", threads,
                                           self.reps(INFER_REPS[model]), self.ranges(model)))
                self.measure({"section": "infer", "impl": "torch", "config": f"tuned-{ct}",
                              "model": model, "threads": threads},
                             self.torch_cmd(model, threads, "infer", self.reps(INFER_REPS[model])),
                             self.torch_env(threads, True, ct if ct != "default" else None))

    def infer1(self):
        for threads in THREADS:
            self.section(f"infer1 {threads}")
            for model in MODELS:
                ct = self.best_coretype(model, threads)
                env = self.torch_env(threads, True, ct if ct != "default" else None)
                so = os.path.join(self.sodir, "b1", f"{model}.so")
                reps = self.reps(INFER1_REPS)
                self.measure({"section": "infer1", "impl": "kiln", "config": "kiln",
                              "model": model, "threads": threads},
                             self.kiln_cmd(so, model, "infer", threads, reps,
                                           self.ranges(model)))
                self.measure({"section": "infer1", "impl": "torch", "config": f"tuned-{ct}",
                              "model": model, "threads": threads},
                             self.torch_cmd(model, threads, "infer1", reps), env)
                self.measure({"section": "infer1_jit", "impl": "torch", "config": f"tuned-{ct}",
                              "model": model, "threads": threads},
                             self.torch_cmd(model, threads, "infer1_jit", reps), env)

    def rss(self):
        self.section("rss")
        for threads in THREADS:
            for model in MODELS:
                ct = self.best_coretype(model, threads)
                so = os.path.join(self.sodir, "train", f"{model}.so")
                self.measure({"section": "rss", "impl": "kiln", "config": "kiln", "model": model,
                              "threads": threads},
                             self.kiln_cmd(so, model, "rss", threads, 1,
                                           self.ranges(model)))
                self.measure({"section": "rss", "impl": "torch", "config": f"tuned-{ct}",
                              "model": model, "threads": threads},
                             self.torch_cmd(model, threads, "rss", 1),
                             self.torch_env(threads, True, ct if ct != "default" else None),
                             timeout=120)

    def untuned(self):
        for threads in THREADS:
            self.section(f"pytorch as installed {threads}")
            for model in MODELS:
                env = self.torch_env(threads, False)
                self.measure({"section": "train", "impl": "torch", "config": "as-installed",
                              "model": model, "threads": threads, "round": 0},
                             self.torch_cmd(model, threads, "train",
                                            max(5, self.reps(TRAIN_REPS[model]) // 2), MAX_S / 2),
                             env)
                self.measure({"section": "infer1", "impl": "torch", "config": "as-installed",
                              "model": model, "threads": threads},
                             self.torch_cmd(model, threads, "infer1", self.reps(INFER1_REPS),
                                            MAX_S / 2), env)

    def gemm(self):
        self.section("gemm")
        d = os.path.join(self.sodir, "gemm")
        os.makedirs(d, exist_ok=True)
        shapes = gemm_shapes()
        keys = list(shapes)
        if self.quick:
            keys = keys[:4] + [k for k in keys if k[3] > 1][:2]
        for key in keys:
            m, k, n, b, form = key
            tags = {"section": "gemm", "m": m, "k": k, "n": n, "batch": b, "form": form}
            fl = flops(m, k, n, b)
            reps = 11 if fl > 1e9 else 30 if fl > 5e7 else 100
            so = None
            if key not in KILN_NONE:
                kl = os.path.join(d, gemm_key_name(key) + ".kl")
                with open(kl, "w") as f:
                    f.write(gemm_kl(key))
                so = os.path.join(d, gemm_key_name(key) + ".so")
                p = subprocess.run([self.kiln, "compile", kl, "-o", so, "--no-train"],
                                   capture_output=True, text=True)
                if p.returncode:
                    self.save({"kind": "error", "what": f"compile {kl}", "error": p.stderr[-500:]})
                    so = None
            for threads in THREADS:
                def blas(ct, nreps, extra=()):
                    env = self.base_env()
                    env["OPENBLAS_NUM_THREADS"] = str(threads)
                    if ct != "default":
                        env["OPENBLAS_CORETYPE"] = ct
                    cmd = [os.path.join(self.tools, "gemm_openblas"), str(m), str(k), str(n),
                           "--form", form, "--batch", str(b), "--threads", str(threads),
                           "--reps", str(nreps), "--max-seconds", str(MAX_S / 2), *extra]
                    return cmd, env

                if so and threads == 1:
                    # One process, Kiln and OpenBLAS (SkylakeX) alternating call by call: the
                    # machine's speed changes between processes (bench/ANALYSIS.md).
                    cmd, env = blas("SkylakeX", reps, ("--kiln", so, "--name", "g"))
                    self.measure_lines({**tags, "threads": threads},
                                       {"kiln": "kiln", "openblas": "SkylakeX"}, cmd, env)
                else:
                    # Two thread pools in one process would contend: separate processes, Kiln
                    # and OpenBLAS interleaved over GEMM_ROUNDS rounds, samples pooled.
                    for rnd in range(1 if self.quick else GEMM_ROUNDS):
                        if so:
                            self.measure({**tags, "impl": "kiln", "config": "kiln",
                                          "threads": threads, "round": rnd},
                                         self.kiln_cmd(so, "g", "infer", threads,
                                                       max(5, reps // GEMM_ROUNDS), (),
                                                       MAX_S / 2 / GEMM_ROUNDS))
                        cmd, env = blas("SkylakeX", max(5, reps // GEMM_ROUNDS))
                        self.measure({**tags, "impl": "openblas", "config": "SkylakeX",
                                      "threads": threads, "round": rnd}, cmd, env)
                cmd, env = blas("default", max(5, reps // 3))
                self.measure({**tags, "impl": "openblas", "config": "default",
                              "threads": threads}, cmd, env)


def busy_cpus(seconds=1.0):
    """CPUs busy (all processes) over `seconds`, from /proc/stat."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(1, t1 - t0))


# ------------------------------------------------------------------------------ report


def pooled(recs):
    """Median, min and max over every timed call of the given measurement records."""
    s = sorted(x for r in recs if "samples_ms" in r for x in r["samples_ms"])
    if not s:
        return None
    return statistics.median(s), s[0], s[-1], len(s)


def pick(recs, **kw):
    return [r for r in recs if r.get("kind") == "measure" and "error" not in r
            and all(r.get(k) == v for k, v in kw.items())]


def choose_coretype(recs, model, threads):
    best, best_ms = "SkylakeX", None
    for ct in ("SkylakeX", "default"):
        p = pooled(pick(recs, section="train", impl="torch", config=f"tuned-{ct}", model=model,
                        threads=threads))
        if p and (best_ms is None or p[0] < best_ms):
            best, best_ms = ct, p[0]
    return best


def num(x):
    """Three significant digits (four above 1000)."""
    return f"{x:.0f}" if x >= 100 else f"{x:#.3g}" if x < 1 else f"{x:.{3 - len(str(int(x)))}f}"


def fmt_ms(p):
    if not p:
        return "—"
    med, lo, hi, _ = p
    return f"{num(med)} [{num(lo)}–{num(hi)}]"


def ratio(a, b):
    return a[0] / b[0] if a and b else None


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}"


def met(ok):
    return "—" if ok is None else ("**met**" if ok else "not met")


def report(results_path, out_path):
    recs = [json.loads(l) for l in open(results_path) if l.strip()]
    machine = next((r for r in reversed(recs) if r.get("kind") == "machine"), {})
    loads = [r for r in recs if r.get("kind") == "load"]
    L = []
    w = L.append

    def load_line(prefix):
        ls = [r for r in loads if r["section"].startswith(prefix)]
        return "; ".join(f"{r['section']}: load {r['load'][0]:.2f} / {r['load'][1]:.2f} / "
                         f"{r['load'][2]:.2f}"
                         + (f", {r['busy']:.2f} of {os.cpu_count()} CPUs busy with other work"
                            if r.get("busy") is not None else "")
                         + (f" (after waiting {r['waited']:.0f} s)" if r.get("waited") else "")
                         for r in ls) or "?"

    w("# Benchmark results")
    w("")
    w("Written by `bench/run.sh` (do not edit: rerun it). Kernel design notes and earlier "
      "hand-run measurements: [KERNELS.md](KERNELS.md). How the figures are taken: "
      "[README.md](README.md).")
    w("")
    w("## Machine and software")
    w("")
    w(f"- Date: {machine.get('date', '?')}")
    w(f"- CPU: {machine.get('Model name', '?')}, {machine.get('CPU(s)', '?')} CPUs "
      f"({machine.get('Core(s) per socket', '?')} cores/socket, "
      f"{machine.get('Thread(s) per core', '?')} thread/core), "
      f"AVX-512F: {'yes' if machine.get('avx512f') else 'no'}, L1d {machine.get('L1d cache')}, "
      f"L2 {machine.get('L2 cache')}, L3 {machine.get('L3 cache')}; "
      f"hypervisor {machine.get('Hypervisor vendor', '?')}. Shared with other sessions: "
      "each section gives the load averages (1 / 5 / 15 min) before it and the CPUs other "
      "processes kept busy during the second before it.")
    dirty = machine.get("dirty", 0)
    if machine.get("head_export"):
        tree = (" exactly (built from `git archive HEAD`, without the working tree's "
                f"{dirty} uncommitted modified files)")
    elif dirty:
        tree = (f" + dirty working tree ({dirty} modified tracked files: "
                + ", ".join(f"`{f}`" for f in machine.get("dirty_files", [])[:12])
                + (" …" if dirty > 12 else "") + ")")
    else:
        tree = " (clean working tree)"
    w(f"- Kiln: commit `{machine.get('commit', '?')}`{tree}"
      + f"; `{machine.get('build', '?')}` built with CMAKE_BUILD_TYPE="
      f"{machine.get('CMAKE_BUILD_TYPE', '?')}, KILN_VERIFY_PASSES="
      f"{machine.get('KILN_VERIFY_PASSES', '?')}; `kiln compile` at its default -O2.")
    w(f"- PyTorch {machine.get('torch', '?')} (Debian python3-torch, /usr/bin/python3), "
      "Debian OpenBLAS 0.3.21.")
    cores = machine.get("torch_openblas_core", {})
    w("- OpenBLAS kernels PyTorch gets (`OPENBLAS_VERBOSE=2`): "
      + "; ".join(f"{k}: **{v}**" for k, v in cores.items())
      + ". OpenBLAS 0.3.21 does not recognise this CPU and falls back to Prescott (SSE3) "
      "kernels unless `OPENBLAS_CORETYPE=SkylakeX` is set.")
    omp = machine.get("openmp_blas")
    w("- 2-thread OpenMP OpenBLAS: "
      + (f"Debian `libopenblas0-openmp` unpacked to `{omp}`, first on LD_LIBRARY_PATH for "
         "PyTorch at 2 threads." if omp else
         f"**not available** ({machine.get('openmp_blas_note') or 'download failed'}); PyTorch "
         "at 2 threads uses the installed pthreads OpenBLAS."))
    w("")
    w("**PyTorch tuned** = issue 7's configuration: `OPENBLAS_L2_SIZE` unset, "
      f"`GLIBC_TUNABLES={TUNABLES}`, `OMP_NUM_THREADS` = `OPENBLAS_NUM_THREADS` = "
      "`torch.set_num_threads` = the thread count, the OpenMP OpenBLAS at 2 threads, and "
      "`OPENBLAS_CORETYPE` either unset (default detection) or `SkylakeX`: both are measured "
      "on the training step and the faster one (named in the tables) is used for that row's "
      "other figures. **PyTorch as installed** = the default environment (none of those "
      "variables; only `torch.set_num_threads`), for reference. Every figure is a fresh "
      "process; `median [min–max]` is over every timed call after warm-up, pooled over the "
      "processes of that figure (training steps: "
      f"{TRAIN_ROUNDS} processes each, Kiln and PyTorch interleaved).")
    w("")

    # -- summary
    rows = []
    train_tab, infer_tab, infer1_tab, rss_tab = [], [], [], []
    for threads in THREADS:
        for model in MODELS:
            k = pooled(pick(recs, section="train", impl="kiln", model=model, threads=threads))
            ct = choose_coretype(recs, model, threads)
            t = pooled(pick(recs, section="train", impl="torch", config=f"tuned-{ct}",
                            model=model, threads=threads))
            other = "default" if ct == "SkylakeX" else "SkylakeX"
            t2 = pooled(pick(recs, section="train", impl="torch", config=f"tuned-{other}",
                             model=model, threads=threads))
            u = pooled(pick(recs, section="train", impl="torch", config="as-installed",
                            model=model, threads=threads))
            r = ratio(k, t)
            fl = model_flops(model)
            peak = PEAK_PER_CORE * threads

            def gf(p):
                if not p:
                    return "—"
                g = fl / (p[0] * 1e-3) * 1e-9
                return f"{g:.0f} ({100 * g / peak:.0f}%)"

            train_tab.append(
                f"| {model} | {threads} | {fmt_ms(k)} | {fmt_ms(t)} ({ct}) | **{fmt_ratio(r)}** | "
                f"≤ {TRAIN_TARGET[model]} | {met(None if r is None else r <= TRAIN_TARGET[model])}"
                f" | {fmt_ms(t2)} ({other}) | {fmt_ms(u)} | {gf(k)} | {gf(t)} |")
            rows.append((f"train {model}, {threads} thr", f"Kiln/PyTorch ≤ {TRAIN_TARGET[model]}",
                         fmt_ratio(r), None if r is None else r <= TRAIN_TARGET[model]))
            # infer at the training batch
            ki = pooled(pick(recs, section="infer", impl="kiln", model=model, threads=threads))
            ti = pooled(pick(recs, section="infer", impl="torch", model=model, threads=threads))
            ffl = model_flops(model, ("fwd",))

            def gfi(p):
                if not p:
                    return "—"
                g = ffl / (p[0] * 1e-3) * 1e-9
                return f"{g:.0f} ({100 * g / peak:.0f}%)"

            infer_tab.append(f"| {model} | {threads} | {fmt_ms(ki)} | {fmt_ms(ti)} | "
                             f"{fmt_ratio(ratio(ki, ti))} | {gfi(ki)} | {gfi(ti)} |")
            # batch 1
            k1 = pooled(pick(recs, section="infer1", impl="kiln", model=model, threads=threads))
            e1 = pooled(pick(recs, section="infer1", impl="torch", config=f"tuned-{ct}",
                             model=model, threads=threads))
            j1 = pooled(pick(recs, section="infer1_jit", impl="torch", model=model,
                             threads=threads))
            u1 = pooled(pick(recs, section="infer1", impl="torch", config="as-installed",
                             model=model, threads=threads))
            re_, rj = ratio(k1, e1), ratio(k1, j1)
            ok = None if re_ is None or rj is None else (re_ <= 0.5 and rj < 1)
            infer1_tab.append(f"| {model} | {threads} | {fmt_ms(k1)} | {fmt_ms(e1)} | "
                              f"**{fmt_ratio(re_)}** | {fmt_ms(j1)} | **{fmt_ratio(rj)}** | "
                              f"{met(ok)} | {fmt_ms(u1)} |")
            rows.append((f"batch-1 infer {model}, {threads} thr",
                         "≤ 0.5x eager and < TorchScript", f"{fmt_ratio(re_)} / {fmt_ratio(rj)}",
                         ok))
            # rss
            kr = pick(recs, section="rss", impl="kiln", model=model, threads=threads)
            tr = pick(recs, section="rss", impl="torch", model=model, threads=threads)
            tr = [x for x in tr if x["config"] != "as-installed"]
            if kr or tr:
                kv = kr[0]["maxrss_kib"] / 1024 if kr else None
                tv = tr[0]["maxrss_kib"] / 1024 if tr else None
                rr = kv / tv if kv and tv else None
                mem = kr[0]["mem_bytes"] / 2**20 if kr else None

                def mib(v):
                    return "—" if v is None else f"{v:.1f}"

                rss_tab.append(
                    f"| {model} | {threads} | {mib(kv)} | {mib(mem)} | {mib(tv)} | "
                    f"**{fmt_ratio(rr)}** | ≤ 0.10 | {met(None if rr is None else rr <= 0.1)} |")
                rows.append((f"peak RSS {model}, {threads} thr", "Kiln/PyTorch ≤ 0.10",
                             fmt_ratio(rr), None if rr is None else rr <= 0.1))

    # compile
    comp_tab = []
    for model in MODELS:
        cells = []
        for variant in ("train", "no-train"):
            cs = [r for r in recs if r.get("kind") == "compile" and r["model"] == model
                  and r["variant"] == variant and r.get("rc") == 0]
            if cs:
                s = sorted(c["seconds"] for c in cs)
                cells.append((statistics.median(s), s[0], s[-1], cs[0]["seconds"],
                              cs[-1]["so_bytes"]))
            else:
                cells.append(None)
        tgt = COMPILE_TARGET.get(model)
        ok = None if tgt is None or not cells[0] else cells[0][0] < tgt
        c0 = cells[0]
        c1 = cells[1]
        comp_tab.append(
            f"| {model} | " + (f"{c0[0]:.3f} [{c0[1]:.3f}–{c0[2]:.3f}] | {c0[3]:.3f} | "
                               f"{c0[4] / 1024:.0f} KiB |" if c0 else "— | — | — |")
            + (f" {c1[0]:.3f} [{c1[1]:.3f}–{c1[2]:.3f}] | {c1[4] / 1024:.0f} KiB |" if c1 else
               " — | — |")
            + f" {'< %.1f s' % tgt if tgt else '—'} | {met(ok)} |")
        if tgt:
            rows.append((f"compile {model} (.so, -O2)", f"< {tgt} s",
                         f"{c0[0]:.3f} s" if c0 else "—", ok))

    # gemm
    gemm_tab = []
    shapes = gemm_shapes()
    gemm_ok = {1: [], 2: []}
    for key, srcs in shapes.items():
        m, k, n, b, form = key
        fl = flops(m, k, n, b)
        for threads in THREADS:
            sel = dict(section="gemm", m=m, k=k, n=n, batch=b, form=form, threads=threads)
            kg = pooled(pick(recs, impl="kiln", **sel))
            og = {ct: pooled(pick(recs, impl="openblas", config=ct, **sel))
                  for ct in ("SkylakeX", "default")}
            if not kg and not any(og.values()):
                continue
            best = min((ct for ct in og if og[ct]), key=lambda ct: og[ct][0], default=None)

            def g(p):
                return f"{fl / (p[0] * 1e-3) * 1e-9:.1f}" if p else "—"

            def pct(p):
                return f"{100 * fl / (p[0] * 1e-3) * 1e-9 / (PEAK_PER_CORE * threads):.0f}%" \
                    if p else "—"

            r = og[best][0] / kg[0] if kg and best else None  # Kiln GFLOP/s / OpenBLAS GFLOP/s
            skinny = min(m, k, n) <= SKINNY
            tgt = 1.0 if skinny else 0.9
            ok = None if r is None else r >= tgt
            if ok is not None:
                gemm_ok[threads].append(ok)
            shape = f"{m}×{k}×{n}" + (f" ×{b}" if b > 1 else "")
            gemm_tab.append(
                f"| {shape} | {form} | {threads} | {num(fl / 1e6)} | {fmt_ms(kg)} | {g(kg)} "
                f"({pct(kg)}) | {g(og['SkylakeX'])} | {g(og['default'])} | **{fmt_ratio(r)}** | "
                f"≥ {tgt:.1f} | {met(ok)} | {'; '.join(srcs)} |")
    for threads in THREADS:
        if gemm_ok[threads]:
            n_ok = sum(gemm_ok[threads])
            rows.append((f"GEMM shapes, {threads} thr", "Kiln ≥ 0.9x OpenBLAS (≥ 1.0x skinny)",
                         f"{n_ok} of {len(gemm_ok[threads])} shapes",
                         n_ok == len(gemm_ok[threads])))

    w("## Targets (issue 7)")
    w("")
    busy = [r for r in loads if (r.get("busy") or 0) >= 0.5 or r["load"][0] >= 2.5]
    if busy:
        w(f"**Caution: {len(busy)} of {len(loads)} sections started while other processes kept "
          f"up to {max(r.get('busy') or 0 for r in loads):.1f} of {os.cpu_count()} CPUs busy "
          f"(1-minute load up to {max(r['load'][0] for r in loads):.1f}).** Every figure is "
          "then slower and noisier than on an idle machine, 2-thread figures most (a 2-thread "
          "process cannot get both cores), and OpenMP PyTorch at 2 threads collapses worst, "
          "which flatters Kiln's 2-thread ratios. The [min–max] ranges show the spread.")
        w("")
    w("| figure | target | measured | |")
    w("| --- | --- | --- | --- |")
    for name, tgt, val, ok in rows:
        w(f"| {name} | {tgt} | {val} | {met(ok)} |")
    w("")
    w("## Training step (forward + loss + backward + optimizer update)")
    w("")
    w(f"Load before: {load_line('train')}.")
    w("")
    w("ms per step, median [min–max]. GFLOP/s counts the matrix products and convolutions only "
      "(FLOP counts below; elementwise, norm, softmax and optimizer work excluded); % is of "
      f"the FMA peak, {PEAK_PER_CORE:.0f} GFLOP/s per core used.")
    w("")
    w("| model | threads | Kiln ms | PyTorch tuned ms (OPENBLAS_CORETYPE) | Kiln / PyTorch | "
      "target | | PyTorch tuned, other coretype | PyTorch as installed | Kiln GFLOP/s (% peak) | "
      "PyTorch GFLOP/s (% peak) |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    L.extend(train_tab)
    w("")
    w("## Inference at the training batch")
    w("")
    w(f"Load before: {load_line('infer ')}. Kiln: the `--no-train` .so; PyTorch: eval mode "
      "under `torch.inference_mode()`, tuned.")
    w("")
    w("| model | threads | Kiln ms | PyTorch ms | Kiln / PyTorch | Kiln GFLOP/s (% peak) | "
      "PyTorch GFLOP/s (% peak) |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    L.extend(infer_tab)
    w("")
    w("## Inference at batch 1")
    w("")
    w(f"Load before: {load_line('infer1')}. Kiln: `kiln compile -D batch=1 --no-train`; "
      "PyTorch eager (tuned) and TorchScript (`torch.jit.trace` + "
      "`torch.jit.optimize_for_inference`, tuned). Target: Kiln ≤ 0.5x eager and < 1x "
      "TorchScript.")
    w("")
    w("| model | threads | Kiln ms | PyTorch eager ms | Kiln / eager | TorchScript ms | "
      "Kiln / TorchScript | target | PyTorch eager as installed |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    L.extend(infer1_tab)
    w("")
    w("## Peak resident memory, 50 training steps")
    w("")
    w(f"Load before: {load_line('rss')}. `getrusage(RUSAGE_SELF).ru_maxrss` of the whole "
      "process after creating the model and 50 training steps: kiln_bench (a small C program "
      "that dlopens the .so) and python3 + torch. Kiln's instance block (`mem_bytes`: params, "
      "gradients, optimizer state and arena) is given beside it.")
    w("")
    w("| model | threads | Kiln MiB | Kiln instance MiB | PyTorch tuned MiB | Kiln / PyTorch | "
      "target | |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    L.extend(rss_tab)
    w("")
    w("## Compile time")
    w("")
    w(f"Load before: {load_line('compile')}. Wall time of `kiln compile models/X.kl -o X.so` "
      f"(-O2, .so + header, linking included), {COMPILE_RUNS} runs in a row: median [min–max] "
      "and the first run (the coldest: nothing is cached between runs but the OS's file "
      "cache).")
    w("")
    w("| model | compile s | first run s | .so size | `--no-train` s | `--no-train` .so | "
      "target | |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    L.extend(comp_tab)
    w("")
    for tp in (r for r in recs if r.get("kind") == "time_passes"):
        w(f"`kiln compile models/{tp['model']}.kl -o {tp['model']}.so --time-passes` (stderr):")
        w("")
        w("```")
        L.extend(tp["text"].rstrip().splitlines() or ["(nothing printed)"])
        w("```")
        w("")
    w("## GEMM: Kiln against OpenBLAS `cblas_sgemm`")
    w("")
    w(f"Load before: {load_line('gemm')}. Kiln: a one-product model (`y = a @ b`, with "
      "`transpose(a, -2, -1)` / `transpose(b, -2, -1)` for the transposed forms, which Kiln "
      "folds into the packing) compiled `--no-train`, its m_infer timed; the convolution rows "
      "are a one-`conv2d` model (implicit GEMM) against OpenBLAS's im2col GEMM without the "
      "im2col. OpenBLAS: bench/gemm_openblas.c, the installed pthreads build, "
      "`openblas_set_num_threads`, with `OPENBLAS_CORETYPE=SkylakeX` (AVX-512 kernels) and "
      "with its default detection (Prescott here); batch > 1 = one cblas_sgemm per product. "
      "At 1 thread Kiln and OpenBLAS SkylakeX run in one process (`gemm_openblas --kiln`), "
      "call by call in turn, so a change of the machine's speed between processes cannot "
      f"skew the ratio; at 2 threads (two thread pools would contend in one process) in "
      f"separate processes, {GEMM_ROUNDS} rounds interleaved, samples pooled. "
      "Ratio = Kiln GFLOP/s / the faster OpenBLAS. Target ≥ 0.9, ≥ 1.0 where a "
      f"dimension is ≤ {SKINNY} (skinny). Forms: NN = A·B, TN = Aᵀ·B (A stored transposed), "
      "NT = A·Bᵀ. % = of the FMA peak at that thread count.")
    w("")
    w("| M×K×N (×batch) | form | threads | MFLOP | Kiln ms | Kiln GFLOP/s (% peak) | "
      "OpenBLAS SkylakeX GFLOP/s | OpenBLAS default GFLOP/s | Kiln / OpenBLAS | target | | "
      "used in |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    L.extend(gemm_tab)
    w("")
    w("## FLOP counts")
    w("")
    w("Per training step (forward + backward) and per inference at the training batch: "
      "2·M·K·N summed over the products listed in `GEMMS` of bench/run_all.py (the table "
      "above names each), convolutions counted as their im2col GEMMs, gradients only where a "
      "parameter needs them.")
    w("")
    w("| model | forward MFLOP | backward MFLOP | training step MFLOP |")
    w("| --- | --- | --- | --- |")
    for model in MODELS:
        f, bk = model_flops(model, ("fwd",)), model_flops(model, ("bwd",))
        w(f"| {model} | {f / 1e6:.1f} | {bk / 1e6:.1f} | {(f + bk) / 1e6:.1f} |")
    w("")
    errs = [r for r in recs if r.get("kind") == "error" or "error" in r]
    if errs:
        w("## Failures")
        w("")
        for e in errs:
            tag = e.get("what") or {k: e.get(k) for k in ("section", "impl", "config", "model",
                                                          "threads", "m", "k", "n") if k in e}
            msg = (e.get("error") or "").strip().replace("\n", " ")[:300]
            w(f"- {tag}: `{msg}`")
        w("")
    with open(out_path, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--tools")
    ap.add_argument("--kiln", help="the kiln binary to time (default BUILD/tools/kiln)")
    ap.add_argument("--commit", help="the commit measured (default: HEAD now)")
    ap.add_argument("--src", help="the source tree Kiln was built from, for models/*.kl "
                    "(default: this checkout); run.sh --head passes its export of HEAD")
    ap.add_argument("--openmp-blas", default="")
    ap.add_argument("--openmp-note", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--quiet-busy", type=float, default=0, metavar="B",
                    help="before each section wait until other processes keep at most B CPUs "
                    "busy (default 0: do not wait)")
    ap.add_argument("--quiet-wait", type=float, default=120, metavar="S",
                    help="wait at most S seconds per section for --quiet-busy (default 120)")
    ap.add_argument("--only", default="", help="comma-separated sections (machine,compile,"
                    "train,infer,infer1,rss,untuned,gemm)")
    ap.add_argument("--report-only", metavar="RESULTS_JSONL")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    a = ap.parse_args()
    if a.report_only:
        report(a.report_only, a.out)
        return
    if not a.tools:
        a.tools = os.path.join(a.build, "bench")
    r = Runner(a)
    t0 = time.time()
    order = ["machine", "compile", "train", "infer", "infer1", "rss", "untuned", "gemm"]
    only = [s for s in a.only.split(",") if s] or order
    for s in order:
        if s in only:
            getattr(r, {"machine": "machine", "compile": "compile_times"}.get(s, s))()
    r.log(f"measurements done in {time.time() - t0:.0f} s")
    report(r.results, a.out)
    r.log(f"wrote {a.out}")


if __name__ == "__main__":
    main()

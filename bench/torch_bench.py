#!/usr/bin/python3
"""torch_bench.py - time one thing of one benchmark model in PyTorch, in this fresh process,
and print one JSON line.

    /usr/bin/python3 bench/torch_bench.py MODEL THREADS WHAT [--reps N] [--warmup N]
                                          [--max-seconds S] [--steps N]

MODEL: mlp | cnn | textcls | transformer (bench/torch_models.py).
WHAT:  train       training step (zero_grad, forward, loss, backward, optimizer step)
       infer       inference at the training batch (torch.inference_mode, eval mode)
       infer1      inference at batch 1, eager
       infer1_jit  inference at batch 1, torch.jit.trace + torch.jit.optimize_for_inference
       rss         --steps (default 50) training steps, then getrusage's peak RSS (ru_maxrss)
torch.set_num_threads(THREADS); the environment (OMP_NUM_THREADS, OPENBLAS_*, GLIBC_TUNABLES,
LD_LIBRARY_PATH) is the caller's: bench/run_all.py sets it.
The timed loop stops after --reps calls, or earlier once --max-seconds have passed and at
least 5 calls were timed.
"""
import argparse
import json
import os
import resource
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import torch_models  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(torch_models.MODELS))
    ap.add_argument("threads", type=int)
    ap.add_argument("what", choices=["train", "infer", "infer1", "infer1_jit", "rss"])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=-1)
    ap.add_argument("--max-seconds", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warmup = a.warmup if a.warmup >= 0 else max(3, a.reps // 10)

    batch = 1 if a.what.startswith("infer1") else None
    model, opt, inputs, loss_fn = torch_models.build(a.model, batch=batch)

    if a.what in ("train", "rss"):
        model.train()

        def fn():
            torch_models.train_step(model, opt, inputs, loss_fn)

    else:
        model.eval()
        x = inputs[:-1]
        if a.what == "infer1_jit":
            with torch.no_grad():
                traced = torch.jit.trace(model, tuple(x))
                fwd = torch.jit.optimize_for_inference(traced)
        else:
            fwd = model

        def fn():
            with torch.inference_mode():
                fwd(*x)

    times = []
    if a.what == "rss":
        t0 = time.perf_counter()
        for _ in range(a.steps):
            fn()
        times.append((time.perf_counter() - t0) / a.steps)
    else:
        start = time.perf_counter()
        for w in range(warmup):
            if w >= 2 and time.perf_counter() - start > a.max_seconds / 4:
                break
            fn()
        start = time.perf_counter()
        while len(times) < a.reps and (len(times) < 5 or time.perf_counter() - start < a.max_seconds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "GLIBC_TUNABLES") if k in os.environ}
    print(json.dumps({
        "impl": "torch", "model": a.model, "mode": a.what, "threads": a.threads,
        "reps": a.steps if a.what == "rss" else n,
        "median_ms": median * 1e3, "min_ms": times[0] * 1e3, "max_ms": times[-1] * 1e3,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "env": env,
        "blas": loaded_blas(), "samples_ms": [t * 1e3 for t in times],
    }))


def loaded_blas():
    """The OpenBLAS shared objects mapped into this process (which build PyTorch uses)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "openblas" in path or "libblas" in path:
                libs.add(os.path.realpath(path))
    return sorted(libs)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Logging torch tensors with mring, measured in one run against its peers.

1. Everywhere: the CPU-tensor path.  m.log(t) for a 0-d CPU tensor against
   m.log(t.item()) (goal: no slower) and against m.log(float) (the ratio is
   reported: a tensor's __float__ alone costs ~180 ns on Debian's torch).
2. On a CUDA host: a small MLP trained on the GPU, step time of three loops
   in the same run, alternated in chunks:
     (a) loss.item() every step, logged as a float (what users do today);
     (b) m.log(loss) every step: the tensor, harvested without a host sync;
     (c) no logging.
   It prints (a)/(c) and (b)/(c).  Without a CUDA device it says so and
   exits 0 after part 1.

Usage: python3 bench/gpu_log.py [--calls N] [--steps N] [--reps N]
(with the mring binding importable: pip install . in a venv)
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

import mring


def per_call(fn, n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def cpu_part(args):
    w = mring.Writer("gpu-log-bench-cpu-%d" % os.getpid(), capacity=1 << 16)
    try:
        m = w.metric("x")
        t = torch.tensor(0.5)
        f = 0.5
        cases = {
            "m.log(t) (CPU tensor)": lambda: m.log(t),
            "m.log(t.item())": lambda: m.log(t.item()),
            "m.log(float)": lambda: m.log(f),
        }
        got = {k: [] for k in cases}
        for rep in range(args.reps):
            order = list(cases) if rep % 2 == 0 else list(reversed(cases))
            for k in order:
                w.step(rep)
                got[k].append(per_call(cases[k], args.calls))
        med = {k: statistics.median(v) for k, v in got.items()}
        print("CPU tensors (%d reps of %d calls, median ns per call):" % (args.reps, args.calls))
        for k, v in med.items():
            print("  %-24s %7.1f ns" % (k, v))
        r_item = med["m.log(t) (CPU tensor)"] / med["m.log(t.item())"]
        r_float = med["m.log(t) (CPU tensor)"] / med["m.log(float)"]
        print("  m.log(t) / m.log(t.item()) = %.3f  (goal <= 1: %s)" %
              (r_item, "met" if r_item <= 1.0 else "MISSED"))
        print("  m.log(t) / m.log(float)    = %.3f  (reported)" % r_float)
    finally:
        w.close()


def gpu_part(args):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.ReLU(),
                                torch.nn.Linear(2048, 512)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(256, 512, device=dev)
    y = torch.randn(256, 512, device=dev)
    w = mring.Writer("gpu-log-bench-%d" % os.getpid(), capacity=1 << 20)
    loss_m = w.metric("loss")
    step = [0]

    def train_step(mode):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        step[0] += 1
        if mode == "item":
            w.step(step[0])
            loss_m.log(loss.item())
        elif mode == "tensor":
            w.step(step[0])
            loss_m.log(loss)

    def chunk(mode):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            train_step(mode)
        torch.cuda.synchronize()     # the chunk's GPU work counted in full
        return (time.perf_counter() - t0) / args.steps

    for mode in ("none", "item", "tensor"):
        chunk(mode)                  # warm-up
    got = {"item": [], "tensor": [], "none": []}
    for rep in range(args.reps):
        for mode in (("item", "tensor", "none") if rep % 2 == 0 else
                     ("none", "tensor", "item")):
            got[mode].append(chunk(mode))
    w.close()
    med = {k: statistics.median(v) for k, v in got.items()}
    print("GPU training loop (%s; %d reps of %d steps, median step time):" %
          (torch.cuda.get_device_name(dev), args.reps, args.steps))
    for k, label in (("item", "(a) loss.item() every step"),
                     ("tensor", "(b) m.log(loss) tensor"), ("none", "(c) no logging")):
        print("  %-30s %8.1f us" % (label, med[k] * 1e6))
    print("  (a)/(c) = %.3f   (b)/(c) = %.3f" % (med["item"] / med["none"],
                                                 med["tensor"] / med["none"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    tmp = None
    if "MRING_DIR" not in os.environ:
        tmp = os.environ["MRING_DIR"] = tempfile.mkdtemp(prefix="mring-gpu-bench-")
    try:
        cpu_part(args)
        if not torch.cuda.is_available():
            print("gpu_log: no CUDA device: the GPU comparison needs one (run this on "
                  "a CUDA host); CPU part done")
            return 0
        gpu_part(args)
        return 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

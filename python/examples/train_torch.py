# SPDX-License-Identifier: MIT
"""A real training loop that logs through mring every step.

Trains a small MLP on generated data (two interleaved spirals) with
PyTorch (Debian: apt-get install python3-torch) and logs loss, accuracy,
learning rate and gradient norm on every step; closes an epoch after each
pass.  Without torch it falls back to a pure-Python logistic regression so
the example still runs (--no-torch forces that).

    /usr/bin/python3 python/examples/train_torch.py [--epochs 20] [--step-ms 20] [--segment NAME]

Watch it live from another shell with the mring CLI (`mring top NAME`) or:
    python3 -c "import mring; print(mring.Reader('NAME').status())"
"""
import argparse
import math
import os
import random
import sys
import tempfile
import time

import mring


def pace(args):
    """A training step on a real model takes a while; this one would not."""
    if args.step_ms > 0:
        time.sleep(args.step_ms / 1000)


def spirals(n, seed=0):
    rnd = random.Random(seed)
    xs, ys = [], []
    for i in range(n):
        c = i % 2
        t = rnd.uniform(0.25, 3.0) * math.pi
        r = t / (3.0 * math.pi)
        a = t + c * math.pi
        xs.append([r * math.cos(a) + rnd.gauss(0, 0.02), r * math.sin(a) + rnd.gauss(0, 0.02)])
        ys.append(c)
    return xs, ys


def train_torch(w, args):
    import torch

    torch.manual_seed(0)
    xs, ys = spirals(args.samples)
    x = torch.tensor(xs, dtype=torch.float32)
    y = torch.tensor(ys, dtype=torch.long)
    model = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = math.ceil(len(xs) / args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)

    loss_m = w.metric("train/loss", on_step=True, on_epoch=True, reduce="mean", prog_bar=True)
    acc_m = w.metric("train/acc", on_step=True, on_epoch=True, reduce="mean", prog_bar=True)
    lr_m = w.metric("train/lr", on_step=True)
    gn_m = w.metric("train/grad_norm", on_step=True, on_epoch=True, reduce="max")

    step = 0
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xs))
        for i in range(0, len(xs), args.batch):
            idx = perm[i:i + args.batch]
            xb, yb = x[idx], y[idx]
            w.step(step)
            logits = model(xb)
            loss = torch.nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            acc = (logits.argmax(1) == yb).float().mean()
            bs = len(idx)
            # 0-d tensors go in as they are (__float__); weight = batch size
            loss_m.log(loss.detach(), weight=bs)
            acc_m.log(acc, weight=bs)
            lr_m.log(lr)
            gn_m.log(gn)
            step += 1
            pace(args)
        w.epoch_end()
    return step


def train_pure(w, args):
    """Logistic regression on polar features, plain Python (no torch)."""
    xs, ys = spirals(args.samples)

    def feats(p):
        r = math.hypot(p[0], p[1])
        a = math.atan2(p[1], p[0])
        return [1.0, r, math.sin(a - 3 * math.pi * r), math.cos(a - 3 * math.pi * r)]

    fx = [feats(p) for p in xs]
    wt = [0.0] * 4
    loss_m = w.metric("train/loss", on_step=True, on_epoch=True, reduce="mean", prog_bar=True)
    acc_m = w.metric("train/acc", on_step=True, on_epoch=True, reduce="mean", prog_bar=True)
    lr_m = w.metric("train/lr", on_step=True)
    gn_m = w.metric("train/grad_norm", on_step=True, on_epoch=True, reduce="max")
    rnd = random.Random(1)
    order = list(range(len(fx)))
    steps_per_epoch = math.ceil(len(fx) / args.batch)
    total = args.epochs * steps_per_epoch
    step = 0
    for _ in range(args.epochs):
        rnd.shuffle(order)
        for i in range(0, len(order), args.batch):
            batch = order[i:i + args.batch]
            w.step(step)
            lr = args.lr * 10 * 0.5 * (1 + math.cos(math.pi * step / total))
            grad = [0.0] * 4
            loss = correct = 0.0
            for j in batch:
                z = sum(a * b for a, b in zip(wt, fx[j]))
                p = 1 / (1 + math.exp(-max(-30.0, min(30.0, z))))
                loss -= math.log(p + 1e-12) if ys[j] else math.log(1 - p + 1e-12)
                correct += (p > 0.5) == bool(ys[j])
                for k in range(4):
                    grad[k] += (p - ys[j]) * fx[j][k] / len(batch)
            gn = math.sqrt(sum(g * g for g in grad))
            wt = [a - lr * g for a, g in zip(wt, grad)]
            loss_m.log(loss / len(batch), weight=len(batch))
            acc_m.log(correct / len(batch), weight=len(batch))
            lr_m.log(lr)
            gn_m.log(gn)
            step += 1
            pace(args)
        w.epoch_end()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--step-ms", type=float, default=20,
                    help="pause after each step, so that a person can watch it in "
                         "`mring top` (default 20 ms: about 13 s in all; 0: flat out)")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--segment", default=None,
                    help="segment name or path (default: a fresh file in a temp dir)")
    ap.add_argument("--no-torch", action="store_true", help="use the pure-Python model")
    ap.add_argument("--keep", action="store_true", help="keep the segment file")
    args = ap.parse_args()

    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch not importable: using the pure-Python model", file=sys.stderr)
            use_torch = False
    path = args.segment or os.path.join(tempfile.mkdtemp(prefix="mring-example-"), "train")

    with mring.Writer(path, capacity=1 << 16, run="spirals", replace=True) as w:
        steps = (train_torch if use_torch else train_pure)(w, args)
        # a sidecar would do this from another process; here, same process
        r = mring.Reader(path)
        events = r.read(max=1 << 16)
        st = r.status()

    print(f"model: {'torch MLP' if use_torch else 'pure-Python logistic regression'}; "
          f"{steps} steps, {st['written']} records, {st['dropped']} dropped")
    ep = {}
    for e in events:
        if e.kind == "epoch_value":
            ep.setdefault(e.epoch, {})[e.metric] = e.value
    for epoch, vals in sorted(ep.items()):
        print(f"epoch {epoch}: loss {vals['train/loss']:.4f}  acc {vals['train/acc']:.3f}"
              f"  max grad_norm {vals['train/grad_norm']:.3f}")
    n_values = sum(1 for e in events if e.kind == "value")
    assert n_values == 4 * steps, (n_values, steps)
    if not args.keep and not args.segment:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: MIT
"""ns per call of m.log(v) next to a bare Python function call and
list.append, in the same run (median of several timeit repetitions).

    python3 python/bench_log.py [--number N] [--repeat R] [--rows]

--rows prints bench/run.sh table rows (section 5) instead of text.
"""
import argparse
import os
import statistics
import sys
import tempfile
import timeit

# python/ holds the package sources without the built extension: import the
# installed mring, not ./mring
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import mring  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--number", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--rows", action="store_true")
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="mring-bench-")
    os.environ["MRING_DIR"] = d
    # on_full="overwrite": the ring never fills, every call takes the
    # normal path (drop mode would measure the drop path after 1M records)
    w = mring.Writer("bench", capacity=1 << 22, on_full="overwrite")
    m_step = w.metric("loss")
    m_both = w.metric("acc", on_epoch=True)
    w.step(0)
    lst = []

    def f(x):
        pass

    class T:  # a 0-d tensor stand-in
        def __float__(self):
            return 0.25

    t = T()
    env = {"m": m_step, "mb": m_both, "f": f, "lst": lst, "v": 0.5, "i": 3,
           "t": t, "w": w}
    cases = [
        ("empty loop (subtracted from nothing)", "pass"),
        ("bare Python call f(v)", "f(v)"),
        ("list.append(v)", "lst.append(v)"),
        ("m.log(v)  float, on_step", "m.log(v)"),
        ("m.log(v)  float, on_step+on_epoch", "mb.log(v)"),
        ("m.log(i)  int", "m.log(i)"),
        ("m.log(t)  __float__ object", "m.log(t)"),
        ("m.log(v, weight=2.0)", "mb.log(v, weight=2.0)"),
        ("w.step(i)", "w.step(i)"),
    ]
    res, spread = {}, {}
    for name, stmt in cases:
        if stmt == "lst.append(v)":
            lst.clear()
        times = [t / a.number * 1e9 for t in
                 timeit.repeat(stmt, globals=env, number=a.number, repeat=a.repeat)]
        res[name] = statistics.median(times)
        spread[name] = (min(times), max(times))
        if not a.rows:
            print(f"{name:40s} {res[name]:7.1f} ns/call")
        lst.clear()
    bare = res["bare Python call f(v)"]
    ratio = res["m.log(v)  float, on_step"] / bare
    if not a.rows:
        print(f"m.log(v) / bare call = {ratio:.2f}x")
    else:
        for k, (name, _) in enumerate(cases[1:], 1):
            is_log = name.startswith("m.log(v)  float, on_step") and "+" not in name
            print("\t".join(["ROW", "5.%02d" % k, "CPython: " + " ".join(name.split()),
                             "%.2f" % res[name], "%.2f" % spread[name][0],
                             "%.2f" % spread[name][1], "ns",
                             "%.2fx bare call" % (res[name] / bare),
                             "<= ~2x bare call" if is_log else "-",
                             ("met" if ratio <= 2 else "MISSED") if is_log else "-",
                             "timeit, median of %d x %d calls" % (a.repeat, a.number)]))
    w.close()
    os.unlink(os.path.join(d, "bench"))
    os.rmdir(d)


if __name__ == "__main__":
    main()

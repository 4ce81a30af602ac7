#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End to end test of `mring serve`: producers (prod_canary), the endpoint,
promtool and a real Prometheus scraping it.

Usage: e2e_serve.py --mring PATH --producer PATH [--promtool P] [--prometheus P]
                    [--bench [SEGMENTS]]

Prints "N passed, M failed"; exits 1 on any failure.  promtool and
prometheus checks are skipped (and reported as skipped) when the binaries
are missing.  --bench measures the scrape cost instead of testing.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

PASSED = 0
FAILED = 0
SKIPPED = 0


def check(cond, what):
    global PASSED, FAILED
    if cond:
        PASSED += 1
        print("ok   " + what)
    else:
        FAILED += 1
        print("FAIL " + what)
    return cond


def skip(what):
    global SKIPPED
    SKIPPED += 1
    print("skip " + what)


def wait_for(fn, timeout, step=0.05):
    """Poll fn() until it returns a true value or timeout; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def start_producer(procs, prod, name, steps, epoch_steps, step_us, rank):
    p = procs.start([prod, name, str(steps), str(epoch_steps), str(step_us), str(rank)],
                    stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError("producer %s did not start: %r" % (name, line))
    return p


def start_serve(procs, mring, args, env):
    p = procs.start([mring, "serve", "--listen", "127.0.0.1:0", "--interval", "0.2"] + args,
                    stderr=subprocess.PIPE, text=True, env=env)
    line = p.stderr.readline()
    m = re.search(r"listening on http://([0-9.]+:\d+)/metrics", line)
    if not m:
        raise RuntimeError("mring serve did not start: %r" % line)
    # keep draining stderr so the server never blocks on it
    errlog = os.environ.get("MRING_SERVE_STDERR")
    sink = open(errlog, "a") if errlog else None
    threading.Thread(target=lambda: [sink.write(l) if sink else None for l in p.stderr], daemon=True).start()
    return p, m.group(1)


def get(addr, path="/metrics", timeout=10):
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=timeout) as r:
        return r.status, r.headers, r.read().decode()


def raw(addr, data, timeout=10):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        if data:
            s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode("latin-1")


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(body):
    """{(name, frozenset(labels)): float}; also checks the line syntax."""
    out = {}
    for line in body.split("\n"):
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError("bad line %r" % line)
        labels = {}
        if m.group(2):
            pos = 0
            while pos < len(m.group(2)):
                lm = LABEL.match(m.group(2), pos)
                if not lm:
                    raise ValueError("bad labels %r" % line)
                labels[lm.group(1)] = unescape(lm.group(2))
                pos = lm.end()
        key = (m.group(1), frozenset(labels.items()))
        if key in out:
            raise ValueError("duplicate series %r" % line)
        out[key] = float(m.group(3))
    return out


def value(series, name, **labels):
    want = set(labels.items())
    hits = [v for (n, ls), v in series.items() if n == name and want <= set(ls)]
    return hits[0] if len(hits) == 1 else None


def segments(series):
    return {dict(ls).get("segment") for (n, ls) in series if n == "mring_up"}


def prom_query(port, q):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": q}))
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            d = json.load(r)
    except OSError:
        return None
    return d["data"]["result"] if d.get("status") == "success" else None


DOC_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs",
                          "prometheus.yml")


def prom_config(addr):
    """docs/prometheus.yml with its example nodes replaced by our endpoint
    and a 1 s scrape interval, so the documented config is the one tested."""
    with open(DOC_CONFIG) as f:
        text = f.read()
    text = re.sub(r"(          - node\d+:9464\n)+", "          - %s\n" % addr, text)
    text = re.sub(r"(scrape_interval|evaluation_interval): \w+", r"\1: 1s", text)
    text = re.sub(r"scrape_timeout: \w+", "scrape_timeout: 1s", text)
    return text


def run_tests(a):
    tmp = tempfile.mkdtemp(prefix="e2e_serve.")
    env = dict(os.environ, MRING_DIR=tmp)
    procs = Procs()
    slow = None
    try:
        os.environ["MRING_DIR"] = tmp
        start_producer(procs, a.producer, "run-r0", 10**8, 20, 2000, 0)
        start_producer(procs, a.producer, "run-r1", 10**8, 20, 2000, 1)
        # finished run, a run name that needs escaping (run = segment name)
        weird = 'run-r"q\\b'
        fin = start_producer(procs, a.producer, weird, 105, 20, 0, 7)
        fin.wait(10)
        serve, addr = start_serve(procs, a.mring, ["run-r*"], env)

        # --- exposition ---
        status, headers, body = get(addr)
        check(status == 200, "GET /metrics is 200")
        check(headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
              "Content-Type text/plain; version=0.0.4 (%s)" % headers.get("Content-Type"))
        check(body.endswith("\n"), "body ends with a newline")
        try:
            s = parse(body)
            check(True, "exposition parses, no duplicate series")
        except ValueError as e:
            check(False, "exposition parses: %s" % e)
            s = {}
        check(segments(s) == {"run-r0", "run-r1", weird},
              "three segments, escaped name round-trips (%s)" % segments(s))
        w = dict(segment=weird, run=weird, rank="7")
        check(value(s, "mring_up", **w) == 0, "finished producer: mring_up 0")
        check(value(s, "mring_up", segment="run-r0", run="run-r0", rank="0") == 1,
              "live producer rank 0: mring_up 1")
        check(value(s, "mring_up", segment="run-r1", run="run-r1", rank="1") == 1,
              "live producer rank 1: mring_up 1")
        check(value(s, "mring_step", **w) == 104, "mring_step 104")
        check(value(s, "mring_epoch", **w) == 5, "mring_epoch 5")
        # last completed epoch is 4: steps 80..99
        check(value(s, "mring_epoch_value", metric="acc", **w) == 99002.25,
              "acc epoch value = max over epoch 4 = 99002.25")
        check(value(s, "mring_epoch_value", metric="loss", **w) == 89500.25,
              "loss epoch value = mean over epoch 4 = 89500.25")
        check(value(s, "mring_epoch_value_epoch", metric="loss", **w) == 4,
              "mring_epoch_value_epoch 4")
        check(value(s, "mring_epoch_weight", metric="loss", **w) == 20, "loss epoch weight 20")
        # running epoch 5: steps 100..104
        check(value(s, "mring_epoch_running", metric="loss", **w) == 102000.25,
              "loss running mean of epoch 5 = 102000.25")
        check(value(s, "mring_epoch_running", metric="acc", **w) == 104002.25,
              "acc running max of epoch 5 = 104002.25")
        check(value(s, "mring_value", metric="lr", **w) == 104001.25, "lr last value 104001.25")
        check(value(s, "mring_nonfinite_total", metric="lr", **w) == 1,
              "lr non-finite in epoch 5 (step 101) = 1")
        check(value(s, "mring_values_total", metric="lr", **w) == 4, "lr finite values in epoch 5 = 4")
        check(value(s, "mring_records_total", **w) == 105 * 4 + 5 * 4,
              "records_total = 105 steps * (2 STEP slots + 2 values) + 5 epoch ends * 4")
        check(value(s, "mring_dropped_total", **w) == 0, "dropped_total 0")
        live = value(s, "mring_step", segment="run-r0", run="run-r0", rank="0")
        v = value(s, "mring_value", segment="run-r0", metric="loss")
        vs = value(s, "mring_value_step", segment="run-r0", metric="loss")
        check(live is not None and vs is not None and v == vs * 1000 + 0.25,
              "live loss value = step*1000+0.25 (%s at %s)" % (v, vs))
        hs = [l for l in body.split("\n") if l.startswith("# TYPE ")]
        check(all(not l.endswith(" counter") or l.split()[2].endswith("_total") for l in hs),
              "every counter ends in _total")

        # --- promtool ---
        promtool = a.promtool or shutil.which("promtool")
        if promtool:
            r = subprocess.run([promtool, "check", "metrics"], input=body, text=True,
                               capture_output=True)
            check(r.returncode == 0, "promtool check metrics passes %s" % (r.stdout + r.stderr).strip())
        else:
            skip("promtool not installed")

        # --- HTTP errors ---
        r = raw(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        check(r.startswith("HTTP/1.1 405") and "\r\nAllow: GET, HEAD\r\n" in r,
              "POST -> 405 with Allow")
        r = raw(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        check(r.startswith("HTTP/1.1 404"), "GET /nope -> 404")
        r = raw(addr, b"\x16\x03\x01 garbage\r\n\r\n")
        check(r.startswith("HTTP/1.1 400"), "garbage -> 400")
        r = raw(addr, b"GET /metrics HTTP/9\r\n\r\n")
        check(r.startswith("HTTP/1.1 400"), "bad version -> 400")
        r = raw(addr, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        check(r.startswith("HTTP/1.1 431"), "oversized header -> 431")
        r = raw(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        check(r.startswith("HTTP/1.1 200") and r.endswith("\r\n\r\n"), "HEAD -> 200, no body")

        # --- --listen: ports out of range, names, and the empty host ---
        for spec, why in (("127.0.0.1:99999", "port out of range (0 to 65535)"),
                          (":65536", "port out of range (0 to 65535)"),
                          (":http", "not HOST:PORT"), ("127.0.0.1:", "not HOST:PORT"),
                          ("127.0.0.1:-1", "not HOST:PORT"), ("9464", "not HOST:PORT"),
                          ("[::1:0", "not HOST:PORT"),
                          ("[fe80::1%nosuchif0]:0", "no such host or address")):
            r = subprocess.run([a.mring, "serve", "--listen", spec], env=env, timeout=10,
                               capture_output=True, text=True)
            check(r.returncode == 1 and
                  r.stderr == "mring serve: cannot listen on '%s': %s%s\n"
                  % (spec, why, "" if why.startswith(("port", "no such")) else
                     ", [IPV6]:PORT or :PORT"),
                  "--listen %s refused: %r" % (spec, r.stderr))
        p2 = procs.start([a.mring, "serve", "--listen", ":0"], stderr=subprocess.PIPE,
                         text=True, env=env)
        line = p2.stderr.readline()
        check(re.match(r"mring serve: listening on http://127\.0\.0\.1:\d+/metrics", line),
              "--listen :PORT binds loopback, not every interface: %r" % line)
        procs.stop(p2)

        # --- a slow client does not stall a scrape ---
        host, port = addr.rsplit(":", 1)
        slow = socket.create_connection((host, int(port)), timeout=15)
        slow.sendall(b"GET /met")           # and then nothing
        t0 = time.monotonic()
        st2, _, b2 = get(addr, timeout=3)
        dt = time.monotonic() - t0
        check(st2 == 200 and "mring_up" in b2 and dt < 2,
              "scrape completes in %.3f s while a silent client holds a connection" % dt)
        slow_t0 = time.monotonic()

        # --- one client address cannot take every connection (PEER_CONNS
        # 16 each), and the last 8 of 64 are kept for addresses holding
        # none: hogs from 127.0.0.2..5 hold 16+16+16+8 half-sent requests ---
        def conn_from(src):
            c = socket.create_connection((host, int(port)), timeout=15,
                                         source_address=(src, 0))
            c.sendall(b"GET /met")
            return c

        def status_from(src):
            with socket.create_connection((host, int(port)), timeout=10,
                                          source_address=(src, 0)) as c:
                c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                return c.recv(64).decode("latin-1").split("\r\n")[0]

        hogs = []
        try:
            for src, n in (("127.0.0.2", 16), ("127.0.0.3", 16), ("127.0.0.4", 16),
                           ("127.0.0.5", 8)):
                hogs += [conn_from(src) for _ in range(n)]
            check(status_from("127.0.0.2") == "HTTP/1.1 503 Service Unavailable",
                  "a 17th connection from one address: 503")
            check(status_from("127.0.0.5") == "HTTP/1.1 503 Service Unavailable",
                  "56+ connections held: an address that holds some gets 503")
            check(status_from("127.0.0.6") == "HTTP/1.1 200 OK",
                  "a new address still gets in (the reserve)")
        finally:
            for c in hogs:
                c.close()
        check(wait_for(lambda: status_from("127.0.0.2") == "HTTP/1.1 200 OK", 10),
              "the hogs gone, their address is served again")

        # --- discovery: a segment appears, another disappears ---
        p2 = start_producer(procs, a.producer, "run-r2", 10**8, 20, 2000, 2)
        got = wait_for(lambda: "run-r2" in segments(parse(get(addr)[2])), 10)
        check(got, "new segment run-r2 is served without restart")
        procs.stop(p2)
        os.unlink(os.path.join(tmp, "run-r2"))
        gone = wait_for(lambda: "run-r2" not in segments(parse(get(addr)[2])), 10)
        check(gone, "removed segment run-r2 disappears")

        # --- a stopped producer: scrapes still answer at once, its step
        # timestamp stops moving (stale), and it is still up ---
        p3 = start_producer(procs, a.producer, "run-r3", 10**8, 20, 2000, 3)
        r3 = dict(segment="run-r3", run="run-r3", rank="3")
        wait_for(lambda: value(parse(get(addr)[2]), "mring_step", **r3) not in (None, 0), 10)
        p3.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        first = value(parse(get(addr)[2]), "mring_step_timestamp_seconds", **r3)
        moved = wait_for(lambda: value(parse(get(addr)[2]), "mring_step_timestamp_seconds",
                                       **r3) != first, 1.0)
        dt = time.monotonic() - t0
        check(first is not None and not moved and dt < 5,
              "stopped producer: scrapes answer (%.2f s), step timestamp frozen" % dt)
        check(value(parse(get(addr)[2]), "mring_up", **r3) == 1,
              "stopped producer is still up (alive, not crashed)")
        p3.send_signal(signal.SIGCONT)
        procs.stop(p3)
        os.unlink(os.path.join(tmp, "run-r3"))

        # --- a segment truncated under serve's mapping: no SIGBUS death;
        # the segment is dropped at the next discovery round ---
        tr = start_producer(procs, a.producer, "trunc-r9", 400, 20, 0, 9)
        tr.wait(10)
        serve2, addr2 = start_serve(procs, a.mring, ["trunc-*"], env)
        check("trunc-r9" in segments(parse(get(addr2)[2])), "truncation test: segment served")
        os.truncate(os.path.join(tmp, "trunc-r9"), 4096)      # header only
        st2, _, b2 = get(addr2)
        check(st2 == 200 and serve2.poll() is None,
              "a scrape right after the segment was truncated answers 200; serve lives")
        gone = wait_for(lambda: "trunc-r9" not in segments(parse(get(addr2)[2])), 10)
        check(gone and serve2.poll() is None, "the truncated segment is dropped, serve lives")
        procs.stop(serve2)
        check(serve2.returncode == 0, "serve stops with 0 after surviving a truncation "
              "(returncode %s)" % serve2.returncode)

        # --- only the tool's user's segments, unless --all-users ---
        if os.geteuid() == 0:
            ot = start_producer(procs, a.producer, "other-r8", 50, 20, 0, 8)
            ot.wait(10)
            os.chown(os.path.join(tmp, "other-r8"), 4242, 4242)
            r = subprocess.run([a.mring, "serve", "--print", "other-*"], env=env, timeout=10,
                               capture_output=True, text=True)
            check(r.returncode == 0 and "other-r8" not in r.stdout,
                  "another user's segment is not served by default")
            r = subprocess.run([a.mring, "serve", "--print", "--all-users", "other-*"],
                               env=env, timeout=10, capture_output=True, text=True)
            check(r.returncode == 0 and 'segment="other-r8"' in r.stdout,
                  "--all-users serves it")
        else:
            skip("--all-users test needs root (chown)")

        # --- a real Prometheus ---
        prometheus = a.prometheus or shutil.which("prometheus")
        if prometheus:
            pport = free_port()
            cfg = os.path.join(tmp, "prometheus.yml")
            with open(cfg, "w") as f:
                f.write(prom_config(addr))
            procs.start([prometheus, "--config.file=" + cfg,
                         "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
                         "--web.listen-address=127.0.0.1:%d" % pport],
                        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prom.log"), "w"))
            res = wait_for(lambda: (lambda r: r if r and len(r) >= 2 else None)(
                prom_query(pport, 'mring_up{run=~"run-r[01]"} == 1')), 40, 0.25)
            check(res and len(res) == 2, "Prometheus scrapes both live ranks (mring_up == 1)")
            r = prom_query(pport, 'mring_up{job="mring",node="127.0.0.1",cluster="train-a"}')
            check(r and len(r) >= 2, "docs/prometheus.yml relabelling: node and cluster labels")
            up = prom_query(pport, 'up{job="mring"}')
            check(up and up[0]["value"][1] == "1", "Prometheus target up == 1")
            r = prom_query(pport, 'avg by (metric) (mring_epoch_value{run=~"run-r[01]"})')
            check(r is not None and {x["metric"].get("metric") for x in r} == {"loss", "acc"},
                  "PromQL cross-rank mean by metric: %s" % r)
            r = prom_query(pport, 'sum by (metric) (mring_epoch_value * mring_epoch_weight)'
                           ' / sum by (metric) (mring_epoch_weight)')
            check(r is not None and len(r) == 1 and r[0]["metric"].get("metric") == "loss",
                  "PromQL weighted cross-rank mean of loss")
            r = prom_query(pport, 'mring_up')
            check(r is not None and weird in {x["metric"].get("run") for x in r},
                  "escaped run label round-trips through Prometheus")
        else:
            skip("prometheus not installed")

        # --- the silent client is timed out (408) and did not block anything ---
        slow.settimeout(max(1, 8 - (time.monotonic() - slow_t0)))
        try:
            data = slow.recv(4096).decode("latin-1")
        except OSError:
            data = ""
        check(data.startswith("HTTP/1.1 408"), "silent client gets 408 after the timeout")
        slow.close()
        slow = None

        check(serve.poll() is None, "mring serve still running")
        serve.send_signal(signal.SIGTERM)
        try:
            rc = serve.wait(5)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, "SIGTERM stops mring serve with status 0")
    except Exception as e:  # a crash is a failure, not a traceback and a leak
        check(False, "unexpected %s: %s" % (type(e).__name__, e))
    finally:
        if slow:
            slow.close()
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def run_bench(a, nseg, nscrapes=300):
    tmp = tempfile.mkdtemp(prefix="e2e_serve_bench.")
    env = dict(os.environ, MRING_DIR=tmp)
    os.environ["MRING_DIR"] = tmp
    procs = Procs()
    try:
        for i in range(nseg):
            start_producer(procs, a.producer, "bench-r%d" % i, 10**9, 100, 1000, i)
        serve, addr = start_serve(procs, a.mring, ["bench-r*"], env)
        body = get(addr)[2]
        nseries = sum(1 for l in body.split("\n") if l and not l.startswith("#"))
        host, port = addr.rsplit(":", 1)
        req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        times = []
        for _ in range(nscrapes):
            t0 = time.perf_counter()
            raw(addr, req)
            times.append(time.perf_counter() - t0)
        times.sort()
        print("bench: %d segments, %d series, %d bytes; %d scrapes: median %.3f ms, "
              "p90 %.3f ms, max %.3f ms" % (nseg, nseries, len(body), nscrapes,
                                           statistics.median(times) * 1e3,
                                           times[int(len(times) * 0.9)] * 1e3, times[-1] * 1e3))
        # server CPU for those scrapes
        with open("/proc/%d/stat" % serve.pid) as f:
            f2 = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        print("bench: mring serve CPU so far: %.3f s (user+sys, incl. discovery)"
              % ((int(f2[11]) + int(f2[12])) / tck))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mring", required=True)
    ap.add_argument("--producer", required=True)
    ap.add_argument("--promtool")
    ap.add_argument("--prometheus")
    ap.add_argument("--bench", nargs="?", type=int, const=40, default=None,
                    help="measure scrape cost over this many segments (default 40)")
    a = ap.parse_args()
    if a.bench:
        run_bench(a, a.bench)
        return 0
    t0 = time.monotonic()
    run_tests(a)
    print("%d passed, %d failed%s (%.1f s)" % (PASSED, FAILED,
          ", %d skipped" % SKIPPED if SKIPPED else "", time.monotonic() - t0))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End-to-end tests of the small `mring` subcommands: `mring rm`.

A producer (tests/prod_canary.c) makes real segments; files a creator
killed inside mring_writer_open() would leave are made by hand.  Runs
under /usr/bin/python3 with the standard library only.

Usage: e2e_tool.py --mring PATH --producer PATH [--only NAME]
"""
import fcntl
import os
import re
import struct
import subprocess
import sys
import time

import e2e_common  # tests/, next to this file

ARGS = None
HERE = os.path.dirname(os.path.abspath(__file__))

# docs/segment-format.md §2 and §4: offsets in the 4096-byte header
OFF_ON_FULL = 88        # id.on_full, u32
OFF_DPOS_SEQ = 400      # dpos.seq, u64; 0 reads as drain position 0
FULL_OVERWRITE = 1


class Env(e2e_common.BaseEnv):
    """A private MRING_DIR and output directory for one test."""

    def __init__(self, name):
        super().__init__(name, "mring-e2e")

    def seg(self, name):
        return os.path.join(self.shm, name)

    def producer(self, seg, steps, epoch_steps, step_us, rank=0, cap=0):
        p = subprocess.Popen([ARGS.producer, seg, str(steps), str(epoch_steps),
                              str(step_us), str(rank), str(cap)],
                             env=self.env, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        self.procs.append(p)
        return p

    def mring(self, *args, **kw):
        return subprocess.run([ARGS.mring] + list(args), env=self.env,
                              capture_output=True, text=True, timeout=60, **kw)

    def drain(self, *args):
        p = subprocess.Popen([ARGS.mring, "drain"] + list(args), env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p



def ls(env):
    """{name: (state, written, backlog)} from `mring ls`."""
    r = env.mring("ls")
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        # NAME STATE STEP EPOCH BACKLOG DROPPED WRITTEN RANK PID RUN
        out[f[0]] = (f[1], int(f[6]), int(f[4]))
    return out


def would_lose(stderr):
    m = re.search(r"(\d+) records? written but not drained would be lost", stderr)
    assert m, stderr
    return int(m.group(1))


def patch(path, off, fmt, value):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(struct.pack(fmt, value))


def test_rm_refuses_an_undrained_backlog(env):
    # closed, nothing drained: every record would be lost
    env.producer("done", 10, 5, 0).wait()
    state, written, backlog = ls(env)["done"]
    assert state == "closed" and backlog == written > 0
    r = env.mring("rm", "done")
    assert r.returncode == 1, r.stderr
    assert would_lose(r.stderr) == backlog and "closed" in r.stderr, r.stderr
    assert "--force" in r.stderr and "OVERWRITE" not in r.stderr, r.stderr
    assert os.path.exists(env.seg("done"))
    # drained: nothing to lose, removed without --force
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "done")
    assert r.returncode == 0, r.stderr
    assert ls(env)["done"][2] == 0
    r = env.mring("rm", "done")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert not os.path.exists(env.seg("done"))

    # a crashed producer's backlog: refused, then --force says what went
    p = env.producer("crash", 10 ** 9, 0, 1000)
    time.sleep(0.2)
    live = env.mring("rm", "--force", "crash")
    assert live.returncode == 1 and "alive" in live.stderr, live.stderr
    assert os.path.exists(env.seg("crash")), "--force never removes a live segment"
    p.kill()
    p.wait()
    state, written, backlog = ls(env)["crash"]
    assert state == "crashed" and backlog > 0
    r = env.mring("rm", "crash")
    assert r.returncode == 1 and would_lose(r.stderr) == backlog, r.stderr
    assert "crashed" in r.stderr and os.path.exists(env.seg("crash")), r.stderr
    r = env.mring("rm", "crash", "--force")       # options may follow names
    assert r.returncode == 0, r.stderr
    assert "removed with %d undrained records" % backlog in r.stderr, r.stderr
    assert not os.path.exists(env.seg("crash"))


def test_rm_overwrite_ring_counts_what_the_ring_still_holds(env):
    # A ring of 8 that went through hundreds of records, then read as an
    # OVERWRITE ring nobody drained (prod_canary writes WAIT rings, so
    # the header says otherwise by hand): written - read is in the
    # hundreds, but only 8 records are still there to lose.
    p = env.producer("ow", 400, 0, 1000, cap=8)
    d = env.drain("--follow", "--jsonl", env.path("ow.jsonl"), "ow")
    p.wait()
    d.wait()
    assert p.returncode == 0 and d.returncode == 0, d.stderr.read()
    patch(env.seg("ow"), OFF_ON_FULL, "<I", FULL_OVERWRITE)
    patch(env.seg("ow"), OFF_DPOS_SEQ, "<Q", 0)
    state, written, backlog = ls(env)["ow"]
    assert state == "closed" and backlog == written > 100, (written, backlog)
    r = env.mring("rm", "ow")
    assert r.returncode == 1, r.stderr
    assert would_lose(r.stderr) == 8, r.stderr
    assert "OVERWRITE" in r.stderr and "capacity of 8" in r.stderr, r.stderr
    assert "%d older ones were overwritten already" % (written - 8) in r.stderr, r.stderr
    assert os.path.exists(env.seg("ow"))
    r = env.mring("rm", "-f", "ow")
    assert r.returncode == 0 and "removed with 8 undrained records" in r.stderr, r.stderr
    assert not os.path.exists(env.seg("ow"))


def make(path, data=b"", size=None):
    with open(path, "wb") as f:
        f.write(data)
        if size is not None:
            f.truncate(size)


def test_rm_leftovers_of_a_killed_creator(env):
    # what mring_writer_open leaves when killed: an empty file (before
    # fallocate), or whole pages with magic still 0 (before publishing)
    make(env.seg("empty"))
    make(env.seg("half"), size=4096 + 8 * 4096)
    for name, what in (("empty", "an empty file"),
                       ("half", "a segment of 36864 bytes whose header was never published")):
        r = env.mring("rm", name)
        assert r.returncode == 1, r.stderr
        assert what in r.stderr and "mring_writer_open" in r.stderr, r.stderr
        assert "mring rm --force %s" % env.seg(name) in r.stderr, r.stderr
        assert os.path.exists(env.seg(name))
        r = env.mring("rm", "--force", name)
        assert r.returncode == 0, r.stderr
        assert "removed " + what in r.stderr, r.stderr
        assert not os.path.exists(env.seg(name))

    # a creator at work holds the producer lock: never removed
    make(env.seg("busy"), size=8192)
    with open(env.seg("busy"), "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        r = env.mring("rm", "--force", "busy")
        assert r.returncode == 1 and "creating it now" in r.stderr, r.stderr
        assert os.path.exists(env.seg("busy"))
    r = env.mring("rm", "--force", "busy")
    assert r.returncode == 0, r.stderr

    # files that are not segments survive --force, byte for byte
    env.producer("target", 5, 0, 0).wait()
    keep = {
        "odd": b"\0" * 5000,                 # magic 0, but not whole pages
        "text": b"precious data\n",
        "garbage": b"\xff" * 4096,
    }
    for name, data in keep.items():
        make(env.seg(name), data)
    os.mkfifo(env.seg("fifo"))
    os.mkdir(env.seg("dir"))
    os.symlink(env.seg("target"), env.seg("link"))
    names = list(keep) + ["fifo", "dir", "link"]
    r = env.mring("rm", "--force", *names)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("not removed") == len(names), r.stderr
    for name, data in keep.items():
        with open(env.seg(name), "rb") as f:
            assert f.read() == data, name
    for name in ("fifo", "dir", "link", "target"):
        assert os.path.lexists(env.seg(name)), name


def test_rm_command_line(env):
    r = env.mring("rm", "--help")
    assert r.returncode == 0 and "--force" in r.stdout, r.stdout
    assert "OVERWRITE" in r.stdout and "mring_writer_open" in r.stdout, r.stdout
    r = env.mring("rm")
    assert r.returncode == 1 and "usage: mring rm [--force]" in r.stderr, r.stderr
    r = env.mring("rm", "--bogus", "x")
    assert r.returncode == 1 and "unknown option" in r.stderr, r.stderr
    r = env.mring("--help")
    assert "rm [--force] SEGMENT..." in r.stdout, r.stdout
    env.producer("-dash", 0, 0, 0).wait()
    r = env.mring("rm", "--", "-dash")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(env.seg("-dash"))


def test_version_and_help(env):
    # the versions come from the header the tool was built with; compare
    # with the header itself, read here independently
    hdr = open(os.path.join(HERE, "..", "include", "mring.h")).read()
    lay = open(os.path.join(HERE, "..", "include", "mring", "layout.h")).read()

    def define(text, name):
        m = re.search(r"#define\s+%s\s+(\d+)" % name, text)
        assert m, name
        return m.group(1)

    ver = ".".join(define(hdr, "MRING_VERSION_" + p) for p in ("MAJOR", "MINOR", "PATCH"))
    fmt = "%s.%s" % (define(lay, "_MRING_ABI_MAJOR"), define(lay, "_MRING_ABI_MINOR"))
    for args in (["--version"], ["-V"], ["version"]):
        r = env.mring(*args)
        assert r.returncode == 0 and not r.stderr, (args, r.stderr)
        lines = r.stdout.splitlines()
        assert lines[0] == "mring " + ver, lines
        assert lines[1].startswith("libmring %s " % ver), lines
        assert lines[2].startswith("segment format %s " % fmt), lines
    r = env.mring("version", "extra")
    assert r.returncode == 1 and "usage: mring version" in r.stderr, r.stderr
    top = env.mring("--help")
    for args in (["help"], ["-h"], ["help", "help"], ["help", "version"]):
        r = env.mring(*args)
        assert r.returncode == 0 and r.stdout == top.stdout, args
    assert "version" in top.stdout and "help [COMMAND]" in top.stdout, top.stdout
    # `mring help CMD` is `mring CMD --help`, for every command
    for cmd in ("drain", "ls", "stat", "rm", "top", "serve"):
        own = env.mring(cmd, "--help")
        r = env.mring("help", cmd)
        assert own.returncode == 0 and own.stdout.startswith("usage: mring " + cmd), cmd
        assert r.returncode == 0 and r.stdout == own.stdout, cmd
    r = env.mring("help", "nosuch")
    assert r.returncode == 1 and "unknown command 'nosuch'" in r.stderr, r.stderr
    r = env.mring("help", "drain", "x")
    assert r.returncode == 1 and "usage: mring help [COMMAND]" in r.stderr, r.stderr
    r = env.mring()
    assert r.returncode == 1 and "usage: mring COMMAND" in r.stderr, r.stderr


def test_a_missing_segment_is_named_with_its_cause(env):
    shm = env.shm
    cases = [
        (("stat", "nosuch"), "mring stat: nosuch: no segment %s/nosuch\n" % shm),
        (("stat", "torch*"), "mring stat: torch*: no segment named %s/torch* (a pattern? "
         "this command takes one segment name; `mring ls` lists them)\n" % shm),
        (("stat", "/nonexistent-dir/x"),
         "mring stat: /nonexistent-dir/x: no such directory /nonexistent-dir\n"),
        (("drain", "--jsonl", env.path("o.jsonl"), "nosuch"),
         "mring drain: no segment matches nosuch (in %s)\n" % shm),
        (("rm", "zz*"), "mring rm: no segment matches zz* (in %s)\n" % shm),
    ]
    for args, want in cases:
        r = env.mring(*args)
        assert r.returncode == 1 and r.stderr == want, (args, r.stderr, want)
    # a bare name with $MRING_DIR pointing nowhere
    r = subprocess.run([ARGS.mring, "stat", "x"], capture_output=True, text=True,
                       env=dict(env.env, MRING_DIR=env.path("gone")), timeout=60)
    assert r.returncode == 1 and r.stderr == (
        "mring stat: x: no such directory %s (from $MRING_DIR)\n" % env.path("gone")), r.stderr
    # a small file that is no segment is called that, not "corrupt"
    with open(env.seg("notes.txt"), "w") as f:
        f.write("9 bytes\n")
    r = env.mring("stat", "notes.txt")
    assert r.returncode == 1 and "not an mring segment" in r.stderr, r.stderr


def test_a_second_drainer_is_told_another_drainer_is_attached(env):
    env.producer("busy", 10**7, 100, 1000)
    first = env.drain("--follow", "--jsonl", env.path("a.jsonl"), "busy")
    deadline = time.time() + 20
    # the drain attaches to its segments before it writes its first state
    while not os.path.exists(env.path("a.jsonl.mring-state")):
        assert time.time() < deadline and first.poll() is None, "first drainer never attached"
        time.sleep(0.02)
    r = env.mring("drain", "--jsonl", env.path("b.jsonl"), "busy")
    assert r.returncode == 1 and r.stderr == (
        "mring drain: %s: another drainer is attached (one drainer per segment; observers "
        "like mring stat, top and serve are always welcome)\n" % env.seg("busy")), r.stderr


def test_stat_of_a_finished_run_shows_last_values_not_nan(env):
    # 100 steps, an epoch end every 20: the run ends right after one, so
    # every live epoch is empty; LAST comes from the completed epoch
    env.producer("fin", 100, 20, 0).wait()
    r = env.mring("stat", "fin")
    assert r.returncode == 0, r.stderr
    rows = {l.split()[1]: l.split() for l in r.stdout.splitlines()[3:]}
    assert "nan" not in r.stdout, r.stdout
    # ID METRIC FLAGS COUNT NONFIN LAST EPOCH-NOW MIN MAX LAST-EPOCH
    loss, lr = rows["loss"], rows["lr"]
    assert loss[3:5] == ["0", "0"] and loss[5] != "-", loss
    # tests/prod_canary.c: metric m logs s * 1000 + m + 0.25; the last step is 99
    assert loss[5] == "%.6g" % 99000.25 and rows["acc"][5] == "%.6g" % 99002.25, rows
    assert loss[6:9] == ["-", "-", "-"], loss
    # ON_STEP-only: no epoch result, but its last value outlives the epoch end
    assert lr[5] == "%.6g" % 99001.25 and lr[6:9] == ["-", "-", "-"], lr


def test_drain_shows_progress_on_a_terminal_only(env):
    import pty
    env.producer("big", 200000, 1000, 0).wait()      # 600,000 events waiting
    master, slave = pty.openpty()
    p = subprocess.Popen([ARGS.mring, "drain", "--jsonl", env.path("o.jsonl"), "big"],
                         env=dict(env.env, MRING_PROGRESS_MS="1"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:                                # EIO: the other side closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.wait(timeout=60) == 0, out
    text = out.decode()
    updates = re.findall(r"\rmring drain: (\d+) events, [0-9.e+]+ M/s, (\d+)% of the backlog"
                         r"\x1b\[K", text)
    assert updates, repr(text[:300])
    events = [int(e) for e, _ in updates]
    pcts = [int(q) for _, q in updates]
    assert events == sorted(events) and pcts == sorted(pcts) and pcts[-1] <= 100, updates
    # the progress line is cleared, then the summary takes its place; the
    # last update counted what the summary counts (pty: \n reads \r\n)
    m = re.search(r"\r\x1b\[Kmring drain: (\d+) events, \d+ rows, 0 lost, 1 segment\r\n$", text)
    assert m, repr(text[-200:])
    assert events[-1] == int(m.group(1)) and pcts[-1] == 100, (updates[-1], m.group(0))
    # stderr not a terminal: no progress at all
    env.producer("big2", 20000, 1000, 0).wait()
    r = env.mring("drain", "--jsonl", env.path("o2.jsonl"), "big2")
    assert r.returncode == 0 and "\r" not in r.stderr and "backlog" not in r.stderr, r.stderr


def test_bad_options_carry_the_full_prefix(env):
    for cmd in ("drain", "serve"):
        r = env.mring(cmd, "--bogus", "x")
        assert r.returncode == 1 and r.stderr == (
            "mring %s: unrecognized option '--bogus'\nsee `mring %s --help`\n" % (cmd, cmd)), \
            r.stderr
    r = env.mring("drain", "--jsonl")
    assert r.returncode == 1 and r.stderr.startswith(
        "mring drain: option '--jsonl' requires an argument\n"), r.stderr


def main():
    return e2e_common.main(globals(), Env, ["mring", "producer"])


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End-to-end tests of `mring drain --hf DIR` (DIR/trainer_state.json).

Producers are tests/prod_script.c processes; the file is read with
Python's json module and checked against what Hugging Face's own code
expects of it:
  - the top-level keys of transformers' TrainerState (a dataclass that
    load_from_json() builds with cls(**json.load(f)): an unknown key would
    make it fail), sorted as save_to_json() writes them;
  - log_history rows as Trainer.log() appends them: HF's names, a float
    epoch, an int step; a final row with train_runtime;
  - what transformers.modelcard.parse_log_history() does with them
    (model_card_table() below follows its rules: the first row holding
    train_runtime ends training; before it, each row with eval_loss is a
    line of the results table, with the last "loss" seen before it).
Expected values come from the test's own arithmetic on what it logged.

Usage: e2e_hf.py --mring PATH --script PATH [--only NAME]
"""
import json
import os
import subprocess
import sys
import time

import e2e_common  # tests/, next to this file

ARGS = None

# transformers.TrainerState's fields (trainer_callback.py), as of v4.5x
TRAINER_STATE_KEYS = [
    "best_global_step", "best_metric", "best_model_checkpoint", "epoch", "eval_steps",
    "global_step", "is_hyper_param_search", "is_local_process_zero",
    "is_world_process_zero", "log_history", "logging_steps", "max_steps",
    "num_input_tokens_seen", "num_train_epochs", "save_steps", "stateful_callbacks",
    "total_flos", "train_batch_size", "trial_name", "trial_params",
]
FINAL_KEYS = {"epoch", "step", "total_flos", "train_loss", "train_runtime",
              "train_steps_per_second"}


class Env(e2e_common.BaseEnv):
    def __init__(self, name):
        super().__init__(name, "mring-hf")

    def script(self, seg, rank=0, mode="drop", cap=1 << 12):
        p = e2e_common.Script(ARGS.script, self, seg, mode, cap, rank=rank)
        self.procs.append(p.p)
        return p

    def run(self, *args, timeout=60):
        return subprocess.run([ARGS.mring, "drain"] + list(args), env=self.env,
                              capture_output=True, text=True, timeout=timeout)


def load(path):
    with open(path) as f:
        text = f.read()
    state = json.loads(text)
    assert list(state) == TRAINER_STATE_KEYS, list(state)
    # save_to_json's layout: json.dumps(indent=2, sort_keys=True) at the top
    assert text.startswith('{\n  "best_global_step": null,\n') and text.endswith("}\n")
    return state


def model_card_table(hist):
    """(final row, [(training loss, epoch, step, validation loss)], last eval row)
    by the rules of transformers.modelcard.parse_log_history."""
    end = next((i for i, r in enumerate(hist) if "train_runtime" in r), None)
    evals = [r for r in hist if "eval_loss" in r]
    if end is None:
        return None, None, evals[-1] if evals else None
    lines, training_loss = [], "No log"
    for r in hist[:end]:
        if "loss" in r:
            training_loss = r["loss"]
        if "eval_loss" in r:
            lines.append((training_loss, r["epoch"], r["step"], r["eval_loss"]))
    return hist[end], lines, evals[-1] if evals else None


def lightning_run(env, seg, steps=20, per_epoch=10, end="close", rank=0):
    """loss ON_STEP|ON_EPOCH, learning_rate ON_STEP, val_loss ON_EPOCH
    (Lightning's names); what was logged, per step."""
    p = env.script(seg, rank=rank)
    loss = p.metric("loss", "step|epoch|mean")
    lr = p.metric("learning_rate", "step")
    val = p.metric("val_loss", "epoch|mean")
    logged = {}
    for s in range(steps):
        p.do("step %d" % s)
        p.do("log %d %r" % (loss, 1.0 / (s + 1)))
        p.do("log %d %r" % (lr, 1e-3 * (s + 1)))
        logged[s] = (1.0 / (s + 1), 1e-3 * (s + 1))
        if s % per_epoch == per_epoch - 1:
            p.do("log %d %r" % (val, 0.5 - s / 100))
            p.do("epoch")
    if end == "close":
        p.close()
    elif end == "crash":
        p.crash()
    return p, logged


def test_layout_names_epochs_and_the_model_card(env):
    p, logged = lightning_run(env, "hf")
    r = env.run("--hf", env.path("out"), "hf")
    assert r.returncode == 0, r.stderr
    st = load(env.path("out", "trainer_state.json"))
    hist = st["log_history"]
    train = [h for h in hist if "loss" in h]
    assert [h["step"] for h in train] == list(range(20)), train
    for h in train:
        s = h["step"]
        assert set(h) == {"epoch", "loss", "learning_rate", "step"}, h
        assert (h["loss"], h["learning_rate"]) == logged[s], (h, logged[s])
        assert type(h["epoch"]) is float and type(h["step"]) is int, h
        # HF's epoch: epoch + (step in epoch + 1) / steps in epoch
        assert abs(h["epoch"] - (s // 10 + (s % 10 + 1) / 10)) < 1e-12, h
    evals = [h for h in hist if "eval_loss" in h]
    assert [(h["step"], h["epoch"], h["eval_loss"]) for h in evals] == \
        [(9, 1.0, 0.5 - 9 / 100), (19, 2.0, 0.5 - 19 / 100)], evals
    assert all(set(h) == {"epoch", "eval_loss", "step"} for h in evals), evals
    # nothing under Lightning's names
    assert not any(k.endswith(("_step", "_epoch")) or k == "val_loss"
                   for h in hist for k in h), hist
    final = hist[-1]
    assert set(final) == FINAL_KEYS, final
    assert final["step"] == 19 and final["epoch"] == 2.0, final
    mean = sum(v[0] for v in logged.values()) / 20
    assert abs(final["train_loss"] - mean) < 1e-12, (final, mean)
    assert type(final["train_runtime"]) is float and final["train_runtime"] >= 0, final
    assert st["global_step"] == 19 and st["epoch"] == 2.0 and st["logging_steps"] == 1, st
    assert st["max_steps"] == 19 and st["num_train_epochs"] == 2, st
    assert st["is_world_process_zero"] is True and st["stateful_callbacks"] == {}, st
    train_log, lines, last_eval = model_card_table(hist)
    assert train_log is final, train_log
    assert lines == [(logged[9][0], 1.0, 9, 0.5 - 9 / 100),
                     (logged[19][0], 2.0, 19, 0.5 - 19 / 100)], lines
    assert last_eval is evals[-1], last_eval


def test_training_arguments_fill_the_state(env):
    p = env.script("ta")
    x = p.metric("train_loss", "step")
    p.hparams('{"logging_steps": 5, "eval_steps": 50, "save_steps": 500, "max_steps": 100,'
              ' "num_train_epochs": 3, "per_device_train_batch_size": 8,'
              ' "learning_rate": 5e-05, "output_dir": "out"}')
    for s in range(5, 30, 5):
        p.do("step %d" % s)
        p.do("log %d %d" % (x, s))
        time.sleep(0.01)      # wall time between the steps: a runtime above 0
    p.close()
    r = env.run("--hf", env.path("out"), "ta")
    assert r.returncode == 0, r.stderr
    st = load(env.path("out", "trainer_state.json"))
    want = {"logging_steps": 5, "eval_steps": 50, "save_steps": 500, "max_steps": 100,
            "num_train_epochs": 3, "train_batch_size": 8, "global_step": 25}
    assert {k: st[k] for k in want} == want, st
    # Lightning's train_loss is HF's loss
    assert [(h["step"], h["loss"]) for h in st["log_history"] if "loss" in h] == \
        [(s, float(s)) for s in range(5, 30, 5)], st["log_history"]
    final = st["log_history"][-1]
    assert final["train_loss"] == 15.0 and final["train_runtime"] >= 0.04, final
    rate = 25 / final["train_runtime"]     # HF: global_step / runtime, rounded to 3
    assert abs(final["train_steps_per_second"] - rate) <= 1e-3 + rate * 1e-3, final
    assert abs(final["train_samples_per_second"] - 8 * rate) <= 1e-3 + 8 * rate * 1e-3, final


def test_a_crash_has_no_final_row_and_a_live_epoch_is_estimated(env):
    p, logged = lightning_run(env, "cr", steps=25, end="crash")
    r = env.run("--hf", env.path("out"), "cr")
    assert r.returncode == 3, r.stderr       # a producer crashed
    hist = load(env.path("out", "trainer_state.json"))["log_history"]
    assert not any("train_runtime" in h for h in hist), hist[-2:]
    assert [h["step"] for h in hist if "loss" in h] == list(range(25))
    # epoch 2 never ended: measured by epoch 1 (10 steps)
    ep = {h["step"]: h["epoch"] for h in hist if "loss" in h}
    assert abs(ep[24] - 2.5) < 1e-12 and abs(ep[20] - 2.1) < 1e-12, ep
    assert model_card_table(hist)[0] is None


def test_the_first_epoch_under_way_is_whole_until_it_ends(env):
    p = env.script("fe")
    loss = p.metric("loss", "step")
    for s in range(5):
        p.do("step %d" % s)
        p.do("log %d 1.5" % loss)
    p.do("flush")
    out = env.path("out")
    r = env.run("--hf", out, "fe")            # the producer is alive: drains what is there
    assert r.returncode == 0, r.stderr
    hist = load(os.path.join(out, "trainer_state.json"))["log_history"]
    # step 4's row is complete at the next step (or the epoch's end)
    assert [(h["step"], h["epoch"]) for h in hist] == [(s, 0.0) for s in range(4)], hist
    p.do("epoch")
    p.close()
    r = env.run("--hf", out, "fe")
    assert r.returncode == 0, r.stderr
    hist = load(os.path.join(out, "trainer_state.json"))["log_history"]
    assert [h["epoch"] for h in hist if "loss" in h] == [0.2, 0.4, 0.6, 0.8, 1.0], hist


def test_lost_records_are_said_in_the_history(env):
    p = env.script("lo", mode="drop", cap=16)   # no drainer: most are dropped
    m = p.metric("loss", "step")
    answers = []
    for s in range(200):
        for line in ("step %d" % s, "log %d %d" % (m, s)):
            p.p.stdin.write(line + "\n")
            p.p.stdin.flush()
            answers.append(p.p.stdout.readline().strip())
    assert any(a.startswith("err -105") for a in answers), answers[-3:]  # -ENOBUFS
    p.close()
    r = env.run("--hf", env.path("out"), "--jsonl", env.path("all.jsonl"), "lo")
    assert r.returncode == 0, r.stderr
    hist = load(env.path("out", "trainer_state.json"))["log_history"]
    with open(env.path("all.jsonl")) as f:
        rows = [json.loads(x) for x in f]
    lost = sum(h.get("mring_lost", 0) for h in hist)
    assert lost > 0 and lost == sum(x.get("mring_lost", 0) for x in rows), (lost, rows[:3])
    assert [(h["step"], h["loss"]) for h in hist if "loss" in h] == \
        [(x["step"], x["loss"]) for x in rows if "loss" in x], hist


def test_only_rank_zero(env):
    for rank in range(3):
        p = env.script("rk%d" % rank, rank=rank)
        m = p.metric("loss", "step")
        for s in range(4):
            p.do("step %d" % s)
            p.do("log %d %d" % (m, 100 * rank + s))
        p.close()
    r = env.run("--hf", env.path("out"), "--jsonl", env.path("all.jsonl"), "rk0", "rk1",
                "rk2")
    assert r.returncode == 0, r.stderr
    hist = load(env.path("out", "trainer_state.json"))["log_history"]
    assert [(h["step"], h["loss"]) for h in hist if "loss" in h] == \
        [(s, float(s)) for s in range(4)], hist
    assert not any("rank" in h for h in hist), hist


def test_an_existing_trainer_state_is_never_replaced_by_a_fresh_drain(env):
    p, _ = lightning_run(env, "ex", steps=3)
    os.mkdir(env.path("out"))
    with open(env.path("out", "trainer_state.json"), "w") as f:
        f.write('{"mine": 1}\n')
    r = env.run("--hf", env.path("out"), "ex")
    assert r.returncode == 2 and "output exists" in r.stderr, r.stderr
    with open(env.path("out", "trainer_state.json")) as f:
        assert f.read() == '{"mine": 1}\n'
    # --hf names a directory: a file there is refused before anything
    with open(env.path("afile"), "w") as f:
        f.write("x\n")
    r = env.run("--hf", env.path("afile"), "ex")
    assert r.returncode != 0 and "--hf %s: not a directory" % env.path("afile") in r.stderr, \
        r.stderr


def test_a_symlink_planted_in_the_directory_is_never_followed(env):
    lightning_run(env, "sy", steps=3)
    victim = env.path("victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.mkdir(env.path("out"))
    os.symlink(victim, env.path("out", ".mring-hf-rows.jsonl"))
    r = env.run("--hf", env.path("out"), "sy")
    assert r.returncode == 2 and "Too many levels of symbolic links" in r.stderr, r.stderr
    os.unlink(env.path("out", ".mring-hf-rows.jsonl"))
    os.symlink(victim, env.path("out", "trainer_state.json"))
    r = env.run("--hf", env.path("out"), "sy")
    assert r.returncode == 2 and "output exists" in r.stderr, r.stderr
    with open(victim) as f:
        assert f.read() == "precious\n"
    # nothing was consumed by the refused drains
    r = env.run("--hf", env.path("ok"), "sy")
    assert r.returncode == 0, r.stderr
    hist = load(env.path("ok", "trainer_state.json"))["log_history"]
    assert [h["step"] for h in hist if "loss" in h] == [0, 1, 2], hist


def test_hf_steps_count_from_one_and_sparse_logging_keeps_true_epochs(env):
    # HF's global_step counts from 1; logging_steps=3 does not divide the
    # 10-step epoch; no metric is ON_EPOCH, so no epoch row marks the end
    p = env.script("sp")
    loss = p.metric("loss", "step")
    for e in range(2):
        for s in range(e * 10 + 3, e * 10 + 11, 3):
            p.do("step %d" % s)
            p.do("log %d %d" % (loss, s))
        p.do("step %d" % (e * 10 + 10))     # MringCallback steps to global_step
        p.do("epoch")
    p.close()
    r = env.run("--hf", env.path("out"), "sp")
    assert r.returncode == 0, r.stderr
    st = load(env.path("out", "trainer_state.json"))
    got = [(h["step"], h["epoch"]) for h in st["log_history"] if "loss" in h]
    want = [(3, 0.3), (6, 0.6), (9, 0.9), (13, 1.3), (16, 1.6), (19, 1.9)]
    assert len(got) == len(want) and all(
        g[0] == w[0] and abs(g[1] - w[1]) < 1e-12 for g, w in zip(got, want)), got
    assert st["logging_steps"] == 3, st["logging_steps"]
    # HF's global_step and epoch at the end: the last epoch ended at step 20
    assert st["epoch"] == 2.0 and st["global_step"] == 20, (st["epoch"], st["global_step"])
    final = st["log_history"][-1]
    assert final["step"] == 20 and final["epoch"] == 2.0 and "train_runtime" in final, final
    # every step logged, from 1: 0.1 ... 1.0 as HF writes them
    p = env.script("one")
    loss = p.metric("loss", "step")
    for s in range(1, 11):
        p.do("step %d" % s)
        p.do("log %d %d" % (loss, s))
    p.do("epoch")
    p.close()
    r = env.run("--hf", env.path("out1"), "one")
    assert r.returncode == 0, r.stderr
    got = [h["epoch"] for h in load(env.path("out1", "trainer_state.json"))["log_history"]
           if "loss" in h]
    assert all(abs(g - s / 10) < 1e-12 for g, s in zip(got, range(1, 11))), got


def test_a_drain_killed_in_its_first_commit_restarts(env):
    lightning_run(env, "kc", steps=3)
    out = env.path("out")
    # what a drain killed between its first rewrite and its first state
    # leaves: an empty rows file of ours and a trainer_state.json
    os.mkdir(out)
    open(os.path.join(out, ".mring-hf-rows.jsonl"), "w").close()
    with open(os.path.join(out, "trainer_state.json"), "w") as f:
        f.write('{"log_history": []}\n')
    r = env.run("--hf", out, "kc")
    assert r.returncode == 0, r.stderr
    hist = load(os.path.join(out, "trainer_state.json"))["log_history"]
    assert [h["step"] for h in hist if "loss" in h] == [0, 1, 2], hist
    # somebody else's trainer_state.json alone: refused, nothing created
    lightning_run(env, "kd", steps=3)
    other = env.path("other")
    os.mkdir(other)
    with open(os.path.join(other, "trainer_state.json"), "w") as f:
        f.write("{}\n")
    r = env.run("--hf", other, "kd")
    assert r.returncode == 2 and "output exists" in r.stderr, r.stderr
    assert sorted(os.listdir(other)) == ["trainer_state.json"], os.listdir(other)


def test_a_following_drain_rewrites_a_put_off_history_when_idle(env):
    p = env.script("fo", cap=1 << 16)
    m = p.metric("loss", "step")
    out = env.path("out")
    d = subprocess.Popen([ARGS.mring, "drain", "--follow", "--flush-ms", "0", "--hf", out,
                          "fo"], env=env.env, stderr=subprocess.PIPE, text=True)
    env.procs.append(d)

    def global_step(want, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = load(os.path.join(out, "trainer_state.json"))
                if st["global_step"] == want:
                    return True
            except (OSError, ValueError, AssertionError):
                pass                      # not written yet
            time.sleep(0.05)
        return False

    # many rows fast (rewrites get put off), then one more and silence
    p.do("steps 0 20000 %d" % m)
    p.do("step 20000")
    p.do("log %d 1.5" % m)
    p.do("step 20001")                  # step 20000's row is complete
    assert global_step(20000), "trainer_state.json never showed step 20000 while idle"
    p.close()
    d.wait(timeout=30)


def test_a_restarted_drain_continues_the_same_history(env):
    p = env.script("rs", cap=1 << 14)
    m = p.metric("loss", "step")
    out = env.path("out")
    for part in range(3):
        for s in range(part * 100, part * 100 + 100):
            p.do("step %d" % s)
            p.do("log %d %d" % (m, s))
        p.do("flush")
        r = env.run("--hf", out, "rs")
        assert r.returncode == 0, r.stderr
        hist = load(os.path.join(out, "trainer_state.json"))["log_history"]
        # the last step's row is complete at the next step: held until then
        assert [(h["step"], h["loss"]) for h in hist] == \
            [(s, float(s)) for s in range(part * 100 + 99)], (part, hist[-3:])
    p.close()
    r = env.run("--hf", out, "rs")
    assert r.returncode == 0, r.stderr
    hist = load(os.path.join(out, "trainer_state.json"))["log_history"]
    assert len([h for h in hist if "loss" in h]) == 300 and "train_runtime" in hist[-1]
    r = env.run("--hf", out, "rs")            # after the end: nothing added
    assert r.returncode == 0, r.stderr
    assert load(os.path.join(out, "trainer_state.json"))["log_history"] == hist


def main():
    return e2e_common.main(globals(), Env, ["mring", "script"])


if __name__ == "__main__":
    sys.exit(main())

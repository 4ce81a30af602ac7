# SPDX-License-Identifier: MIT
"""mring.on_alert(): the Python end of `mring watch --signal` (docs/watch.md)."""
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import mring

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


@pytest.fixture(autouse=True)
def restore_handlers():
    """Every test leaves the signal handlers as it found them."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    yield
    for s, h in saved.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)


def deliver(alert, signum=signal.SIGUSR1, timeout=10):
    """Send @signum to this process and wait until the handler has run."""
    before = alert.count
    os.kill(os.getpid(), signum)
    deadline = time.monotonic() + timeout
    while alert.count == before:
        assert time.monotonic() < deadline, "the signal handler did not run"
        time.sleep(0.001)           # the handler runs between bytecodes


# -- unit ---------------------------------------------------------------------

def test_callback_flag_and_count():
    got = []
    alert = mring.on_alert(callback=got.append)
    assert isinstance(alert, mring.Alert) and isinstance(alert, threading.Event)
    assert "Alert" in mring.__all__ and "on_alert" in mring.__all__
    assert alert.signum == signal.SIGUSR1 and alert.count == 0
    assert not alert.is_set() and alert.wait(0) is False
    deliver(alert)
    assert got == [signal.SIGUSR1]
    assert alert.is_set() and alert.wait(0) is True and alert.count == 1
    alert.clear()
    assert not alert.is_set() and alert.count == 1, "clear() keeps the count"
    deliver(alert)
    assert got == [signal.SIGUSR1] * 2 and alert.is_set() and alert.count == 2
    assert "count=2" in repr(alert) and "SIGUSR1" in repr(alert)


def test_without_callback_and_other_signal():
    alert = mring.on_alert(signum=signal.SIGUSR2)
    assert alert.signum == signal.SIGUSR2
    os.kill(os.getpid(), signal.SIGUSR2)
    assert alert.wait(10) and alert.count == 1


def test_wait_in_another_thread_is_woken():
    alert = mring.on_alert()
    woke = []
    t = threading.Thread(target=lambda: woke.append(alert.wait(30)))
    t.start()
    deliver(alert)
    t.join(30)
    assert not t.is_alive() and woke == [True]


def test_wait_in_main_thread_is_woken():
    alert = mring.on_alert()
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    t0 = time.monotonic()
    assert alert.wait(30) is True
    assert time.monotonic() - t0 < 20 and alert.count == 1


def test_chains_a_previous_python_handler():
    calls = []
    signal.signal(signal.SIGUSR1, lambda s, f: calls.append(("prior", s)))
    alert = mring.on_alert(callback=lambda s: calls.append(("ours", s)))
    deliver(alert)
    assert calls == [("ours", signal.SIGUSR1), ("prior", signal.SIGUSR1)]


def test_chains_an_earlier_on_alert():
    first = mring.on_alert()
    second = mring.on_alert()
    deliver(second)
    assert first.wait(10) and first.count == 1 and second.count == 1


def test_chained_handler_runs_when_callback_raises():
    calls = []
    signal.signal(signal.SIGUSR1, lambda s, f: calls.append("prior"))

    def boom(signum):
        raise RuntimeError("from the callback")

    alert = mring.on_alert(callback=boom)
    with pytest.raises(RuntimeError, match="from the callback"):
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.001)
    assert calls == ["prior"] and alert.is_set() and alert.count == 1


@pytest.mark.parametrize("previous", [signal.SIG_DFL, signal.SIG_IGN])
def test_sig_dfl_and_sig_ign_are_not_chained(previous):
    # Chaining SIG_DFL would mean SIGUSR1's default action: the process dies.
    signal.signal(signal.SIGUSR1, previous)
    alert = mring.on_alert()
    deliver(alert)
    assert alert.is_set() and alert.count == 1


def test_main_thread_only():
    before = signal.getsignal(signal.SIGUSR1)
    errors = []

    def run():
        try:
            mring.on_alert()
        except Exception as e:        # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=run, name="not-main")
    t.start()
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    assert "main thread" in str(errors[0]) and "not-main" in str(errors[0])
    assert signal.getsignal(signal.SIGUSR1) == before, "nothing installed"


def test_bad_arguments():
    with pytest.raises(TypeError):
        mring.on_alert(callback=42)
    with pytest.raises(OSError):
        mring.on_alert(signum=signal.SIGKILL)
    with pytest.raises(ValueError):
        mring.on_alert(signum=100000)


def test_handler_inside_the_events_own_lock_does_not_deadlock(tmp_path):
    # The handler runs between two bytecodes of the main thread, which may be
    # inside wait() or clear() holding the Event's lock: set() from the handler
    # must not block on it.  A subprocess, so that a deadlock is a timeout.
    script = tmp_path / "reenter.py"
    script.write_text(textwrap.dedent("""
        import os, signal, mring
        alert = mring.on_alert()
        with alert._cond:                     # as clear()/wait() hold it
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(1000):             # the handler runs in here
                pass
            assert alert.is_set()
        alert.clear()
        print("ok", alert.count, flush=True)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["ok", "1"], out


# -- integration with `mring watch --signal` ------------------------------------

TRAINER = r'''
import json, os, sys, time
import mring

name, ckpt, marker = sys.argv[1:4]

def write_marker(signum):
    with open(marker, "w") as f:
        f.write(str(int(signum)))

w = mring.Writer(name, capacity=1 << 16)
loss = w.metric("loss", on_step=True)
alert = mring.on_alert(callback=write_marker)
print("ready", flush=True)
deadline = time.monotonic() + 30
step = 0
while True:
    w.step(step)
    loss.log(float("nan") if step >= 1234 else 1.0)
    if alert.is_set():
        with open(ckpt + ".tmp", "w") as f:
            json.dump({"step": step}, f)
        os.replace(ckpt + ".tmp", ckpt)
        w.close()
        sys.exit(0)
    if time.monotonic() > deadline:
        w.close()
        sys.exit(3)
    time.sleep(0.001)
    step += 1
'''


def tool_path():
    tool = os.environ.get("MRING_TOOL")
    if tool:
        if not os.path.exists(tool):
            pytest.fail(f"MRING_TOOL={tool!r} does not exist")
        return tool
    tool = os.path.join(REPO, "build", "mring")
    if not os.path.exists(tool):
        pytest.fail(f"no mring tool: set MRING_TOOL or build {tool} "
                    f"(cmake -S {REPO} -B {REPO}/build && cmake --build {REPO}/build)")
    return tool


def read_line(proc, timeout):
    """One line of @proc's stdout, or '' at EOF or after @timeout seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_watch_signal_stops_the_trainer(tmp_path):
    tool = tool_path()
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    ckpt = tmp_path / "ckpt.json"
    marker = tmp_path / "marker"
    name = "alert-run"
    env = dict(os.environ)                  # MRING_DIR=tmp_path (conftest)
    trainer = subprocess.Popen([sys.executable, str(script), name, str(ckpt), str(marker)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    watcher = None
    try:
        line = read_line(trainer, 30)
        assert line == "ready\n", (line, trainer.poll())
        watcher = subprocess.Popen([tool, "watch", "--nan", "--signal", "USR1", "--exit", name],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env)
        try:
            wout, werr = watcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            watcher.kill()
            wout, werr = watcher.communicate(timeout=10)
            pytest.fail(f"mring watch did not exit within 60 s\nstdout: {wout}\nstderr: {werr}")
        if watcher.returncode != 4:         # no alert is coming: do not wait 30 s
            trainer.kill()
        try:
            tout, terr = trainer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            trainer.kill()
            tout, terr = trainer.communicate(timeout=10)
            pytest.fail(f"trainer did not exit within 60 s\nstdout: {tout}\nstderr: {terr}")
    finally:
        for p in (watcher, trainer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    info = f"\nwatch stdout:\n{wout}\nwatch stderr:\n{werr}\ntrainer stderr:\n{terr}"
    if "unknown command 'watch'" in werr:
        pytest.fail(f"{tool} has no 'watch' command: rebuild it, or point MRING_TOOL at "
                    f"a build that has one{info}")
    assert watcher.returncode == 4, info
    alerts = [ln for ln in wout.splitlines() if ln.startswith("alert rule=nan ")]
    assert len(alerts) == 1, info
    assert " metric=loss " in alerts[0] and " step=1234 " in alerts[0], info
    assert f" pid={trainer.pid} " in alerts[0], info
    assert trainer.returncode == 0, info
    assert ckpt.exists(), info
    assert json.loads(ckpt.read_text())["step"] >= 1234, info
    assert marker.read_text() == str(int(signal.SIGUSR1)), info

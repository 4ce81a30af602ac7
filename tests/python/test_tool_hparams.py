# SPDX-License-Identifier: MIT
"""The hyperparameters through the tool: `mring stat` and `mring serve`,
checked with Python's json and Prometheus's own promtool."""
import json
import os
import re
import shutil
import subprocess

import pytest

import mring

HERE = os.path.dirname(os.path.abspath(__file__))


def tool():
    t = os.environ.get("MRING_TOOL") or os.path.join(HERE, "..", "..", "build", "mring")
    if not os.path.exists(t):
        pytest.fail("no mring tool at %s: build it, or set MRING_TOOL" % t)
    return t


HP = {"lr": 3e-4, "name": 'bert "base"\n\\', "caf\u00e9": True, "layers": [12, {"a": None}],
      "emoji": "\U0001f600", "long": "x" * 400}


def run(*args):
    return subprocess.run([tool(), *args], capture_output=True, text=True, timeout=30)


def test_stat_shows_the_hparams_and_prints_them_whole():
    with mring.Writer("sh", capacity=64, replace=True) as w:
        r = run("stat", "sh")
        assert r.returncode == 0 and "\nhparams none\n" in r.stdout
        r = run("stat", "--hparams", "sh")
        assert r.returncode == 1 and "no hyperparameters set" in r.stderr
        w.hparams(HP)
        r = run("stat", "--hparams", "sh")
        assert r.returncode == 0 and json.loads(r.stdout) == HP
        r = run("stat", "sh")
        line = [x for x in r.stdout.splitlines() if x.startswith("hparams ")][0]
        assert "`mring stat --hparams` prints them whole" in line


def test_serve_has_one_info_series_per_key():
    with mring.Writer("sv", capacity=64, replace=True) as w:
        w.hparams(HP)
        r = run("serve", "--print", "sv")
        assert r.returncode == 0, r.stderr
        body = r.stdout
        got = {}
        for line in body.splitlines():
            m = re.match(r'mring_hparam_info\{(.*)\} 1$', line)
            if not m:
                continue
            labels = dict((k, json.loads('"%s"' % v))
                          for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            got[labels["name"]] = labels["value"]
        layers = got.pop("layers")		# JSON text of the value, as stored
        assert json.loads(layers) == [12, {"a": None}]
        assert got == {"lr": "0.0003", "name": 'bert "base"\n\\', "caf\u00e9": "true",
                       "emoji": "\U0001f600", "long": "x" * 256}
        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=body, text=True,
                               capture_output=True)
            assert p.returncode == 0, p.stdout + p.stderr

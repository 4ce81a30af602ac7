# SPDX-License-Identifier: MIT
"""The training example runs end to end (pure Python, and torch if present)."""
import importlib.util
import os
import subprocess
import sys

import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "python", "examples",
                       "train_torch.py")


def run(*extra):
    out = subprocess.run([sys.executable, EXAMPLE, "--epochs", "3", "--step-ms", "0", *extra],
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout


def test_example_pure_python():
    out = run("--no-torch")
    assert "pure-Python" in out and "0 dropped" in out and "epoch 2:" in out


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_example_torch():
    out = run()
    assert "torch MLP" in out and "0 dropped" in out and "epoch 2:" in out

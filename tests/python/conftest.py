# SPDX-License-Identifier: MIT
import pytest


@pytest.fixture(autouse=True)
def mring_dir(tmp_path, monkeypatch):
    """A private MRING_DIR per test: bare segment names land in tmp_path."""
    monkeypatch.setenv("MRING_DIR", str(tmp_path))
    return tmp_path

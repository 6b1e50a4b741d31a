"""Shared fixtures: the tiny offline benchmark, generated once per test session."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from harness.data.benchmark import make_benchmark


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "tiny"
    with contextlib.redirect_stderr(io.StringIO()):
        make_benchmark(root, preset="tiny", seed=0)
    return root

"""Shared fixtures: the tiny offline benchmark, generated once per test session; one torch thread for exact checks."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from harness.data.benchmark import make_benchmark

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest-xdist worker per core (`-n auto`): two threads each would make the workers wait on each other
    torch.set_num_threads(1)

_deselected = 0


def pytest_deselected(items) -> None:
    global _deselected
    _deselected += len(items)


def pytest_addoption(parser) -> None:
    parser.addoption("--prepare-suite", default=None, metavar="SUITE",
                     help="meanwhile make what SUITE's jobs read (`copa-bench run SUITE --prepare-only`) in a process "
                          "of its own; the session fails if that does. tox uses it to make the smoke suite's "
                          "one-thread ViT initialisation while the tests keep the other core busy")


_preparing: tuple[subprocess.Popen, Path] | None = None


def pytest_sessionstart(session) -> None:
    """Start ``--prepare-suite``'s process, in pytest's main process only (not in each pytest-xdist worker)."""
    global _preparing
    suite = session.config.getoption("--prepare-suite")
    if suite is None or hasattr(session.config, "workerinput"):
        return
    handle, log = tempfile.mkstemp(prefix=f"copa-bench-prepare-{Path(suite).stem}-", suffix=".log")
    with os.fdopen(handle, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", suite, "--prepare-only"],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=session.config.rootpath)
    _preparing = process, Path(log)
    sys.stderr.write(f"--prepare-suite {suite}: making what its jobs read meanwhile, log {log}\n")


def _finish_preparing(session) -> None:
    """Wait for ``--prepare-suite``'s process (stop it when the tests failed: nothing will use what it makes);
    its failure fails the session, with the end of its log."""
    process, log = _preparing
    if session.exitstatus != pytest.ExitCode.OK and process.poll() is None:
        process.terminate()
        process.wait()
    elif process.wait() != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        sys.stderr.write(f"\n--prepare-suite failed (exit {process.returncode}); the end of {log}:\n{tail}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    log.unlink()


def pytest_sessionfinish(session, exitstatus) -> None:
    """tox's second pass is ``pytest -m serial {posargs}``: a selection with no serial test in it (``tox --
    tests/test_metrics.py``) passes that pass; a run that collected no test at all still exits 5."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session.config.option.markexpr == "serial" and _deselected:
        session.exitstatus = pytest.ExitCode.OK
    if _preparing is not None:
        _finish_preparing(session)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "tiny"
    with contextlib.redirect_stderr(io.StringIO()):
        make_benchmark(root, preset="tiny", seed=0, workers=2)  # test_benchmark compares it with one worker
    return root


@pytest.fixture(scope="session")
def pretrained_checkpoint(tiny_benchmark, tmp_path_factory):
    """``checkpoint(model)``: a pre-training checkpoint of a tiny model after 2 iterations from a random ViT,
    made once per session and model; downstream-task tests fine-tune and test from it."""
    from harness.runner import build_config, make_runner, without_validation

    made: dict[str, Path] = {}

    def checkpoint(model: str) -> Path:
        if model not in made:
            work_dir = tmp_path_factory.mktemp(f"pretrain_{model}")
            cfg = build_config(model, "pretrain", data=tiny_benchmark, work_dir=work_dir, max_iters=2,
                               vision_init="none")
            without_validation(cfg)
            make_runner(cfg).train()
            made[model] = Path((work_dir / "last_checkpoint").read_text().strip())
        return made[model]

    return checkpoint


def _write_suite(path: Path, data: Path, models: list[str], tasks: list[str], max_iters: dict, eval_limit: dict,
                 seeds: tuple[int, ...] = (0,), **extra) -> str:
    """A small suite config file at tiny scale over ``data`` (ViT from scratch); ``extra`` adds keys."""
    lines = ["scale = 'tiny'", f"data = {str(data)!r}", "vision_init = 'none'", f"seeds = {list(seeds)!r}",
             f"models = {models!r}", f"tasks = {tasks!r}",
             f"test_only = {[t for t in tasks if t in ('retrieval_zeroshot', 'patch_detection')]!r}",
             f"max_iters = {max_iters!r}", f"eval_limit = {eval_limit!r}"]
    lines += [f"{key} = {value!r}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture()
def write_suite():
    """``write_suite(path, data, models, tasks, max_iters, eval_limit, seeds=(0,), **extra)``: a small suite
    config file at tiny scale (ViT from scratch); returns its path."""
    return _write_suite


@pytest.fixture()
def one_thread():
    """With more threads, CPU kernels split work by timing: results then differ in the last bits on a busy
    machine (docs/reproducibility.md). One thread is bit-reproducible whatever the load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Crash recovery: a training run killed with SIGKILL and restarted with ``--resume`` ends where the
uninterrupted run ends; a suite killed mid-way resumes without repeating finished jobs or duplicating rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.results import read_rows, store_file

pytestmark = pytest.mark.slow

SMALL = ["train_dataloader.dataset.indices=64", "train_dataloader.batch_size=16", "val_dataloader.dataset.indices=64",
         "default_hooks.checkpoint.interval=4", "default_hooks.logger.interval=2"]


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _kill_when(process: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds (it must not have finished by then)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def _train(tiny_benchmark, work_dir: Path, resume: bool = False) -> list[str]:
    return _command(["train", "--model", "albef", "--task", "pretrain", "--max-iters", "12", "--vision-init", "none",
                     "--data", str(tiny_benchmark), "--work-dir", str(work_dir), *(["--resume"] if resume else []),
                     "--cfg-options", *SMALL])


def test_training_killed_with_sigkill_resumes_to_the_uninterrupted_result(tiny_benchmark, tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(_train(tiny_benchmark, whole), check=True, capture_output=True, env=_env())
    crashed = tmp_path / "crashed"
    process = subprocess.Popen(_train(tiny_benchmark, crashed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=_env())
    marker = crashed / "last_checkpoint"
    _kill_when(process, lambda: marker.is_file() and marker.read_text().strip().endswith("iter_8.pth"))
    assert not (crashed / "job.json").exists()
    done = subprocess.run(_train(tiny_benchmark, crashed, resume=True), capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "iter: 8" in _logs(crashed).split("resumed epoch:", 1)[1].splitlines()[0]
    expected = json.loads((whole / "job.json").read_text())["summary"]
    got = json.loads((crashed / "job.json").read_text())["summary"]
    assert set(got) == set(expected) and {"val/itm_auc", "loss_itc"} <= set(got)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def _logs(work_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted(work_dir.glob("*/*.log")))


def test_a_suite_killed_mid_way_resumes_without_repeats_or_duplicate_rows(tiny_benchmark, tmp_path, write_suite):
    suite = write_suite(tmp_path / "crash.py", tiny_benchmark, ["copa", "evit"], ["retrieval_zeroshot", "vqa"],
                        max_iters=dict(pretrain=3, vqa=2), eval_limit=dict(pretrain=8, retrieval_zeroshot=6, vqa=8))
    store = tmp_path / "store"
    args = _command(["run", suite, "--results", str(store)])
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())

    def copa_jobs_recorded() -> bool:  # the chance rows, then copa's pre-training and zero-shot retrieval
        path = store_file(store)
        return path.is_file() and len({json.loads(line)["job_hash"] for line in path.read_text().splitlines()}) >= 5

    _kill_when(process, copa_jobs_recorded)
    before = read_rows(store)
    finished = {r["job_hash"] for r in before}
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(finished)} skipped" in done.stderr
    rows = read_rows(store)
    assert rows[:len(before)] == before
    assert not finished & {r["job_hash"] for r in rows[len(before):]}  # no finished job ran again
    keys = Counter((r["model"], r["task"], r["metric"], r["seed"]) for r in rows)
    assert max(keys.values()) == 1
    assert {(r["model"], r["task"]) for r in rows} == {(m, t) for m in ("chance", "copa", "evit")
                                                         for t in ("pretrain", "retrieval_zeroshot", "vqa")}

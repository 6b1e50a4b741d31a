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


@pytest.fixture(scope="session")
def pretrained_checkpoint(tiny_benchmark, tmp_path_factory):
    """``checkpoint(model)``: a pre-training checkpoint of a tiny model after 2 iterations from a random ViT,
    made once per session and model; downstream-task tests fine-tune and test from it."""
    from harness.runner import build_config, make_runner

    made: dict[str, Path] = {}

    def checkpoint(model: str) -> Path:
        if model not in made:
            work_dir = tmp_path_factory.mktemp(f"pretrain_{model}")
            cfg = build_config(model, "pretrain", data=tiny_benchmark, work_dir=work_dir, max_iters=2,
                               vision_init="none")
            cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
            cfg.train_cfg.pop("val_interval", None)
            make_runner(cfg).train()
            made[model] = Path((work_dir / "last_checkpoint").read_text().strip())
        return made[model]

    return checkpoint

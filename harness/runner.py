"""Jobs on the mmengine Runner: a task config (configs/tasks/) plus a named model, data and work dir.

The task config is data; this module only fills in what depends on the job: the model's config and its
image and patch sizes, the dataset root, the tokenizer and its special-token ids, the seed and the
work directory. The model is built by the Runner from its config, after the Runner has seeded
everything, so the same seed gives the same weights and the same losses.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.registry import SCOPE

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_DATA = Path("data") / "tiny"


def task_config_path(task: str) -> Path:
    path = CONFIG_DIR / "tasks" / f"{task}.py"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "tasks").glob("*.py")) if CONFIG_DIR.is_dir() else []
        if not known:
            raise InputError(CONFIG_DIR, None,
                             "the configs directory is missing (install copa-bench with 'pip install -e .')")
        raise InputError(None, "--task", f"unknown task {task!r} (choose from {', '.join(known)})")
    return path


def ensure_benchmark(data: str | os.PathLike | None) -> Path:
    """The data root to use: the given one (which must be a complete benchmark) or the default
    ``data/tiny``, generated on first use."""
    from harness.data.benchmark import make_benchmark, read_manifest

    if data is not None:
        read_manifest(data)
        return Path(data)
    if not (DEFAULT_DATA / "MANIFEST.json").is_file():
        print(f"no --data given: generating the tiny benchmark into {DEFAULT_DATA}", file=sys.stderr)
        make_benchmark(DEFAULT_DATA, preset="tiny", seed=0)
    return DEFAULT_DATA


def _fill_loader(loader: dict, data_root: str, tokenizer: str, image_size: int, patch_size: int) -> None:
    """Point a dataloader config at the data and the tokenizer, and size its pipeline for the model."""
    loader["dataset"]["data_root"] = data_root
    loader["collate_fn"]["tokenizer"] = tokenizer
    for step in loader["dataset"].get("pipeline", []):
        if step["type"] == "Resize":
            step["size"] = image_size
        elif step["type"] == "PatchLabels":
            step["patch_size"] = patch_size


def build_config(
    model: str,
    task: str,
    scale: str = "tiny",
    data: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    seed: int = 0,
    resume: bool = False,
    max_iters: int | None = None,
    model_overrides: Mapping[str, Any] | None = None,
):
    """The complete mmengine ``Config`` of one job."""
    from mmengine.config import Config

    from copa.build import METHODS, SCALES, model_config
    from harness.data.tokenizer import load_tokenizer

    if model not in METHODS:
        raise InputError(None, "--model", f"unknown model {model!r} (choose from {', '.join(METHODS)})")
    if scale not in SCALES:
        raise InputError(None, "--scale", f"unknown scale {scale!r} (choose from {', '.join(SCALES)})")
    cfg = Config.fromfile(str(task_config_path(task)))
    root = ensure_benchmark(data)
    tokenizer_dir = root / "tokenizer"
    tok = load_tokenizer(tokenizer_dir)
    token_ids = dict(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
                     sep_token_id=tok.sep_token_id, mask_token_id=tok.mask_token_id)
    model_cfg = model_config(model, scale, **{**token_ids, **dict(model_overrides or {})})
    vision = model_cfg["vision"]
    cfg.model = model_cfg
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if loader in cfg:
            _fill_loader(cfg[loader], str(root), str(tokenizer_dir), vision["img_size"], vision["patch_size"])
    if max_iters is not None:
        if max_iters < 1:
            raise InputError(None, "--max-iters", f"must be at least 1, got {max_iters}")
        planned = cfg.train_cfg.max_iters
        cfg.train_cfg.max_iters = max_iters
        interval = cfg.train_cfg.get("val_interval", planned)
        cfg.train_cfg.val_interval = max_iters if interval >= planned else min(interval, max_iters)
        for sched in cfg.get("param_scheduler", []):  # what ran to the planned end now runs to the new one
            sched["end"] = max_iters if sched["end"] >= planned else min(sched["end"], max_iters)
            sched["begin"] = min(sched["begin"], max_iters - 1)
        checkpoint = cfg.default_hooks.get("checkpoint")
        if checkpoint is not None:
            checkpoint["interval"] = min(checkpoint["interval"], max_iters)
    cfg.work_dir = str(work_dir or Path("work_dirs") / task / f"{model}_{scale}_seed{seed}")
    cfg.default_scope = SCOPE
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.resume = resume
    cfg.launcher = cfg.get("launcher", "none")
    cfg.env_cfg = cfg.get("env_cfg", dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo")))
    cfg.experiment_name = f"{task}_{model}_{scale}_seed{seed}"
    return cfg


def _register_everything() -> None:
    import copa.build  # noqa: F401
    import harness.data.collate  # noqa: F401
    import harness.data.datasets  # noqa: F401
    import harness.hooks  # noqa: F401
    import harness.metrics  # noqa: F401


_CONSOLE_NOISE = (
    "Hooks will be executed in the following order",
    "Failed to search registry with scope",
    "Failed to import `None.registry`",
    "will be deprecated in future",
    "is the alias of",
    "The prefix is not set in metric class",
    "Distributed training is not used",
)


def _quiet_console(record: logging.LogRecord) -> bool:
    """Keep mmengine's expected chatter (its scope fallbacks for mmengine's own hooks and optimizers, the
    hook table) out of the console; the log file still has everything."""
    message = record.getMessage()
    return not any(noise in message for noise in _CONSOLE_NOISE)


def make_runner(cfg):
    """An mmengine Runner for ``cfg`` that loads checkpoints safely and keeps the console short."""
    from mmengine.runner import Runner

    from harness.checkpoint import install_safe_loader

    _register_everything()
    install_safe_loader()

    class BenchRunner(Runner):
        def build_logger(self, *args, **kwargs):
            logger = super().build_logger(*args, **kwargs)
            for handler in logger.handlers:
                if type(handler) is logging.StreamHandler:
                    handler.addFilter(_quiet_console)
            return logger

        def _log_env(self, env_cfg: dict) -> None:
            """The full environment and config go to the log file only; the console gets one line."""
            streams = [h for h in self.logger.handlers if type(h) is logging.StreamHandler]
            levels = [h.level for h in streams]
            for h in streams:
                h.setLevel(logging.WARNING)
            try:
                super()._log_env(env_cfg)
            finally:
                for h, level in zip(streams, levels, strict=True):
                    h.setLevel(level)
            import torch

            self.logger.info(f"{self.experiment_name}: seed {self.seed}, torch {torch.__version__}, "
                             f"{torch.get_num_threads()} threads; environment and config in {self.log_dir}")

    return BenchRunner.from_cfg(cfg)


def train(cfg) -> dict[str, float]:
    """Train (and validate) one job; returns the losses averaged over the last logging window and the
    last validation metrics."""
    runner = make_runner(cfg)
    runner.train()
    scalars = runner.message_hub.log_scalars
    window = cfg.get("log_processor", {}).get("window_size", 50)
    summary = {k.split("/", 1)[1]: float(v.mean(window)) for k, v in scalars.items() if k.startswith("train/loss")}
    summary.update({k: float(v.current()) for k, v in scalars.items()
                    if k.startswith("val/") and k not in ("val/time", "val/data_time")})
    return summary

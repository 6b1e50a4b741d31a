"""The configs share by mmengine ``_base_`` inheritance instead of by copying (issue 24, "Configs by inheritance").

These test the structure, not frozen values: no block of lines is repeated anywhere under ``configs/``; every
training task inherits the runtime and the AdamW + warm-up + cosine schedule and ends that schedule at its own
``max_iters``; the suites that run every task inherit one task list; every base is inherited by something and every
folder of ``configs/`` is read by a command.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from mmengine.config import Config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = CONFIGS / "_base_"
TASKS = sorted((CONFIGS / "tasks").glob("*.py"))
SUITES = sorted((CONFIGS / "suites").glob("*.py"))
RUNTIME = BASE / "default_runtime.py"
SCHEDULE = BASE / "schedules" / "adamw_warmup_cosine.py"
ALL_TASKS = BASE / "suites" / "all_tasks.py"
BLOCK = 6  # the limit: no block of six or more lines repeated across configs/
READ_BY = {  # each folder of configs/ and what reads it
    "_base_": "the configs that inherit it (mmengine _base_)",
    "tasks": "harness.taskspec / harness.runner (--task)",
    "suites": "harness.suite (copa-bench run)",
    "data": "harness.data.layouts (--data-config)",
    "launch": "the Slurm launcher (docs)",
}


def bases(path: Path) -> list[Path]:
    """The files ``path`` names in its ``_base_`` (a string or a list of strings), resolved next to it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            value = ast.literal_eval(node.value)
            names = [value] if isinstance(value, str) else list(value)
            return [(path.parent / name).resolve() for name in names]
    return []


def ancestors(path: Path) -> set[Path]:
    """Every base ``path`` inherits, directly or through another base."""
    seen: set[Path] = set()
    todo = bases(path)
    while todo:
        base = todo.pop()
        if base not in seen:
            seen.add(base)
            todo += bases(base)
    return seen


def test_no_block_of_lines_is_repeated_across_configs():
    """No run of BLOCK non-blank lines (compared stripped, so re-indenting does not hide a copy) appears twice
    under configs/, in two files or twice in one."""
    where = defaultdict(list)
    for path in sorted(p for p in CONFIGS.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        for i in range(len(lines) - BLOCK + 1):
            where[tuple(text for _, text in lines[i:i + BLOCK])].append(f"{path.relative_to(CONFIGS)}:{lines[i][0]}")
    repeated = {block: at for block, at in where.items() if len(at) > 1}
    assert not repeated, "repeated blocks (move them into a configs/_base_ file):\n" + "\n".join(
        f"{', '.join(at)}:\n    " + "\n    ".join(block) for block, at in repeated.items())


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_training_tasks_inherit_the_runtime_and_the_schedule(path):
    cfg = Config.fromfile(str(path))
    if "train_dataloader" not in cfg:  # test-only (patch detection): no runtime, no schedule
        assert "optim_wrapper" not in cfg and "param_scheduler" not in cfg
        return
    assert {RUNTIME, SCHEDULE} <= ancestors(path), f"{path.name} must inherit {RUNTIME.name} and {SCHEDULE.name}"
    max_iters = cfg.train_cfg.max_iters
    assert cfg.train_cfg.by_epoch is False and max_iters == cfg.max_iters
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.optim_wrapper.clip_grad.max_norm == 5.0
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, cosine.type) == ("LinearLR", "CosineAnnealingLR")
    assert warmup.begin == 0 and warmup.end == cosine.begin < cosine.end == max_iters  # the base leaves end None
    assert cfg.default_hooks.logger.type == "LoggerHook" and cfg.log_processor.by_epoch is False


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_suites_share_the_task_list(path):
    cfg = Config.fromfile(str(path))
    every = Config.fromfile(str(ALL_TASKS))
    if not cfg.get("tasks"):  # efficiency only
        return
    assert ALL_TASKS in ancestors(path), f"{path.name} must inherit {ALL_TASKS.name} (its test_only, its tasks)"
    assert set(cfg.tasks) <= set(every.tasks) and cfg.test_only == every.test_only


def test_every_base_is_inherited_and_every_config_folder_is_read():
    inherited = set().union(*(ancestors(p) for p in TASKS + SUITES))
    unused = sorted(str(p.relative_to(CONFIGS)) for p in BASE.rglob("*.py") if p.resolve() not in inherited)
    assert not unused, f"bases no config inherits: {unused}"
    folders = {p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(READ_BY), f"config folders no command reads: {sorted(folders - set(READ_BY))}"

"""What a task is, declared once, in its own config: ``harness.task_spec`` of ``configs/tasks/<task>.py``.

Tables (which metric heads the main table), the gate (which metrics it gates, which are fractions in [0, 1]),
chance (which predictor gives the task's floor) and suites (which config a task name runs, whether it only
tests a checkpoint) all read the declaration through :func:`task_spec`, as lm-evaluation-harness reads a task's
yaml. A task without one is an error that names the file, never a task that silently leaves a table.

The declaration (every key optional except ``headline``; defaults below), in the config's ``harness`` namespace
(harness/config_namespace.py)::

    harness = dict(task_spec=dict(
        headline="r_mean",          # the main table's metric of this task, gated as accuracy; None: not tabled
        gated=(),                   # metrics gated as accuracy besides the headline (the others are info only)
        fractions=(),               # metrics reported in [0, 1] rather than x100 (their tolerance is / 100)
        chance="random_ranking",    # a predictor in harness.registry.CHANCE; None: no chance row
        requires=["itc"],           # capabilities a model needs (harness.tasks.base.capabilities)
        test_only=False,            # a suite only tests a checkpoint on it (no fine-tuning)
        label="retrieval",          # the task's name in headers people read
        order=20,                   # column position in the main table (built-in tasks: 0-70)
        variants=dict(retrieval_zeroshot=dict(test_only=True, label="zero-shot retrieval", order=10)),
    ), task_model=...)

A variant is another task name for the same config with some keys overridden (zero-shot retrieval tests a
pre-training checkpoint with the retrieval config). Task configs live in ``configs/tasks`` and in the
directories plugins add with :func:`register_task_dir` (docs/extending.md); a task is always named, never
given as a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness.config_namespace import KEY as NAMESPACE
from harness.config_namespace import check_layout, settings
from harness.errors import InputError

TASK_DIR = Path(__file__).resolve().parent.parent / "configs" / "tasks"
SPEC_KEY = "task_spec"
WHERE = f"{NAMESPACE}.{SPEC_KEY}"
_PLUGIN_DIRS: list[Path] = []
_LIST_KEYS = ("gated", "fractions", "requires")
_KEYS = ("headline", *_LIST_KEYS, "chance", "test_only", "label", "order", "variants")
PLUGIN_ORDER = 1000  # plugin tasks' default column position: after the built-in ones


@dataclass(frozen=True)
class TaskSpec:
    """One task's declaration, as read from its config (see the module docstring for the keys)."""

    name: str
    config: str  # the task config it runs: itself, or the task a variant is declared in
    path: Path
    headline: str | None
    gated: tuple[str, ...] = ()
    fractions: tuple[str, ...] = ()
    chance: str | None = None
    requires: tuple[str, ...] = ()
    test_only: bool = False
    label: str = ""
    order: int = PLUGIN_ORDER

    @property
    def gated_metrics(self) -> tuple[str, ...]:
        """The metrics the gate judges as accuracy: the headline and ``gated``."""
        return ((self.headline,) if self.headline else ()) + self.gated


def register_task_dir(path: str | os.PathLike) -> None:
    """Make the task configs in ``path`` known by name (their file stems), after the built-in ones; what a
    plugin calls when it is imported (``--plugin MODULE`` or mmengine ``custom_imports``)."""
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise InputError(path, None, "a task config directory must be an existing directory")
    if folder not in _PLUGIN_DIRS and folder != TASK_DIR.resolve():
        _PLUGIN_DIRS.append(folder)
        _all_specs.cache_clear()


def task_dirs() -> list[Path]:
    """Where task configs are looked up by name: ``configs/tasks`` first, then the plugins' directories."""
    return [TASK_DIR, *_PLUGIN_DIRS]


def task_config_files() -> dict[str, Path]:
    """task name -> its config file, over :func:`task_dirs`; a name in two directories is an error."""
    files: dict[str, Path] = {}
    for folder in task_dirs():
        for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
            if path.stem.startswith("_"):
                continue
            if path.stem in files:
                raise InputError(path, None, f"task {path.stem!r} is already defined by {files[path.stem]}")
            files[path.stem] = path
    return files


def task_config_path(task: str, flag: str = "--task") -> Path:
    """The config file of a task *name* (never a path): in ``configs/tasks`` or a plugin's task directory."""
    from harness.runner import check_name

    check_name(task, flag)
    files = task_config_files()
    if task not in files:
        if not files:
            raise InputError(TASK_DIR, None, "the configs directory is missing (install copa-bench with "
                             "'pip install -e .')")
        raise InputError(None, flag, f"unknown task {task!r} (choose from {', '.join(sorted(files))})")
    return files[task]


def _strings(value, path: Path, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(path, f"{WHERE}.{key}", f"must be a list of strings, got {value!r}")
    return tuple(value)


def _parse(name: str, config: str, path: Path, spec: dict, where: str) -> TaskSpec:
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise InputError(path, f"{where}.{unknown[0]}", f"unknown key (expected {', '.join(_KEYS)})")
    if "headline" not in spec:
        raise InputError(path, f"{where}.headline", "missing: name the task's main metric (None: not tabled)")
    fields: dict = {key: _strings(spec[key], path, key) for key in _LIST_KEYS if key in spec}
    for key, kinds in (("headline", (str, type(None))), ("chance", (str, type(None))), ("test_only", (bool,)),
                       ("label", (str,)), ("order", (int,))):
        if key in spec:
            if not isinstance(spec[key], kinds) or key == "order" and isinstance(spec[key], bool):
                raise InputError(path, f"{where}.{key}", f"wrong type {type(spec[key]).__name__}")
            fields[key] = spec[key]
    fields.setdefault("label", name)
    return TaskSpec(name=name, config=config, path=path, **fields)


def _read(name: str, path: Path) -> list[TaskSpec]:
    """The task declared in one config file, and its variants."""
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(path))
    except SyntaxError as e:
        raise InputError(path, f"line {e.lineno}", f"not a valid Python config ({e.msg})") from None
    except Exception as e:  # mmengine re-raises a config's own errors as they are
        raise InputError(path, None, f"could not read the task config ({type(e).__name__}: {e})") from None
    check_layout(cfg, path)
    spec = settings(cfg).get(SPEC_KEY)
    if spec is None:
        raise InputError(path, WHERE, f"task {name!r} declares no {WHERE} (its headline metric, gated "
                         "metrics, chance predictor...): see docs/extending.md")
    if not isinstance(spec, dict):
        raise InputError(path, WHERE, f"must be a dict, got {type(spec).__name__}")
    spec = dict(spec)
    variants = spec.pop("variants", None) or {}
    if not isinstance(variants, dict):
        raise InputError(path, f"{WHERE}.variants", "must be a dict {name: overridden keys}")
    base = _parse(name, name, path, spec, WHERE)
    out = [base]
    for variant, overrides in variants.items():
        where = f"{WHERE}.variants.{variant}"
        if not isinstance(overrides, dict) or "variants" in overrides:
            raise InputError(path, where, "must be a dict of the keys it overrides (no nested variants)")
        merged = {k: getattr(base, k) for k in _KEYS if k != "variants"} | {"label": variant} | dict(overrides)
        out.append(_parse(variant, name, path, merged, where))
    return out


@lru_cache(maxsize=1)
def _all_specs() -> tuple[dict[str, TaskSpec], dict[str, InputError]]:
    """(declared tasks and variants in column order, the error of each config that declares nothing valid). A
    bad config is reported when its task is asked for, so one broken plugin file does not hide every task."""
    specs: dict[str, TaskSpec] = {}
    problems: dict[str, InputError] = {}
    for name, path in task_config_files().items():
        try:
            declared = _read(name, path)
        except InputError as e:
            problems[name] = e
            continue
        for spec in declared:
            if spec.name in specs or spec.name in problems:
                raise InputError(path, WHERE, f"task {spec.name!r} is declared twice (also in "
                                 f"{specs[spec.name].path if spec.name in specs else problems[spec.name].path})")
            specs[spec.name] = spec
    return dict(sorted(specs.items(), key=lambda item: (item[1].order, item[0]))), problems


def task_specs() -> dict[str, TaskSpec]:
    """Every declared task and variant, in the main table's column order (configs without a declaration, such as
    the vision pre-training job's, are left out: :func:`task_spec` names what is wrong with them)."""
    return dict(_all_specs()[0])


def task_spec(name: str, flag: str = "--task") -> TaskSpec:
    """The declaration of a task or variant; an InputError naming the config's problem, or the known tasks."""
    specs, problems = _all_specs()
    if name in problems:
        raise problems[name]
    if name not in specs:
        raise InputError(None, flag, f"task {name!r} has no declaration: no task config declares it (known: "
                         f"{', '.join(specs)}); a plugin's task needs its plugin loaded (--plugin MODULE)")
    return specs[name]


def is_declared(name: str) -> bool:
    """Whether :func:`task_spec` knows ``name`` (no error raised)."""
    return name in _all_specs()[0]


def reset() -> None:
    """Forget what was read (the task configs are re-read on next use); tests and long-lived processes."""
    _all_specs.cache_clear()

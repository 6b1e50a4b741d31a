"""Jobs on the mmengine Runner: a task config (configs/tasks/) plus a named model, data and work dir.

The task config is data; this module only fills in what depends on the job: the model's config and its
image and patch sizes, the dataset root, the tokenizer and its special-token ids, the seed, the work
directory, and the device and precision (``harness.device_cfg``; bf16/fp16 training through an autocast optimizer
wrapper). The model is built by the Runner from its config, after the Runner has seeded everything, so the
same seed gives the same weights and the same losses.

A job on another device type or in another precision is another measurement: its hash and its default work
directories say so (``_cuda_bf16``), except for the CPU in fp32, which leaves both as they were before the
flags existed, so earlier results and checkpoints stay valid.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.config_namespace import KEY as NAMESPACE
from harness.config_namespace import NOT_FROM_OPTIONS, OPTION_KEYS, check_layout, flat_layout
from harness.config_namespace import settings as harness_settings
from harness.errors import InputError
from harness.registry import SCOPE

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_DATA = Path("data") / "tiny"


NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
"""What a task or suite name may be: a name, never a path (no '/', no '..')."""


def check_name(name, what: str, path: str | os.PathLike | None = None) -> str:
    """``name`` if it is a plain name (``NAME``); else an InputError naming ``what`` (a flag or a field)."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise InputError(path, what, f"{name!r} is not a name (letters, digits, '_', '.', '-'; no path)")
    return name


def task_config_path(task: str) -> Path:
    """The config file of a task name: configs/tasks, or a plugin's task directory (harness/taskspec.py)."""
    from harness.taskspec import task_config_path as find

    return find(task)


def load_task_config(task: str):
    """The task's mmengine Config, set not to re-format its text with yapf: mmengine formats a job's config each
    time it logs, dumps or checkpoints it (0.4 s a time here, a fifth of a short job's wall time). Rebuilt from
    its dict because mmengine 0.10.7's ``fromfile`` ignores ``format_python_code`` for plain config files."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(task_config_path(task)))
    check_layout(cfg, cfg.filename)
    return Config(cfg.to_dict(), cfg_text=cfg.text, filename=cfg.filename, format_python_code=False)


def checked_manifest(root: str | os.PathLike) -> dict:
    """The benchmark's MANIFEST.json, checked before anything uses it: an object with its content hash."""
    from harness.data.benchmark import read_manifest

    path = Path(root) / "MANIFEST.json"
    manifest = read_manifest(root)
    if not isinstance(manifest, dict):
        raise InputError(path, None, f"expected a JSON object, got {type(manifest).__name__}")
    digest = manifest.get("content_sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InputError(path, "content_sha256", "missing or not a sha256 hex digest: not a complete copa-bench "
                         "benchmark (run 'copa-bench data make')")
    return manifest


def _default_data_state() -> str | None:
    """What ``data/tiny`` needs: ``"missing"``, ``"old"`` (an older generator wrote it) or None (current)."""
    from harness.data.benchmark import GENERATOR_VERSION

    if not (DEFAULT_DATA / "MANIFEST.json").is_file():
        return "missing"
    return "old" if checked_manifest(DEFAULT_DATA).get("generator_version") != GENERATOR_VERSION else None


def benchmark_root(data: str | os.PathLike | None) -> Path:
    """The data root a job reads, without making it: the given one (a complete benchmark) or the default
    ``data/tiny``, which :func:`prepare` generates (``copa-bench train``, ``test`` and ``run`` call it)."""
    if data is not None:
        checked_manifest(data)
        return Path(data)
    state = _default_data_state()
    if state == "missing":
        raise InputError(DEFAULT_DATA, None, "no benchmark here: run 'copa-bench data make --out data/tiny' "
                         "(train, test and run make it themselves)")
    if state == "old":
        raise InputError(DEFAULT_DATA / "MANIFEST.json", "generator_version", "an older generator wrote this "
                         "benchmark: regenerate it (train, test and run do so themselves)")
    return DEFAULT_DATA


def ensure_benchmark(data: str | os.PathLike | None) -> Path:
    """:func:`benchmark_root`, with the default ``data/tiny`` generated first when missing and again when an older
    generator version wrote it (a ``--data`` directory never changes)."""
    from harness import distributed
    from harness.data.benchmark import make_benchmark

    if data is not None:
        return benchmark_root(data)
    state = _default_data_state() if distributed.rank() == 0 else None
    if state:
        what = "an older generator wrote it: regenerating" if state == "old" else "no --data given: generating"
        print(f"{what} the tiny benchmark into {DEFAULT_DATA}", file=sys.stderr)
        make_benchmark(DEFAULT_DATA, preset="tiny", seed=0, force=state == "old")
    distributed.barrier()  # the other processes wait for rank 0's data
    return DEFAULT_DATA


def _fill_loader(loader: dict, data_root: str | None, tokenizer: str, image_size: int, patch_size: int) -> None:
    """Point a dataloader config at the data and the tokenizer, and size its pipeline for the model (``data_root``
    None: a data config gave the dataset absolute paths)."""
    loader["dataset"]["data_root"] = data_root
    if "tokenizer" in loader["collate_fn"]:
        loader["collate_fn"]["tokenizer"] = tokenizer
    for step in loader["dataset"].get("pipeline", []):
        if step["type"] == "Resize":
            step["size"] = image_size
        elif step["type"] in ("PatchLabels", "ObjectPatchWeights"):
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
    checkpoint: str | os.PathLike | None = None,
    testing: bool = False,
    vision_init: str | None = "auto",
    device: str | None = None,
    precision: str = "fp32",
    data_config=None,
    tokenizer: str | os.PathLike | None = None,
    options: Sequence[str] | None = None,
):
    """The complete mmengine ``Config`` of one job, on ``device`` (default: CUDA when available) in
    ``precision`` (fp32, bf16 or fp16).

    Downstream tasks (configs with ``harness.task_model``) wrap the named model as their backbone: ``checkpoint``
    defaults to the model's pre-training checkpoint for the same scale and seed (fine-tuning starts there);
    ``testing`` requires the task's own trained modules in it. Pre-training (``harness.vision_init``)
    starts the ViT from ``vision_init``: a timm file, ``"none"`` (from scratch) or ``"auto"`` (the vision
    pre-training job's output at tiny scale, made on first use).

    ``data_config`` (a :class:`harness.data.layouts.DataConfig` or its ``--data-config`` name) reads a real
    dataset instead of the generated benchmark, ``data`` then being its root; ``tokenizer`` replaces the data's.

    ``options`` (``--cfg-options``, already checked by :func:`parse_options`): the ``harness.`` keys among them
    (``harness.pretrained_vision_lr_mult=1.0``, ``harness.task_model.k=32``) are settings this function reads, so they
    are merged (into sections the task config has, and type-checked) before it does; the caller applies all of them
    to the result with :func:`apply_options`, which checks every component.
    """
    from harness.data.tokenizer import load_tokenizer
    from zoo import model_config

    device = check_job_arguments(model, task, scale, seed, vision_init, device, precision)
    if data_config is not None:
        from harness.data.layouts import DataConfig, apply_data_config, load_data_config

        if not isinstance(data_config, DataConfig):
            data_config = load_data_config(str(data_config), data, tokenizer)
        if task == "vision_pretrain":
            raise InputError(None, "--data-config", "vision pre-training reads the generated benchmark's image pool "
                             "only (give pre-training a timm ViT with --vision-init FILE instead)")
    if task == "vision_pretrain":  # one ViT initialisation shared by every model
        return build_vision_config(scale, data, work_dir, seed, max_iters, device, precision)
    cfg = load_task_config(task)
    early = [(key, value) for key, value in parse_options(options) if key.startswith(f"{NAMESPACE}.")]
    for key, value in early:  # read below: merged first, into sections the task config has
        _merge_option(cfg, key, value, "--cfg-options", None)
    harness_cfg = harness_settings(cfg)
    if early:
        check_types(harness_cfg, "--cfg-options", where=NAMESPACE)  # before the task model is built below
    if data_config is None:
        root = benchmark_root(data)
        tokenizer_dir = Path(tokenizer) if tokenizer is not None else root / "tokenizer"
    else:  # every file checked here, before a vision or pre-training job is looked for
        apply_data_config(cfg, task, data_config, testing)
        root, tokenizer_dir = data_config.root, data_config.tokenizer_dir()
        if (harness_cfg.get("vision_init") and vision_init == "auto"
                and "vision_pretrained" not in (model_overrides or {})):
            raise InputError(None, "--vision-init", "'auto' pre-trains the ViT on the generated benchmark's image "
                             "pool: with --data-config give a timm ViT checkpoint (e.g. ImageNet weights) or 'none'")
    tok = load_tokenizer(tokenizer_dir)
    token_ids = dict(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
                     sep_token_id=tok.sep_token_id, mask_token_id=tok.mask_token_id)
    overrides = {**token_ids, **dict(model_overrides or {})}
    vision_job = None
    if (harness_cfg.get("vision_init") and "vision_pretrained" not in overrides
            and vision_init not in (None, "auto", "none")):
        overrides["vision_pretrained"] = str(vision_init)
    elif needs_vision_init(cfg, scale, vision_init, overrides):
        path, vision_job = vision_init_file(scale, data, seed, device, precision)
        overrides["vision_pretrained"] = str(path)
    model_cfg = model_config(model, scale, **overrides)
    vision = model_cfg["vision"]
    vision_is_pretrained = bool(model_cfg.get("vision_pretrained")) or "task_model" in harness_cfg  # by VLP
    if vision_is_pretrained and harness_cfg.get("pretrained_vision_lr_mult", 1.0) != 1.0:
        _slow_pretrained_vision(cfg, harness_cfg["pretrained_vision_lr_mult"])
    if "task_model" in harness_cfg:
        from harness.tasks.base import check_applicable, check_checkpoint

        check_applicable(task, model, model_cfg, (harness_cfg.get("task_spec") or {}).get("requires", ()))
        if not testing and "train_dataloader" not in cfg:
            raise InputError(task_config_path(task), "train_dataloader",
                             f"task {task!r} has nothing to train: evaluate a checkpoint with 'copa-bench test'")
        if checkpoint is None:
            checkpoint = pretrain_checkpoint(model, scale, seed, device, precision)
        task_model = dict(harness_cfg["task_model"], backbone=model_cfg, checkpoint=str(checkpoint),
                          require_head=testing)
        for key, value in (("tokenizer", str(tokenizer_dir)), ("data_root", str(root))):
            if key in task_model and task_model[key] is None:
                task_model[key] = value
        check_checkpoint(task_model, checkpoint)  # a wrong or unsafe checkpoint fails before the job writes
        cfg.model = task_model
    else:
        cfg.model = model_cfg
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):  # a data config drops the splits it has no data for
            _fill_loader(cfg[loader], None if data_config is not None else str(root), str(tokenizer_dir),
                         vision["img_size"], vision["patch_size"])
    if vision_job is not None:
        cfg.harness.vision_init_job = vision_job  # the encoder file's name says nothing of how it was made
    _set_max_iters(cfg, max_iters)
    cfg.work_dir = str(work_dir or default_work_dir(task, model, scale, seed, device, precision))
    _set_job(cfg, f"{task}_{model}_{scale}_seed{seed}", seed, resume, device, precision)
    return cfg


SEED_MAX = 2**32 - 1  # numpy's seeds


def check_job_arguments(model: str, task: str, scale: str, seed: int, vision_init: str | None, device: str | None,
                        precision: str):
    """The job's arguments checked before anything is read, generated or trained; the resolved device."""
    from harness.device import check_precision, resolve_device
    from zoo import METHODS, SCALES

    if model not in METHODS:
        raise InputError(None, "--model", f"unknown model {model!r} (choose from {', '.join(METHODS)})")
    if scale not in SCALES:
        raise InputError(None, "--scale", f"unknown scale {scale!r} (choose from {', '.join(SCALES)})")
    check_seed(seed)
    task_config_path(task)
    if vision_init not in (None, "auto", "none") and not Path(vision_init).is_file():
        raise InputError(vision_init, "--vision-init", "no such file (give a timm ViT checkpoint, 'none' or 'auto')")
    device = resolve_device(device)
    check_precision(precision, device)
    return device


def check_seed(seed, flag: str = "--seed", path: str | os.PathLike | None = None) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise InputError(path, flag, f"must be an integer from 0 to {SEED_MAX}, got {seed!r}")
    return seed


def run_identity(device, precision: str) -> dict:
    """What of a job's device and precision enters its hash: the device type (not which GPU) and the
    precision; nothing for the CPU in fp32, so the hashes made before ``--device`` existed stay valid."""
    kind = str(device).split(":")[0]
    return {} if (kind, precision) == ("cpu", "fp32") else {"device": kind, "precision": precision}


def run_suffix(device, precision: str) -> str:
    """What default work directories add for a job off the CPU or in reduced precision (``_cuda_bf16``), so
    that it never overwrites (or is taken for) the CPU fp32 job: ``""`` for the CPU in fp32, ``_cuda`` for CUDA
    in fp32."""
    run = run_identity(device, precision)
    if not run:
        return ""
    return f"_{run['device']}" + ("" if precision == "fp32" else f"_{precision}")


def default_work_dir(task: str, model: str, scale: str, seed: int, device="cpu", precision: str = "fp32") -> Path:
    """``work_dirs/TASK/MODEL_SCALE_seedSEED`` (plus :func:`run_suffix`), where ``copa-bench train`` writes."""
    return Path("work_dirs") / task / f"{model}_{scale}_seed{seed}{run_suffix(device, precision)}"


PRETRAINED_VISION = ("vision.patch_embed", "vision.cls_token", "vision.pos_embed", "vision.blocks", "vision.norm")
"""Parameter-name prefixes of what a ViT checkpoint initialises (not the reducers, which start untrained)."""


def _slow_pretrained_vision(cfg, lr_mult: float) -> None:
    """Train the pre-trained ViT's parameters at ``lr_mult`` of the learning rate (mmengine ``custom_keys``)."""
    paramwise = dict(cfg.optim_wrapper.get("paramwise_cfg", {}))
    paramwise["custom_keys"] = {key: dict(lr_mult=lr_mult) for key in PRETRAINED_VISION} | dict(
        paramwise.get("custom_keys", {}))
    paramwise["bypass_duplicate"] = True  # the MLM decoder shares the word embeddings
    cfg.optim_wrapper.paramwise_cfg = paramwise


OPTION_FORBIDDEN = ("default_scope", "_scope_", "custom_imports", "_base_", "_delete_")
"""Keys no ``--cfg-options`` (or suite ``options``) may set: they choose which modules mmengine imports."""
BUILD_KEYS = ("type", "constructor")
"""Config keys whose string value mmengine resolves to a class or function (a dotted path imports anything)."""


def settable_top_level_keys() -> set[str]:
    """What a dotless ``--cfg-options`` key may name: a field the mmengine Runner reads. A task config's other
    top-level names (``max_iters``, ``batch_size``, ``pipeline``) are variables it derives fields from when the
    file is read, and setting them afterwards would change nothing; the harness's settings are under
    ``harness.`` (harness/config_namespace.py)."""
    import inspect

    from mmengine.runner import Runner

    return set(inspect.signature(Runner.__init__).parameters) - {"self", "cfg"}


def parse_options(options, flag: str = "--cfg-options", path: str | os.PathLike | None = None) -> list[tuple]:
    """``KEY=VALUE`` strings parsed as mmengine's ``--cfg-options`` parses them (Python literals or comma lists),
    checked before any config is built: malformed literals, non-finite numbers and keys that choose what
    mmengine imports are InputErrors naming ``flag`` (and ``path``, a suite file)."""
    from mmengine.config import DictAction

    if options is None:
        return []
    if not isinstance(options, (list, tuple)):
        raise InputError(path, flag, f"must be a list of 'KEY=VALUE' strings, got {type(options).__name__}")
    parsed = []
    for option in options:
        if not isinstance(option, str):
            raise InputError(path, flag, f"expected a 'KEY=VALUE' string, got {type(option).__name__}")
        key, sep, raw = option.partition("=")
        parts = key.split(".")
        if not sep or not key or not all(parts):
            raise InputError(path, flag, f"expected KEY=VALUE with a dotted KEY, got {option!r}")
        refused = [p for p in parts if p in OPTION_FORBIDDEN]
        if refused:
            raise InputError(path, flag, f"{key!r}: {refused[0]!r} cannot be set from outside the config files")
        _check_harness_key(parts, key, flag, path)
        if len(parts) == 1 and key not in settable_top_level_keys():
            raise InputError(path, flag, f"{key!r} is not a field of the job config but a variable its task config "
                             "derives fields from when the file is read, so setting it would change nothing: set "
                             "the fields (e.g. train_cfg.max_iters=N, train_dataloader.batch_size=N)")
        try:
            value = DictAction._parse_iterable(raw)
        except Exception as e:  # mmengine asserts on unbalanced brackets; deep nesting is a RecursionError
            detail = str(e).split("\n")[0][:80] or type(e).__name__
            raise InputError(path, flag, f"{key!r}: malformed value {raw[:80]!r} ({detail})") from None
        if not _finite(value):
            raise InputError(path, flag, f"{key!r}: {raw[:80]!r} is not a finite number")
        if key == f"{NAMESPACE}.pretrained_vision_lr_mult" and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise InputError(path, flag, f"{key!r} must be a number > 0, got {raw[:80]!r}")
        parsed.append((key, value))
    return parsed


def _check_harness_key(parts: list[str], key: str, flag: str, path) -> None:
    """Only :data:`OPTION_KEYS` under ``harness.``, and never a task model's type; an unprefixed harness key
    (the layout before the namespace) is pointed to its place."""
    head = parts[1] if parts[0] == NAMESPACE and len(parts) > 1 else parts[0]
    if parts[0] != NAMESPACE and head not in NOT_FROM_OPTIONS and head not in OPTION_KEYS:
        return
    if head in NOT_FROM_OPTIONS:
        raise InputError(path, flag, f"{key!r}: not an option: {NOT_FROM_OPTIONS[head]}")
    if parts[0] != NAMESPACE:
        raise InputError(path, flag, f"{key!r} is a harness setting: write {NAMESPACE}.{key}=...")
    if head not in OPTION_KEYS or len(parts) != (3 if head == "task_model" else 2):
        raise InputError(path, flag, f"{key!r}: the harness's options are {NAMESPACE}.pretrained_vision_lr_mult=X "
                         f"and {NAMESPACE}.task_model.ARGUMENT=VALUE")
    if parts[-1] in BUILD_KEYS:
        raise InputError(path, flag, f"{key!r}: the task model's type is the task's (choose another --task)")


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def apply_options(cfg, options: list[str] | None, flag: str = "--cfg-options",
                  path: str | os.PathLike | None = None) -> None:
    """``KEY=VALUE`` overrides of a job config (mmengine's ``--cfg-options``: dotted keys, values parsed as
    Python literals or comma lists). Everything above the last part of a key must exist in the config, so a
    mistyped section is an error rather than a silently added setting. The merged config is then checked
    (:func:`check_job`): every ``type`` must name a registered component, so no value runs code."""
    for key, value in parse_options(options, flag, path):
        _merge_option(cfg, key, value, flag, path)
    check_job(cfg, flag, path)


def _merge_option(cfg, key: str, value, flag: str, path) -> None:
    """One parsed option into ``cfg``, whose sections above the key's last part must exist."""
    node = cfg
    *parents, _ = key.split(".")
    for part in parents:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif not isinstance(node, (list, str)) and part in node:
            node = node[part]
        else:
            raise InputError(path, flag, f"the job config has no section {part!r} in {key!r}")
    if isinstance(node, (list, str, int, float)) or node is None:
        raise InputError(path, flag, f"{key!r}: {'.'.join(parents)} is not a section of the config")
    cfg.merge_from_dict({key: value}, allow_list_keys=True)


def registered_names() -> tuple[set[str], dict[str, set[str]]]:
    """Every name in copa-bench's and mmengine's registries (and their children), and the names per scope."""
    import mmengine.dataset  # noqa: F401  (mmengine registers its own components when imported)
    import mmengine.evaluator  # noqa: F401
    import mmengine.hooks  # noqa: F401
    import mmengine.model  # noqa: F401
    import mmengine.optim  # noqa: F401
    import mmengine.registry as root
    import mmengine.runner  # noqa: F401
    import mmengine.visualization  # noqa: F401

    _register_everything()
    names: set[str] = set()
    scoped: dict[str, set[str]] = {}
    seen: set[int] = set()

    def visit(registry) -> None:
        if id(registry) in seen:
            return
        seen.add(id(registry))
        registry.import_from_location()
        names.update(registry.module_dict)
        scoped.setdefault(registry.scope, set()).update(registry.module_dict)
        for child in registry.children.values():
            visit(child)

    for obj in list(vars(root).values()):
        if isinstance(obj, root.Registry):
            visit(obj)
    return names, scoped


def check_types(node, flag: str = "--cfg-options", path: str | os.PathLike | None = None, where: str = "") -> None:
    """Refuse any ``type`` (or ``constructor``) value in ``node`` that is not a string naming a registered
    component (``name`` or ``scope.name``): mmengine would import a dotted path such as ``os.system`` and call
    it, and a callable would simply be called."""
    names, scoped = registered_names()

    def ok(value) -> bool:
        if not isinstance(value, str):
            return False
        scope, dot, name = value.partition(".")
        return value in names and not dot or bool(dot) and name in scoped.get(scope, ()) and "." not in name

    def walk(node, where: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                here = f"{where}.{key}" if where else str(key)
                if key in BUILD_KEYS and not (key == "constructor" and value is None) and not ok(value):
                    shown = value if isinstance(value, (str, int, float)) else type(value).__name__
                    raise InputError(path, flag, f"{here}={shown!r}: not a registered component (a config "
                                     "builds only copa-bench's and mmengine's registered types, never a dotted path)")
                if key == "_scope_" and value not in scoped:
                    raise InputError(path, flag, f"{here}={value!r}: not a registry scope")
                walk(value, here)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{where}.{i}")

    walk(node, where)


def check_job(cfg, flag: str = "--cfg-options", path: str | os.PathLike | None = None) -> None:
    """What mmengine would only find out after creating the work dir: unregistered types, and dataloader and
    schedule settings it cannot run with."""
    check_types(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg, flag, path)

    def positive(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        spec = cfg.get(loader)
        if not spec:
            continue
        if "batch_size" in spec and not positive(spec["batch_size"]):
            raise InputError(path, flag, f"{loader}.batch_size must be an integer >= 1, got {spec['batch_size']!r}")
        workers = spec.get("num_workers", 0)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise InputError(path, flag, f"{loader}.num_workers must be an integer >= 0, got {workers!r}")
    train_cfg = cfg.get("train_cfg") or {}
    for key in ("max_iters", "val_interval"):
        if key in train_cfg and not positive(train_cfg[key]):
            raise InputError(path, flag, f"train_cfg.{key} must be an integer >= 1, got {train_cfg[key]!r}")


def pretrain_checkpoint(model: str, scale: str, seed: int, device="cpu", precision: str = "fp32") -> Path:
    """The last checkpoint of ``copa-bench train --model MODEL --task pretrain`` at this scale and seed (on the
    same device type and precision)."""
    work_dir = default_work_dir("pretrain", model, scale, seed, device, precision)
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        flags = "" if not run_suffix(device, precision) else f" --device {device} --precision {precision}"
        raise InputError(marker, None, f"no pre-training checkpoint of {model} ({scale}, seed {seed}): run "
                         f"'copa-bench train --model {model} --task pretrain --scale {scale} --seed {seed}{flags}' "
                         "first, or give --checkpoint")
    return Path(marker.read_text().strip())


def _set_job(cfg, name: str, seed: int, resume: bool, device, precision: str) -> None:
    from harness.device import CONFIG_KEY

    cfg.default_scope = SCOPE
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.resume = resume
    cfg.launcher = cfg.get("launcher", "none")
    cfg.env_cfg = cfg.get("env_cfg", dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo")))
    cfg.experiment_name = name
    cfg[NAMESPACE] = dict(cfg.get(NAMESPACE) or {}, **{CONFIG_KEY: dict(device=str(device), precision=precision)})
    _set_training_precision(cfg, device, precision)


AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _set_training_precision(cfg, device, precision: str) -> None:
    """Train in ``precision``: mmengine's ``AmpOptimWrapper`` (autocast and a loss scaler) on CUDA; on the
    CPU, where it refuses to run, :class:`~harness.tasks.base.AutocastOptimWrapper` (bf16 needs no scaler;
    fp16 is refused on the CPU before this)."""
    wrapper = cfg.get("optim_wrapper")
    if precision == "fp32" or not wrapper or not cfg.get("train_cfg"):
        return
    if wrapper.get("type", "OptimWrapper") != "OptimWrapper":
        raise InputError(None, "--precision", f"{precision} training replaces the task's optim_wrapper, but it is "
                         f"a {wrapper['type']}: train it in fp32")
    if str(device).startswith("cuda"):
        wrapper.update(type="AmpOptimWrapper", dtype=AMP_DTYPES[precision])
    else:
        wrapper.update(type="AutocastOptimWrapper", device_type="cpu", dtype=AMP_DTYPES[precision])


def _set_max_iters(cfg, max_iters: int | None) -> None:
    """Run the schedule to ``max_iters``: what ran to the planned end now runs to the new one."""
    if max_iters is None:
        return
    if max_iters < 1:
        raise InputError(None, "--max-iters", f"must be at least 1, got {max_iters}")
    planned = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = max_iters
    interval = cfg.train_cfg.get("val_interval", planned)
    cfg.train_cfg.val_interval = max_iters if interval >= planned else min(interval, max_iters)
    for sched in cfg.get("param_scheduler", []):
        sched["end"] = max_iters if sched["end"] >= planned else min(sched["end"], max_iters)
        sched["begin"] = min(sched["begin"], max_iters - 1)
    checkpoint = cfg.default_hooks.get("checkpoint")
    if checkpoint is not None:
        checkpoint["interval"] = min(checkpoint["interval"], max_iters)


def build_vision_config(scale: str = "tiny", data: str | os.PathLike | None = None,
                        work_dir: str | os.PathLike | None = None, seed: int = 0, max_iters: int | None = None,
                        device: str | None = None, precision: str = "fp32"):
    """The Config of the vision pre-training job (configs/tasks/vision_pretrain.py) at a scale."""
    from harness.data.datasets import image_class_labels, image_class_table
    from harness.device import check_precision, resolve_device
    from zoo import SCALES

    if scale not in SCALES:
        raise InputError(None, "--scale", f"unknown scale {scale!r} (choose from {', '.join(SCALES)})")
    check_seed(seed)
    device = resolve_device(device)
    check_precision(precision, device)
    cfg = load_task_config("vision_pretrain")
    root = benchmark_root(data)
    vision = dict(SCALES[scale]["vision"])
    pool = cfg.train_dataloader.dataset
    single_label = bool(pool.get("single_label", False))
    classes = image_class_labels(image_class_table(os.path.join(str(root), pool.ann_file)), single_label)
    cfg.model = dict(type="ObjectClassifier", vision=vision, num_classes=len(classes), avg_head=True,
                     single_label=single_label)
    for loader in ("train_dataloader", "val_dataloader"):
        _fill_loader(cfg[loader], str(root), "", vision["img_size"], vision["patch_size"])
    _set_max_iters(cfg, max_iters)
    _set_job(cfg, f"vision_pretrain_{scale}_seed{seed}", seed, False, device, precision)
    cfg.work_dir = str(work_dir or vision_init_dir(scale, seed, job_digest(cfg), device, precision))
    return cfg


CACHE_ENV = "COPA_BENCH_CACHE"


def vision_init_dir(scale: str, seed: int, digest: str, device="cpu", precision: str = "fp32") -> Path:
    """Where the ViT initialisation of one vision pre-training job lives: named by the job's hash (config, data,
    device type, precision), so that datasets and recipes never overwrite each other's, under
    ``$COPA_BENCH_CACHE`` when set (CI keeps it outside the clone) and ``work_dirs/`` otherwise."""
    root = Path(os.environ.get(CACHE_ENV) or "work_dirs")
    return root / "vision_pretrain" / f"vit_{scale}_seed{seed}{run_suffix(device, precision)}_{digest[:12]}"


def _vision_job(scale: str, data, seed: int, device, precision: str):
    from harness.tasks.vision_pretrain import ENCODER_FILE

    cfg = build_vision_config(scale, data, seed=seed, device=device, precision=precision)
    digest = job_digest(cfg)
    path = Path(cfg.work_dir) / ENCODER_FILE
    return cfg, digest, path, path.is_file() and bool(finished_job(cfg.work_dir, digest))


def vision_init_file(scale: str, data: str | os.PathLike | None, seed: int, device: str | None = None,
                     precision: str = "fp32") -> tuple[Path, str]:
    """The ViT initialisation a tiny pre-training starts from (``vision_init='auto'``): the vision pre-training
    job's exported encoder and that job's digest, which :func:`prepare` makes. Only a finished run of this very
    config counts, so an encoder made by an older vision config or other data is never taken for the current one."""
    _, digest, path, made = _vision_job(scale, data, seed, device, precision)
    if not made:
        raise InputError(path, None, "no ViT initialisation of this config yet: make it first (train, test and "
                         "run do: harness.runner.prepare), or give --vision-init FILE or none")
    return path, digest


def ensure_vision_init(scale: str, data: str | os.PathLike | None, seed: int, device: str | None = None,
                       precision: str = "fp32") -> tuple[Path, str]:
    """:func:`vision_init_file`, made first (on the pre-training's device, in its precision) when missing."""
    cfg, digest, path, made = _vision_job(scale, data, seed, device, precision)
    if not made:
        print(f"no vision initialisation of this config yet: pre-training the {scale} ViT on the vision pool's "
              f"class labels into {path.parent}", file=sys.stderr)
        train(cfg)
    return path, digest


def needs_vision_init(task_cfg, scale: str, vision_init: str | None,
                      model_overrides: Mapping[str, Any] | None = None) -> bool:
    """Whether a job of this task config starts from the shared tiny ViT initialisation, which :func:`prepare`
    makes."""
    return (scale == "tiny" and vision_init in (None, "auto") and "vision_pretrained" not in (model_overrides or {})
            and bool(harness_settings(task_cfg).get("vision_init")))


def prepare(model: str, task: str, scale: str = "tiny", data: str | os.PathLike | None = None, seed: int = 0,
            vision_init: str | None = "auto", device: str | None = None, precision: str = "fp32",
            model_overrides: Mapping[str, Any] | None = None, data_config=None) -> None:
    """What a job needs on disk before :func:`build_config`, which only reads, can build it; each step announced
    as it starts: the default benchmark generated (``data/tiny``, when no ``--data`` is given) and, for a tiny
    pre-training from ``vision_init='auto'``, the shared ViT initialisation trained (about 10 minutes on 2 cores,
    once per data and recipe). The arguments are checked first."""
    device = check_job_arguments(model, task, scale, seed, vision_init, device, precision)
    if data_config is not None:  # a real dataset is read as it is; 'auto' is refused with it by build_config
        return
    ensure_benchmark(data)
    if needs_vision_init(load_task_config(task), scale, vision_init, model_overrides):
        ensure_vision_init(scale, data, seed, device, precision)


def _register_everything() -> None:
    import harness.data.collate  # noqa: F401
    import harness.data.datasets  # noqa: F401
    import harness.hooks  # noqa: F401
    import harness.metrics  # noqa: F401
    import harness.tasks  # noqa: F401
    import zoo  # noqa: F401


_CONSOLE_NOISE = (
    "Hooks will be executed in the following order",
    "Failed to search registry with scope",
    "Failed to import `None.registry`",
    "will be deprecated in future",
    "is the alias of",
    "The prefix is not set in metric class",
    "Distributed training is not used",
    "since its requires_grad=False",  # the momentum model's parameters, one line each
)


def _quiet_console(record: logging.LogRecord) -> bool:
    """Keep mmengine's expected chatter (its scope fallbacks for mmengine's own hooks and optimizers, the
    hook table) out of the console; the log file still has everything."""
    message = record.getMessage()
    return not any(noise in message for noise in _CONSOLE_NOISE)


def quiet_console(logger: logging.Logger) -> logging.Logger:
    """Filter mmengine's expected chatter out of ``logger``'s console handlers."""
    for handler in logger.handlers:
        if type(handler) is logging.StreamHandler:
            handler.addFilter(_quiet_console)
    return logger


MODEL_FILE_KEYS = ("vision_pretrained", "text_pretrained", "checkpoint")


def check_model_config(model_cfg) -> None:
    """Build the job's model on the meta device (no memory, no weights read) so that a bad model argument, from a
    task config or ``--cfg-options``, is one line before the Runner writes a work dir, not a traceback after."""
    import torch

    import harness.tasks  # noqa: F401  (registers every task model)
    from zoo import MODELS

    def without_files(cfg: dict) -> dict:
        cfg = {k: v for k, v in dict(cfg).items() if k not in MODEL_FILE_KEYS}  # files are checked where named
        if isinstance(cfg.get("backbone"), dict):
            cfg["backbone"] = without_files(cfg["backbone"])
        return cfg

    try:
        with torch.device("meta"):
            MODELS.build(without_files(model_cfg))
    except (ValueError, TypeError, KeyError) as e:
        message = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputError(None, "--cfg-options", f"the model config is not valid: {message}") from None


def make_runner(cfg):
    """An mmengine Runner for ``cfg`` that loads checkpoints safely, keeps the console short, and runs on the
    job's device in its precision."""
    import contextlib

    import torch
    from mmengine.runner import Runner

    from harness import distributed
    from harness.checkpoint import install_safe_loader
    from harness.device import job_settings
    from harness.hooks import TrainingRandomStateHook

    check_model_config(cfg.model)

    _register_everything()
    install_safe_loader()
    device, _ = job_settings(cfg)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # "cuda" (mmengine's default tensors, its memory log) means this GPU too
    if distributed.is_initialized() and cfg.get("launcher", "none") == "none":
        distributed.configure(cfg, "pytorch")  # a process in a group runs every job distributed

    class BenchRunner(Runner):
        @contextlib.contextmanager
        def _on_job_device(self):
            """mmengine places the model (and maps a resumed checkpoint) on ``get_device()``, CUDA whenever the
            machine has it: the job's device instead, so ``--device cpu`` means the CPU on a GPU machine."""
            import mmengine.runner.runner as base

            saved = base.get_device
            base.get_device = lambda: str(device)
            try:
                yield
            finally:
                base.get_device = saved

        def wrap_model(self, model_wrapper_cfg, model):
            with self._on_job_device():
                return super().wrap_model(model_wrapper_cfg, model)

        def resume(self, *args, **kwargs) -> None:
            with self._on_job_device():
                super().resume(*args, **kwargs)

        def build_val_loop(self, loop):
            """Loops without a type of their own run in the job's precision (harness.tasks.base)."""
            if isinstance(loop, dict) and "type" not in loop:
                loop = dict(loop, type="PrecisionValLoop")
            return super().build_val_loop(loop)

        def build_test_loop(self, loop):
            if isinstance(loop, dict) and "type" not in loop:
                loop = dict(loop, type="PrecisionTestLoop")
            return super().build_test_loop(loop)

        def test(self) -> dict:
            """Initialise the model first, as ``train`` does: task models load their checkpoint there."""
            self._init_model_weights()
            return super().test()

        def build_logger(self, *args, **kwargs):
            return quiet_console(super().build_logger(*args, **kwargs))

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
            _, precision = job_settings(self.cfg)
            self.logger.info(f"{self.experiment_name}: seed {self.seed}, torch {torch.__version__}, "
                             f"{torch.get_num_threads()} threads, {device} {precision}; environment and config in "
                             f"{self.log_dir}")

    runner = BenchRunner.from_cfg(cfg)
    if cfg.get("train_cfg"):
        runner.register_hook(TrainingRandomStateHook())
    return runner


JOB_FILE = "job.json"
_NOT_THE_JOB = ("work_dir", "resume", "load_from", "launcher", "model_wrapper_cfg", "find_unused_parameters",
                "experiment_name", "task_spec")  # task_spec: what tables and the gate read of a task, not its result


def job_digest(cfg) -> str:
    """Identifies a job by what decides its result: the config (not where it runs or under which name), the
    device type and precision it runs in (:func:`run_identity`) and the data's content hash."""
    from harness.device import CONFIG_KEY
    from harness.results import job_hash

    config = {k: v for k, v in flat_layout(cfg.to_dict()).items() if k not in _NOT_THE_JOB}
    settings = config.pop(CONFIG_KEY, None) or {}
    run = run_identity(settings.get("device", "cpu"), settings.get("precision", "fp32"))
    roots = {cfg[loader].dataset.get("data_root") for loader in ("train_dataloader", "test_dataloader")
             if cfg.get(loader)}
    data = sorted(checked_manifest(r)["content_sha256"] for r in roots if r)
    return job_hash({"config": config, "data": data, **({"run": run} if run else {})})


def finished_job(work_dir: str | os.PathLike, digest: str) -> dict | None:
    """The record a training job left in ``work_dir`` when it finished, if it was this job."""
    import json

    path = Path(work_dir) / JOB_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    marker = Path(work_dir) / "last_checkpoint"
    if not isinstance(record, dict) or record.get("job_hash") != digest or not marker.is_file():
        return None
    return record


@contextlib.contextmanager
def _no_work_dir_left_on_bad_input(work_dir: str | os.PathLike):
    """Bad input found once the Runner has started (it creates the work dir first) leaves nothing behind: the
    directories this job created are removed again on an InputError. A work dir that existed is kept."""
    import shutil

    from harness import distributed

    fresh = None
    for path in (Path(work_dir).absolute(), *Path(work_dir).absolute().parents):
        if os.path.lexists(path):
            break
        fresh = path
    try:
        yield
    except InputError:
        if fresh is not None and distributed.rank() == 0:
            shutil.rmtree(fresh, ignore_errors=True)
        raise


def train(cfg) -> dict[str, float]:
    """Train (and validate) one job; returns the losses averaged over the last logging window and the
    last validation metrics, also recorded in ``job.json`` in the work dir once the job has finished."""
    import json
    import time

    from harness import distributed
    from harness.results import write_atomic

    start = time.perf_counter()
    with _no_work_dir_left_on_bad_input(cfg.work_dir):
        runner = make_runner(cfg)
        runner.train()
    scalars = runner.message_hub.log_scalars
    window = cfg.get("log_processor", {}).get("window_size", 50)
    summary = {k.split("/", 1)[1]: float(v.mean(window)) for k, v in scalars.items() if k.startswith("train/loss")}
    summary.update({k: float(v.current()) for k, v in scalars.items()
                    if k.startswith("val/") and k not in ("val/time", "val/data_time")})
    if runner.rank == 0:
        from harness.device import device_settings

        record = dict(job_hash=job_digest(cfg), summary=summary, wall_s=time.perf_counter() - start,
                      **device_settings(cfg))
        write_atomic(Path(cfg.work_dir) / JOB_FILE, json.dumps(record, indent=2))
    distributed.barrier()  # every process sees the finished job's checkpoint and record
    return summary


def without_validation(cfg) -> None:
    """Drop the validation that ends a training job, for jobs whose checkpoint is tested right after (a suite's
    fine-tuning): it would evaluate a second time and record nothing the test does not."""
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.train_cfg.pop("val_interval", None)


def test(cfg) -> dict[str, float]:
    """Evaluate one job's checkpoint on the task's test split; returns the metrics."""
    with _no_work_dir_left_on_bad_input(cfg.work_dir):
        runner = make_runner(cfg)
        metrics = runner.test()
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


test.__test__ = False  # a runner entry point, not a pytest test when a test module imports it

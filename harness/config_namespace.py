"""The job config's own namespace: what copa-bench reads of a config and the mmengine Runner does not.

A task config keeps the Runner's fields at the top level and the harness's under one key::

    harness = dict(
        task_spec=dict(headline="vqa_acc", requires=["fusion"], ...),  # what the task is (harness/taskspec.py)
        task_model=dict(type="VQAModel", ...),  # a downstream task's model; the named model is its backbone
        vision_init=True,                       # pre-training: the ViT starts from an initialisation
        pretrained_vision_lr_mult=0.1,          # the pre-trained ViT's share of the learning rate
    )

When a job is built the harness adds ``device_cfg`` (device and precision), for a tiny pre-training
``vision_init_job`` (which vision pre-training made its ViT) and, on real data, ``data_config`` (which files).
``--cfg-options`` sets ``harness.pretrained_vision_lr_mult`` and the task model's arguments
(``harness.task_model.k=32``), never its type; the rest are chosen elsewhere (:data:`NOT_FROM_OPTIONS`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from harness.errors import InputError

KEY = "harness"
TASK_KEYS = ("task_spec", "task_model", "vision_init", "pretrained_vision_lr_mult")
"""What a task config may declare under ``harness``."""
BUILT_KEYS = ("device_cfg", "vision_init_job", "data_config")
"""What the harness adds when it builds a job."""
OPTION_KEYS = ("pretrained_vision_lr_mult", "task_model")
"""What ``--cfg-options harness.KEY...`` may set: settings read when the job is built."""
_DECLARED = "the task's declaration, read from its config file (as tables and the gate read it)"
NOT_FROM_OPTIONS = {"task_spec": _DECLARED, "requires": _DECLARED, "vision_init": "chosen with --vision-init",
                    "device_cfg": "chosen with --device and --precision",
                    "vision_init_job": "recorded by the harness when it builds the job",
                    "data_config": "recorded by the harness when it builds the job (--data-config chooses the data)"}
"""Why the other harness keys are not ``--cfg-options``."""


def settings(cfg: Mapping) -> Mapping:
    """The ``harness`` namespace of a config (empty when it has none)."""
    return cfg.get(KEY) or {}


def check_layout(cfg: Mapping, path: str | os.PathLike | None) -> None:
    """Refuse a task config that sets a harness key at the top level (the layout before the namespace), which
    the harness would otherwise silently ignore, one the harness records itself, or an unknown key."""
    for key in (*TASK_KEYS, *BUILT_KEYS, "requires"):
        if key in cfg:
            where = "harness.task_spec.requires" if key == "requires" else f"harness.{key}"
            raise InputError(path, key, f"a harness setting at the top level: write it as {where} (harness = "
                             "dict(...); see harness/config_namespace.py)")
    namespace = cfg.get(KEY, {})
    if not isinstance(namespace, Mapping):
        raise InputError(path, KEY, f"must be a dict, got {type(namespace).__name__}")
    built = [key for key in BUILT_KEYS if key in namespace]
    if built:
        raise InputError(path, f"{KEY}.{built[0]}", "set by the harness when it builds a job, not by a task config")
    unknown = sorted(set(namespace) - set(TASK_KEYS))
    if unknown:
        raise InputError(path, f"{KEY}.{unknown[0]}", f"unknown key (expected {', '.join(TASK_KEYS)})")


def flat_layout(config: Mapping) -> dict:
    """``config`` laid out as before the namespace: its keys at the top level, and the capabilities the task
    requires of a model also there as ``requires``. Job hashes are computed over this layout, so that the rows of
    every store written before the namespace keep the hashes a resumed suite looks for."""
    flat = {k: v for k, v in config.items() if k != KEY}
    namespace = dict(config.get(KEY) or {})
    flat.update(namespace)
    spec = namespace.get("task_spec") or {}
    if spec.get("requires"):
        flat["requires"] = list(spec["requires"])
    return flat

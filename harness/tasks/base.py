"""What every downstream task shares: a pre-trained VLP model (the backbone) under a task head, loaded from a
pre-training or fine-tuning checkpoint, and the capabilities that decide whether a task applies to a model."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from mmengine.model import BaseModel

from copa.registry import MODELS
from harness.checkpoint import load_checkpoint
from harness.errors import InputError, NotApplicable


def capabilities(model_cfg: dict) -> set[str]:
    """What a model config can do: ``itc`` (text-free embeddings for a shortlist), ``decoder`` (generation),
    ``reducer`` (a patch reducer whose choices can be scored), ``fusion`` (image-text pair encoding)."""
    losses = set(model_cfg.get("losses", ()))
    caps = {"fusion"}
    if "itc" in losses:
        caps.add("itc")
    if "lm" in losses and model_cfg.get("decoder_layers", 1) > 0:
        caps.add("decoder")
    if model_cfg.get("vision", {}).get("reducer") is not None:
        caps.add("reducer")
    return caps


def check_applicable(task: str, model: str, model_cfg: dict, requires: Iterable[str]) -> None:
    """Raise :class:`NotApplicable` naming what ``model`` lacks for ``task``."""
    reasons = {"itc": "it has no text-free ITC embeddings to shortlist with",
               "decoder": "it has no PrefixLM decoder", "reducer": "it keeps every patch (no reducer)",
               "fusion": "it has no image-text fusion"}
    missing = [r for r in requires if r not in capabilities(model_cfg)]
    if missing:
        raise NotApplicable(f"task {task!r} does not apply to model {model!r}: {reasons.get(missing[0], missing[0])}")


def _state_dict_of(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(path, "state_dict", "no model weights in this checkpoint")
    return state


class TaskModel(BaseModel):
    """A backbone from ``copa.registry.MODELS`` (``albef``, ``copa``, ... configs) plus a task's own modules.

    ``checkpoint`` is either a pre-training checkpoint (the backbone's weights: fine-tuning starts there,
    and tasks without modules of their own test it zero-shot) or this task's fine-tuned checkpoint
    (everything). With ``require_head`` (testing) a pre-training checkpoint for a task with a head is an error.
    """

    def __init__(self, backbone: dict, checkpoint: str | None = None, require_head: bool = False,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.backbone = MODELS.build(backbone)
        self.checkpoint = checkpoint
        self.require_head = require_head

    def init_weights(self) -> None:
        """Modules are initialised when built; then the checkpoint is loaded (mmengine's recursive
        re-initialisation would overwrite pre-trained weights). copa-bench's Runner calls this before testing
        too (mmengine's ``Runner.test`` does not)."""
        if self.checkpoint is not None:
            self.load_pretrained(self.checkpoint)
        self._is_init = True

    def load_pretrained(self, path: str | os.PathLike) -> None:
        state = _state_dict_of(path)
        if any(k.startswith("backbone.") for k in state):
            _load_strict(path, self, state)
            return
        _load_strict(path, self.backbone, state)
        own = [k for k in self.state_dict() if not k.startswith("backbone.")]
        if own and self.require_head:
            raise InputError(path, "state_dict", f"a pre-training checkpoint has no weights for this task's head "
                             f"({own[0]}, ...): fine-tune first with 'copa-bench train'")


def _load_strict(path: str | os.PathLike, module: torch.nn.Module, state: dict) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InputError(path, "state_dict", f"does not fit {type(module).__name__}: {what}")

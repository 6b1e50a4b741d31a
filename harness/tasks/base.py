"""What every downstream task shares: a pre-trained VLP model (the backbone) under a task head, loaded from a
pre-training or fine-tuning checkpoint, the capabilities that decide whether a task applies to a model, and
the loops and optimizer wrapper that run every job in its precision (``--precision``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence

import torch
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from mmengine.runner import TestLoop, ValLoop
from mmengine.runner.loops import _update_losses

from harness.checkpoint import load_checkpoint
from harness.device import autocast, device_settings, full_precision, model_device
from harness.errors import InputError, NotApplicable
from harness.registry import LOOPS
from zoo import MODELS  # the registry, with every named model (the backbones) registered


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


def _state_dict_of(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path, mmap=mmap)
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

    def load_pretrained(self, path: str | os.PathLike, load: bool = True) -> None:
        """Load ``path`` into the model; with ``load=False`` only check that it would load (the model may be
        on the meta device: copa-bench checks a job's checkpoint this way before anything is written)."""
        state = _state_dict_of(path, mmap=not load)
        module = self if any(k.startswith("backbone.") for k in state) else self.backbone
        self.check_state(path, state)
        _check_fits(path, module, state)
        own = [k for k in self.state_dict() if not k.startswith("backbone.")]
        if module is self.backbone and own and self.require_head:
            raise InputError(path, "state_dict", f"a pre-training checkpoint has no weights for this task's head "
                             f"({own[0]}, ...): fine-tune first with 'copa-bench train'")
        if load:
            module.load_state_dict(state)


    def check_state(self, path: str | os.PathLike, state: dict[str, torch.Tensor]) -> None:
        """Task-specific checks of a checkpoint's weights before they load (none by default)."""


def _check_fits(path: str | os.PathLike, module: torch.nn.Module, state: dict) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected else \
            f"shape {wrong[0]}"
        raise InputError(path, "state_dict", f"does not fit {type(module).__name__}: {what}")


def check_checkpoint(task_model: dict, path: str | os.PathLike) -> None:
    """Raise InputError now if ``path`` is not a checkpoint this task model would load (unsafe objects, no
    weights, another model's weights): built on the meta device and read memory-mapped, so it is cheap."""
    import harness.tasks  # noqa: F401  (registers every task model)

    with torch.device("meta"):
        model = MODELS.build(dict(task_model, checkpoint=None))
    model.require_head = task_model.get("require_head", False)
    model.load_pretrained(path, load=False)


# --- precision: evaluation under autocast, training through an autocast optimizer wrapper ----------------------


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (itself otherwise)."""
    return model.module if hasattr(model, "module") else model


def job_precision(runner) -> str:
    """The precision of the runner's job (``harness.device_cfg`` of its config; fp32 without one)."""
    return device_settings(runner.cfg).get("precision", "fp32")


def evaluation_context(runner) -> contextlib.AbstractContextManager:
    """Autocast on the model's device in the job's precision (nothing for fp32)."""
    return autocast(model_device(unwrap(runner.model)), job_precision(runner))


@LOOPS.register_module()
class PrecisionValLoop(ValLoop):
    """mmengine's ValLoop in the job's precision (its own ``fp16`` flag knows only float16, and its autocast
    would switch an outer one off); outputs reach the metrics in fp32. copa-bench's Runner uses it for every
    validation loop without a type of its own."""

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        self.runner.call_hook("before_val_iter", batch_idx=idx, data_batch=data_batch)
        with evaluation_context(self.runner):
            outputs = self.runner.model.val_step(data_batch)  # the data preprocessor moves the batch
        outputs, self.val_loss = _update_losses(full_precision(outputs), self.val_loss)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook("after_val_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs)


@LOOPS.register_module()
class PrecisionTestLoop(TestLoop):
    """mmengine's TestLoop in the job's precision (see :class:`PrecisionValLoop`)."""

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        self.runner.call_hook("before_test_iter", batch_idx=idx, data_batch=data_batch)
        with evaluation_context(self.runner):
            outputs = self.runner.model.test_step(data_batch)
        outputs, self.test_loss = _update_losses(full_precision(outputs), self.test_loss)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook("after_test_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs)


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """Mixed-precision training without a loss scaler, for bf16 on the CPU: mmengine's ``AmpOptimWrapper``
    asserts that a GPU is present (copa-bench uses it on CUDA). bf16 keeps fp32's exponent range, so its
    gradients need no scaling; fp16 (which would) runs on CUDA only."""

    def __init__(self, *args, device_type: str = "cpu", dtype: str = "bfloat16", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.device_type = device_type
        self.cast_dtype = getattr(torch, dtype)

    @contextlib.contextmanager
    def optim_context(self, model: torch.nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast(device_type=self.device_type, dtype=self.cast_dtype):
            yield

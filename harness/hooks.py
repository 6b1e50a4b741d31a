"""mmengine hooks: efficiency beside accuracy in every test run; training random state that survives a resume."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from harness.device import autocast, device_name, model_device, peak_memory, to_device
from harness.profiling.efficiency import pair_macs, parameter_count
from harness.profiling.speed import machine, summarize, time_interleaved
from harness.registry import HOOKS


@HOOKS.register_module()
class EfficiencyHook(Hook):
    """At the end of testing, measure the model on the task's own first test batch: multiply-adds of one
    pair at the batch's image size and padded text length, parameters, and the median time of the
    pair forward over the batch, on the model's device in the job's precision (each timing waits for the
    device; on CUDA the peak memory above the weights too). The figures, with the device, precision, batch
    and threads that did the timing, go to ``efficiency.json`` in the run's log directory and to the message
    hub (``efficiency/*``), where the results store picks them up."""

    priority = "VERY_LOW"

    def __init__(self, repeats: int = 5, warmup: int = 1) -> None:
        self.repeats = repeats
        self.warmup = warmup

    def after_test(self, runner) -> None:
        from harness.tasks.base import job_precision, unwrap

        model = unwrap(runner.model)
        model = getattr(model, "backbone", model)  # a task model measures its VLP backbone
        device, precision = model_device(model), job_precision(runner)
        batch = next(iter(runner.test_dataloader))
        images, text_ids, text_mask = to_device((batch["images"], batch["text_ids"], batch["text_mask"]), device)
        if images.dim() == 5:  # one pair per image of a multi-image sample (NLVR2)
            images = images[:, 0]
        was_training = model.training
        model.eval()
        macs, report = pair_macs(model, text_len=text_ids.shape[1])  # fp32 on the model's device: shapes decide

        def pair():
            with autocast(device, precision):
                return model.encode_pair(images, text_ids, text_mask)

        times = time_interleaved({"pair": pair}, repeats=self.repeats, warmup=self.warmup, device=device)["pair"]
        memory = {"peak_mb": None}  # the CPU's is the profiler's business (copa-bench profile)
        if device.type == "cuda":
            with torch.inference_mode(), peak_memory(device) as memory:
                pair()
        model.train(was_training)
        stats = summarize([images.shape[0] / t for t in times])
        record = {
            "params_m": parameter_count(model) / 1e6,
            "gmacs": macs["total"] / 1e9,
            **{f"gmacs_{part}": value / 1e9 for part, value in macs.items() if part != "total"},
            "pairs_per_s": stats.median,
            "pairs_per_s_iqr": stats.iqr,
            "peak_mem_mb": memory["peak_mb"],
            "batch": int(images.shape[0]),
            "image_size": int(images.shape[-1]),
            "text_len": int(text_ids.shape[1]),
            "device": device_name(device),
            "precision": precision,
            "threads": torch.get_num_threads(),
            "unsupported_ops": report.unsupported,
            "machine": machine(device),
        }
        for key, value in record.items():
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                runner.message_hub.update_info(f"efficiency/{key}", value)
        with open(os.path.join(runner.log_dir, "efficiency.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        runner.logger.info(f"efficiency: {record['gmacs']:.3f} GMACs per pair, {record['pairs_per_s']:.1f} pairs/s "
                           f"at batch {record['batch']} on {record['device']} in {precision} "
                           f"({record['threads']} threads)")


def _random_state() -> dict:
    """torch's, numpy's and Python's global random state as tensors and plain data (safe to load)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(torch=torch.get_rng_state(), numpy=[torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
                 python=list(random.getstate()))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingRandomStateHook(Hook):
    """A run resumed from a checkpoint draws the same random numbers (MLM masks, ITM negatives, dropout) as
    the uninterrupted run: the random state after each training iteration is kept and restored before the
    next one, so whatever runs between iterations (validation, a data loader restarting, the resume's
    skip through the data) leaves training's draws alone, and it is saved in checkpoints and restored on
    resume. copa-bench's Runner installs it in every training job."""

    priority = "VERY_HIGH"  # capture before the checkpoint hook saves in after_train_iter

    def __init__(self) -> None:
        self._state: dict | None = None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._state = _random_state()

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self._state is not None:
            _set_random_state(self._state)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._state is not None:
            checkpoint["random_state"] = self._state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, "_resume", False) and "random_state" in checkpoint:
            self._state = checkpoint["random_state"]


WARMUP_SCHEDULES = ("cosine", "linear")
EVIT_SHRINK_BEGIN = 10 / 300
"""EViT's published recipe (youweiliang/evit ``run_code.sh``: ``--epochs 300 --shrink_start_epoch 10
--shrink_epochs 100``) as fractions of training: the keep rate stays at 1 for the first 10 of 300 epochs ..."""
EVIT_SHRINK_LENGTH = 100 / 300
"""... then falls to the target over the next 100 (``helpers.adjust_keep_rate``: a half cosine, per iteration)."""


def warmup_keep_ratio(it: int, target: float, begin: int, length: int, start: float = 1.0,
                      schedule: str = "cosine") -> float:
    """The keep ratio at training iteration ``it`` (0-based): ``start`` before iteration ``begin``, the target
    from ``begin + length`` on, and in between ``target + (start - target) * (cos(pi * t) + 1) / 2`` with
    ``t = (it - begin) / length`` (EViT's ``adjust_keep_rate``) or the straight line for ``'linear'``."""
    if schedule not in WARMUP_SCHEDULES:
        raise ValueError(f"schedule must be one of {WARMUP_SCHEDULES}, got {schedule!r}")
    if it < begin:
        return start
    if it >= begin + length:
        return target
    t = (it - begin) / length
    weight = (math.cos(math.pi * t) + 1) / 2 if schedule == "cosine" else 1 - t
    return target + (start - target) * weight


def patch_reducers(model: torch.nn.Module) -> list:
    """Every :class:`~copa.reducers.PatchReducer` in ``model`` (wrappers and task models included), once each."""
    from copa.reducers import PatchReducer

    seen, found = set(), []
    for module in model.modules():
        if isinstance(module, PatchReducer) and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


@HOOKS.register_module()
class KeepRateWarmupHook(Hook):
    """Keep-rate warm-up (EViT's "gradual shrinking of inattentive tokens") for any model with patch reducers.

    Before every training iteration each selected reducer's ``keep_ratio`` is set from the fraction of training
    done: ``start`` (1.0: nothing pruned) until ``begin``, then a cosine (or linear) fall to the reducer's own
    configured ratio (its *target*) over ``length``, the target after that. Validation and testing always run at
    the target (restored in ``before_val``/``before_test`` and at the end of training), and so do checkpoints'
    consumers: ``keep_ratio`` is a plain attribute, never saved, so a model built from its config is at the target.

    ``begin`` and ``length`` are fractions of the run's ``max_iters`` (default: EViT's published 10/300 and
    100/300 of its epochs), or iteration counts when ``begin_iters``/``length_iters`` are given. A resumed run
    picks up the schedule from ``runner.iter``. ``reducers`` selects by class name which reducers warm up
    (default: EViT's ``CLSAttentionReducer`` only) or ``'all'``; a model with none selected, or with no
    reducers at all (ALBEF, ViLT), is left alone. The ratio in use is logged as ``train/keep_ratio``.
    """

    priority = "HIGH"  # set the ratios before the other hooks' before_train_iter (and any forward) run

    def __init__(self, start: float = 1.0, begin: float = EVIT_SHRINK_BEGIN, length: float = EVIT_SHRINK_LENGTH,
                 begin_iters: int | None = None, length_iters: int | None = None, schedule: str = "cosine",
                 reducers: str | list[str] | tuple[str, ...] = ("CLSAttentionReducer",)) -> None:
        if schedule not in WARMUP_SCHEDULES:
            raise ValueError(f"schedule must be one of {WARMUP_SCHEDULES}, got {schedule!r}")
        if not 0.0 < start <= 1.0:
            raise ValueError(f"start must be in (0, 1], got {start}")
        if not (0.0 <= begin and 0.0 <= length and begin + length <= 1.0):
            raise ValueError(f"begin and length are fractions of training: need 0 <= begin, length and "
                             f"begin + length <= 1, got {begin}, {length}")
        for name, value in (("begin_iters", begin_iters), ("length_iters", length_iters)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if reducers != "all" and (isinstance(reducers, str) or not all(isinstance(r, str) for r in reducers)):
            raise ValueError(f"reducers must be 'all' or a list of reducer class names, got {reducers!r}")
        self.start, self.begin, self.length, self.schedule = start, begin, length, schedule
        self.begin_iters, self.length_iters = begin_iters, length_iters
        self.reducers = reducers if reducers == "all" else tuple(reducers)
        self._targets: list[tuple] = []  # (reducer, its configured keep ratio)
        self._span = (0, 0)

    def _select(self, model) -> list:
        return [r for r in patch_reducers(model) if self.reducers == "all" or type(r).__name__ in self.reducers]

    def span(self, max_iters: int) -> tuple[int, int]:
        """``(begin, length)`` in iterations for a run of ``max_iters``."""
        begin = self.begin_iters if self.begin_iters is not None else round(self.begin * max_iters)
        length = self.length_iters if self.length_iters is not None else round(self.length * max_iters)
        return begin, length

    def ratio(self, it: int, target: float) -> float:
        return warmup_keep_ratio(it, target, *self._span, start=max(self.start, target), schedule=self.schedule)

    def before_train(self, runner) -> None:
        if not self._targets:  # a second train() in one process keeps the first one's targets
            self._targets = [(r, r.keep_ratio) for r in self._select(runner.model)]
        self._span = self.span(runner.max_iters)
        if self._targets:
            begin, length = self._span
            runner.logger.info(f"keep-rate warm-up: {len(self._targets)} reducers from {self.start} to their "
                               f"targets ({sorted({t for _, t in self._targets})}), {self.schedule} over iterations "
                               f"[{begin}, {begin + length}) of {runner.max_iters}")

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        for reducer, target in self._targets:
            reducer.keep_ratio = self.ratio(runner.iter, target)
        if self._targets:
            runner.message_hub.update_scalar("train/keep_ratio", self._targets[0][0].keep_ratio)

    def restore(self) -> None:
        """Every warmed-up reducer back at its target."""
        for reducer, target in self._targets:
            reducer.keep_ratio = target

    def before_val(self, runner) -> None:
        self.restore()

    def before_test(self, runner) -> None:
        self.restore()

    def after_train(self, runner) -> None:
        self.restore()


ALBEF_DISTILL_WARMUP = 1 / 30
"""ALBEF ramps ``alpha`` from 0 over its first epoch of 30 (``alpha * min(1, i / len(data_loader))``)."""


@HOOKS.register_module()
class DistillationWarmupHook(Hook):
    """ALBEF's momentum-distillation warm-up: before every training iteration each model with a momentum model
    (``VLPModel(momentum=...)``) gets ``distill_ramp = min(1, iter / (fraction * max_iters))``, so its soft targets
    weigh ``distill_alpha * distill_ramp``. ``fraction`` of the run (default ALBEF's 1 of 30 epochs) rather than
    one epoch, because a tiny run may be a single epoch. Logged as ``train/distill_ramp``."""

    priority = "HIGH"

    def __init__(self, fraction: float = ALBEF_DISTILL_WARMUP) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.fraction = fraction

    @staticmethod
    def _distilling(model: torch.nn.Module) -> list:
        return [m for m in model.modules() if getattr(m, "momentum_model", None) is not None]

    def ramp(self, it: int, max_iters: int) -> float:
        span = self.fraction * max_iters
        return 1.0 if span <= 0 else min(1.0, it / span)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        models = self._distilling(runner.model)
        for model in models:
            model.distill_ramp = self.ramp(runner.iter, runner.max_iters)
        if models:
            runner.message_hub.update_scalar("train/distill_ramp", models[0].distill_ramp)

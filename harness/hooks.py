"""mmengine hooks: efficiency beside accuracy in every test run; training random state that survives a resume."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from harness.device import autocast, device_name, model_device, peak_memory, to_device
from harness.profiling.efficiency import pair_macs
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
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
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

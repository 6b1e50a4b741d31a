"""mmengine hooks that put efficiency beside accuracy in every test run."""

from __future__ import annotations

import json
import os

import torch
from mmengine.hooks import Hook

from harness.profiling.efficiency import pair_macs
from harness.profiling.speed import machine, summarize, time_interleaved
from harness.registry import HOOKS


@HOOKS.register_module()
class EfficiencyHook(Hook):
    """At the end of testing, measure the model on the task's own first test batch: multiply-adds of one
    pair at the batch's image size and padded text length, parameters, and the median time of the
    pair forward over the batch. The figures go to ``efficiency.json`` in the run's log directory and to
    the message hub (``efficiency/*``), where the results store picks them up."""

    priority = "VERY_LOW"

    def __init__(self, repeats: int = 5, warmup: int = 1) -> None:
        self.repeats = repeats
        self.warmup = warmup

    def after_test(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model = getattr(model, "backbone", model)  # a task model measures its VLP backbone
        batch = next(iter(runner.test_dataloader))
        images, text_ids, text_mask = batch["images"], batch["text_ids"], batch["text_mask"]
        if images.dim() == 5:  # one pair per image of a multi-image sample (NLVR2)
            images = images[:, 0]
        was_training = model.training
        model.eval()
        macs, report = pair_macs(model, text_len=text_ids.shape[1])
        times = time_interleaved({"pair": lambda: model.encode_pair(images, text_ids, text_mask)},
                                 repeats=self.repeats, warmup=self.warmup)["pair"]
        model.train(was_training)
        stats = summarize([images.shape[0] / t for t in times])
        record = {
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gmacs": macs["total"] / 1e9,
            **{f"gmacs_{part}": value / 1e9 for part, value in macs.items() if part != "total"},
            "pairs_per_s": stats.median,
            "pairs_per_s_iqr": stats.iqr,
            "batch": int(images.shape[0]),
            "image_size": int(images.shape[-1]),
            "text_len": int(text_ids.shape[1]),
            "unsupported_ops": report.unsupported,
            "machine": machine(),
        }
        for key, value in record.items():
            if isinstance(value, int | float):
                runner.message_hub.update_info(f"efficiency/{key}", value)
        with open(os.path.join(runner.log_dir, "efficiency.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        runner.logger.info(f"efficiency: {record['gmacs']:.3f} GMACs per pair, {record['pairs_per_s']:.1f} pairs/s "
                           f"at batch {record['batch']} ({torch.get_num_threads()} threads)")

"""Classification accuracy (NLVR2 and any task that predicts one class per sample)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from mmengine.evaluator import BaseMetric

from harness.registry import METRICS


def _plain(value: object) -> object:
    """A tensor as a Python scalar, so rows gather and compare cheaply across processes."""
    return value.detach().cpu().item() if torch.is_tensor(value) else value


@METRICS.register_module()
class AccuracyMetric(BaseMetric):
    """``acc``: percent of samples whose ``pred`` equals ``label``.

    Row per sample: ``pred`` and ``label`` (ints), optional ``id``. Rows sharing an ``id`` (a distributed
    sampler pads with duplicates) count once; rows without an ``id`` all count.
    """

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            row = {"pred": int(_plain(sample["pred"])), "label": int(_plain(sample["label"]))}
            if sample.get("id") is not None:
                row["id"] = _plain(sample["id"])
            self.results.append(row)

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        seen: set[Hashable] = set()
        correct = total = 0
        for row in results:
            if "id" in row:
                if row["id"] in seen:
                    continue
                seen.add(row["id"])
            correct += row["pred"] == row["label"]
            total += 1
        return {"acc": 100.0 * correct / total if total else float("nan")}

"""Mean average precision of multi-label classification (the vision pre-training's validation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from harness.registry import METRICS


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one class: mean over the positives of the precision at their rank (ties ranked pessimistically,
    positives after negatives of equal score). NaN without positives."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return float("nan")
    order = np.lexsort((labels, -scores))  # descending score; within a tie, negatives first
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


@METRICS.register_module()
class MultiLabelMetric(BaseMetric):
    """``mAP``: percent, mean over the classes that have a positive of the per-class average precision.

    Row per image: ``scores`` (C floats) and ``labels`` (C, 0/1).
    """

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append({k: torch.as_tensor(sample[k]).detach().cpu().float() for k in ("scores", "labels")})

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        scores = torch.stack([r["scores"] for r in results]).numpy()
        labels = torch.stack([r["labels"] for r in results]).numpy()
        aps = [average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])]
        return {"mAP": 100.0 * float(np.nanmean(aps))}

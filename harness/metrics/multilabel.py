"""The vision pre-training's validation: mean average precision of the multi-label [CLS] head and the accuracy of
the per-object heads."""

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
    """``mAP``: percent, mean over the classes that have a positive of the per-class average precision; and, when
    rows carry per-object predictions, ``object_category_acc`` and ``object_value_acc``: percent of the objects
    whose category (attribute value) is named right, over the objects that have one (target >= 0).

    Row per image: ``scores`` (C floats) and ``labels`` (C, 0/1); optionally ``object_pred`` and
    ``object_targets`` ``(objects, 2)`` (category index, attribute value index).
    """

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            row = {k: torch.as_tensor(sample[k]).detach().cpu().float() for k in ("scores", "labels")}
            if "object_pred" in sample:
                row |= {k: torch.as_tensor(sample[k]).detach().cpu().long().reshape(-1, 2)
                        for k in ("object_pred", "object_targets")}
            self.results.append(row)

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        scores = torch.stack([r["scores"] for r in results]).numpy()
        labels = torch.stack([r["labels"] for r in results]).numpy()
        aps = [average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])]
        metrics = {"mAP": 100.0 * float(np.nanmean(aps))}
        if results and all("object_pred" in r for r in results):
            pred = torch.cat([r["object_pred"] for r in results])
            target = torch.cat([r["object_targets"] for r in results])
            for column, name in enumerate(("category", "value")):
                known = target[:, column] >= 0
                if bool(known.any()):
                    hits = pred[known, column] == target[known, column]
                    metrics[f"object_{name}_acc"] = 100.0 * hits.float().mean().item()
        return metrics

"""How well a token reducer keeps the patches that cover objects (patch-level detection of object patches)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from harness.metrics.pretrain import roc_auc
from harness.registry import METRICS


def _flat(value: object) -> np.ndarray:
    """A 1-D numpy copy of a tensor or array (bf16 tensors widened first, since numpy lacks bf16)."""
    if torch.is_tensor(value):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    return np.asarray(value).reshape(-1)


@METRICS.register_module()
class PatchDetectionMetric(BaseMetric):
    """Kept patches against the object-to-patch labels, pooled over all patches of all images.

    Row per image: ``patch_scores`` (N floats), ``patch_labels`` (N, 0/1), ``kept`` (N bools: what the
    reducer kept). ``patch_precision``: percent of kept patches that are labelled; ``patch_recall``: percent
    of labelled patches kept; ``patch_f1``: their harmonic mean (2TP / (2TP + FP + FN)), all in percent;
    ``patch_auc``: ROC AUC of the scores against the labels in [0, 1]. Images without any labelled patch
    still count: their kept patches are false positives. A ratio whose denominator is empty (nothing kept,
    nothing labelled, a single class for the AUC) is NaN.
    """

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            scores = _flat(sample["patch_scores"]).astype(np.float32)
            labels = _flat(sample["patch_labels"]).astype(bool)
            kept = _flat(sample["kept"]).astype(bool)
            if not scores.size == labels.size == kept.size:
                raise ValueError(f"patch_scores, patch_labels, kept sizes differ: {scores.size}, "
                                 f"{labels.size}, {kept.size}")
            self.results.append({"patch_scores": scores, "patch_labels": labels, "kept": kept})

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        if not results:
            return dict.fromkeys(("patch_precision", "patch_recall", "patch_f1", "patch_auc"), float("nan"))
        scores = np.concatenate([r["patch_scores"] for r in results])
        labels = np.concatenate([r["patch_labels"] for r in results])
        kept = np.concatenate([r["kept"] for r in results])
        tp = int((kept & labels).sum())
        fp = int((kept & ~labels).sum())
        fn = int((~kept & labels).sum())
        return {
            "patch_precision": _percent(tp, tp + fp),
            "patch_recall": _percent(tp, tp + fn),
            "patch_f1": _percent(2 * tp, 2 * tp + fp + fn),
            "patch_auc": roc_auc(scores, labels),
        }


def _percent(numerator: int, denominator: int) -> float:
    """numerator / denominator in percent, NaN when there is nothing to divide by."""
    return 100.0 * numerator / denominator if denominator else float("nan")

"""Pre-training validation metric and the ROC AUC it shares with the patch-detection metric."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from harness.registry import METRICS


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (Mann-Whitney U), ties counted as half.

    NaN when only one class is present: the AUC is undefined, not 0.5.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank within each group of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@METRICS.register_module()
class PretrainMetric(BaseMetric):
    """Validation of pre-training on held-out captions.

    ``itm_acc``: image-text matching accuracy, balanced over true pairs (P(match) > 0.5) and mismatched
    pairs (< 0.5); ``itm_auc``: ROC AUC of P(match) of true against mismatched pairs (threshold-free: ITM
    trains on one true pair per two mismatched ones, so its threshold drifts); ``itc_r1``: zero-shot
    text-to-image recall@1 of the ITC embeddings over every distinct val image (dual-stream models);
    ``patch_auc``: ROC AUC of the first reduction point's patch scores against the object-to-patch labels,
    pooled over all val patches (models whose reducer scores patches). Chance: 0.5, 0.5, 1 / number of
    images, 0.5.
    """

    default_prefix = None  # the Runner already files validation metrics under "val/"

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        image_ids = data_batch["image_ids"].tolist()
        for image_id, out in zip(image_ids, data_samples, strict=True):
            row = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in out.items()}
            row["image_id"] = image_id
            self.results.append(row)

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        pos_acc = float((torch.stack([r["itm_score"] for r in results]) > 0.5).float().mean())
        negatives = [r["itm_neg_score"] for r in results if "itm_neg_score" in r]
        neg_acc = float((torch.stack(negatives) < 0.5).float().mean()) if negatives else None
        metrics = {"itm_acc": pos_acc if neg_acc is None else 0.5 * (pos_acc + neg_acc)}
        if negatives:
            scores = torch.cat([torch.stack([r["itm_score"] for r in results]), torch.stack(negatives)])
            labels = np.r_[np.ones(len(results)), np.zeros(len(negatives))]
            metrics["itm_auc"] = roc_auc(scores.float().numpy(), labels)
        if all("image_embed" in r for r in results):
            metrics["itc_r1"] = text_to_image_recall_at_1(results)
        scored = [r for r in results if "patch_scores" in r]
        if scored:
            scores = torch.cat([r["patch_scores"].reshape(-1) for r in scored]).float().numpy()
            labels = torch.cat([r["patch_labels"].reshape(-1) for r in scored]).numpy()
            metrics["patch_auc"] = roc_auc(scores, labels)
        return metrics


def text_to_image_recall_at_1(results: list[dict]) -> float:
    """Share of captions whose most similar image (ITC cosine, over distinct images) is their own."""
    gallery: dict[int, torch.Tensor] = {}
    for r in results:
        gallery.setdefault(r["image_id"], r["image_embed"])
    ids = list(gallery)
    images = torch.stack([gallery[i] for i in ids])
    texts = torch.stack([r["text_embed"] for r in results])
    best = (texts @ images.t()).argmax(dim=1)
    column = {image_id: i for i, image_id in enumerate(ids)}
    truth = torch.tensor([column[r["image_id"]] for r in results])
    return float((best == truth).float().mean())

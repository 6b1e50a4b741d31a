"""Image-text retrieval recall (Flickr30K / COCO Karpathy test protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from harness.registry import METRICS

RECALL_AT = (1, 5, 10)


def pessimistic_rank(scores: np.ndarray | torch.Tensor, targets: Sequence[int]) -> int:
    """1-based rank of the best-scored target among the whole gallery, ties counted against the query.

    rank = 1 + number of non-target items scoring >= the best target. A model that gives every item the
    same score (a collapsed embedding) thus gets the worst rank rather than a lucky R@1 from index order.
    NaN scores count as -inf: they never beat anything.
    """
    if torch.is_tensor(scores):
        scores = scores.detach().float().cpu().numpy()
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64).ravel(), nan=-np.inf)
    targets = np.unique(np.asarray(list(targets), dtype=np.int64))
    if targets.size == 0:
        raise ValueError("a retrieval query has no target in the gallery")
    if targets.min() < 0 or targets.max() >= scores.size:
        raise ValueError(f"target indices {targets.tolist()} outside a gallery of {scores.size}")
    is_target = np.zeros(scores.size, dtype=bool)
    is_target[targets] = True
    best = scores[is_target].max()
    return int((scores[~is_target] >= best).sum()) + 1


@METRICS.register_module()
class RetrievalMetric(BaseMetric):
    """Recall@{1,5,10} in percent for both directions over the whole gallery, and their mean.

    Row per query: ``query`` ('text' or 'image'), ``index``, ``scores`` over the whole gallery of the other
    modality, ``targets`` (correct gallery indices), optional ``k`` (re-ranking shortlist size).
    ``txt_r*``: image queries retrieving texts; ``img_r*``: text queries retrieving images; ``r_mean``: mean
    of the six, only when both directions are present. A direction without queries has no keys. Ranks use
    :func:`pessimistic_rank` (ties count against the query). A query seen twice (a distributed sampler pads
    with duplicates) counts once. ``rerank_k`` reports the shortlist size when rows carry one.

    The rank is taken in ``process`` because each row already holds the whole gallery: gathering ranks
    instead of 25k x 5k scores keeps the cross-process collection small.
    """

    default_prefix = None

    def process(self, data_batch: dict | None, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample["query"] not in ("text", "image"):
                raise ValueError(f"retrieval query must be 'text' or 'image', got {sample['query']!r}")
            targets = sample["targets"]
            targets = targets.tolist() if torch.is_tensor(targets) else [int(t) for t in targets]
            row = {
                "query": sample["query"],
                "index": int(sample["index"]),
                "rank": pessimistic_rank(sample["scores"], targets),
            }
            if sample.get("k") is not None:
                row["k"] = int(sample["k"])
            self.results.append(row)

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        unique: dict[tuple[str, int], dict] = {}
        for row in results:
            unique.setdefault((row["query"], row["index"]), row)
        metrics: dict[str, float] = {}
        for query, prefix in (("image", "txt"), ("text", "img")):
            ranks = np.array([r["rank"] for r in unique.values() if r["query"] == query])
            if ranks.size:
                for k in RECALL_AT:
                    metrics[f"{prefix}_r{k}"] = float(100.0 * (ranks <= k).mean())
        if len(metrics) == 2 * len(RECALL_AT):
            metrics["r_mean"] = float(np.mean(list(metrics.values())))
        shortlist = [r["k"] for r in unique.values() if "k" in r]
        if shortlist:
            metrics["rerank_k"] = float(max(shortlist))
        return metrics

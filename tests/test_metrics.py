"""Metrics against independent computations."""

import itertools

import numpy as np
import pytest

from harness.metrics import roc_auc


def pairwise_auc(scores, labels):
    """AUC by its definition: P(score of a positive > score of a negative), ties counting half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed_cases():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    # positives 0.8 and 0.4; negatives 0.6 and 0.4: wins 1 + 1 + 0 + 0.5 = 2.5 of 4
    assert roc_auc([0.8, 0.4, 0.6, 0.4], [1, 1, 0, 0]) == pytest.approx(0.625)
    assert np.isnan(roc_auc([0.3, 0.4], [1, 1]))


def test_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 6, size=40).astype(float)  # many ties
        labels = rng.random(40) < 0.3
        if labels.any() and (~labels).any():
            assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels))


def test_pretrain_metric_against_hand_computed_values():
    import torch

    from harness.metrics import PretrainMetric

    metric = PretrainMetric()
    batch = {"image_ids": torch.tensor([1, 1, 2, 3])}
    e = torch.eye(3)
    outputs = [
        # captions 0 and 1 describe image 1, caption 2 image 2, caption 3 image 3
        dict(itm_score=torch.tensor(0.9), itm_neg_score=torch.tensor(0.2), image_embed=e[0], text_embed=e[0],
             patch_scores=torch.tensor([0.9, 0.1]), patch_labels=torch.tensor([1.0, 0.0])),
        dict(itm_score=torch.tensor(0.4), image_embed=e[0], text_embed=e[1],
             patch_scores=torch.tensor([0.2, 0.8]), patch_labels=torch.tensor([1.0, 0.0])),
        dict(itm_score=torch.tensor(0.7), itm_neg_score=torch.tensor(0.6), image_embed=e[1], text_embed=e[1],
             patch_scores=torch.tensor([0.5, 0.5]), patch_labels=torch.tensor([0.0, 1.0])),
        dict(itm_score=torch.tensor(0.8), itm_neg_score=torch.tensor(0.1), image_embed=e[2], text_embed=e[2],
             patch_scores=torch.tensor([0.3, 0.7]), patch_labels=torch.tensor([0.0, 1.0])),
    ]
    metric.process(batch, outputs)
    result = metric.compute_metrics(metric.results)
    # true pairs above 0.5: 3 of 4; mismatched below 0.5: 2 of 3
    assert result["itm_acc"] == pytest.approx(0.5 * (3 / 4 + 2 / 3))
    # caption 1 (text e1) is nearest to image 2, not its own image 1; the others are right
    assert result["itc_r1"] == pytest.approx(3 / 4)
    scores = [0.9, 0.1, 0.2, 0.8, 0.5, 0.5, 0.3, 0.7]
    labels = [1, 0, 1, 0, 0, 1, 0, 1]
    assert result["patch_auc"] == pytest.approx(pairwise_auc(scores, labels))

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

"""Chance levels (harness/chance.py) against independent computations: an exhaustive enumeration of random
rankings for retrieval; the VQA and grounding floors recomputed from the benchmark's raw JSON files; each
standard error against a simulation of the predictor it describes."""

from __future__ import annotations

import itertools
import json
import math
import statistics

import numpy as np
import pytest

from harness.chance import (
    _retrieval,
    auc_null_se,
    binomial_se,
    chance_config,
    chance_metrics,
    random_ranking_se,
)


def test_retrieval_closed_form_equals_every_ranking_enumerated():
    captions = [1, 2, 3]  # image i has captions[i] of the 6 texts
    owner = [i for i, m in enumerate(captions) for _ in range(m)]
    got = _retrieval([{"texts": ["t"] * m} for m in captions])
    orders = list(itertools.permutations(range(len(owner))))
    for k in (1, 5, 10):
        hits = [sum(min(order.index(t) for t in range(len(owner)) if owner[t] == i) < k for order in orders)
                for i in range(len(captions))]
        assert got[f"txt_r{k}"] == pytest.approx(100 * sum(h / len(orders) for h in hits) / len(captions))
        image_orders = list(itertools.permutations(range(len(captions))))
        found = sum(order.index(i) < k for order in image_orders for i in range(len(captions)))
        assert got[f"img_r{k}"] == pytest.approx(100 * found / (len(image_orders) * len(captions)))


def test_vqa_floor_is_the_most_frequent_training_answer_per_question_type(tiny_benchmark):
    """The answers are picked from the raw annotations here; the VQA metric (tested on its own in
    test_task_metrics.py) scores them."""
    from harness.metrics.vqa import VQAMetric

    train = json.loads((tiny_benchmark / "vqa" / "v2_synth_train_annotations.json").read_text())["annotations"]
    test = json.loads((tiny_benchmark / "vqa" / "v2_synth_test_annotations.json").read_text())["annotations"][:200]
    counts: dict[tuple[str, str], int] = {}
    for ann in train:
        key = (ann["question_type"], ann["multiple_choice_answer"])
        counts[key] = counts.get(key, 0) + 1
    prior = {}
    for (qtype, answer), _ in sorted(counts.items(), key=lambda item: item[1]):
        prior[qtype] = answer  # the most frequent answer of a type is written last
    metric = VQAMetric()
    metric.process(None, [dict(question_id=a["question_id"], pred_answer=prior[a["question_type"]],
                               answer_type=a["answer_type"], answers=[x["answer"] for x in a["answers"]])
                          for a in test])
    got = chance_metrics(chance_config("vqa", str(tiny_benchmark), 200))
    assert {prior["is there a"], prior["is the"]} <= {"yes", "no"} and len(set(prior.values())) >= 4
    expected = metric.compute_metrics(metric.results)
    assert {k: v for k, v in got.items() if k != "vqa_acc_se"} == pytest.approx(expected)
    p = expected["vqa_acc"] / 100
    assert got["vqa_acc_se"] == pytest.approx(100 * math.sqrt(p * (1 - p) / 200))


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def test_grounding_floor_is_the_mean_training_box(tiny_benchmark):
    refs = json.loads((tiny_benchmark / "refcoco" / "refs(synth).json").read_text())

    def expressions(split: str) -> list[tuple[list[float], int, int]]:
        coco = json.loads((tiny_benchmark / "annotations" / f"instances_{split}.json").read_text())
        box = {a["id"]: a["bbox"] for a in coco["annotations"]}
        size = {i["id"]: (i["width"], i["height"]) for i in coco["images"]}
        return [(box[r["ann_id"]], *size[r["image_id"]]) for r in refs if r["split"] == split for _ in r["sentences"]]

    train = expressions("train")
    mean = [sum(b[i] / (w if i % 2 == 0 else h) for b, w, h in train) / len(train) for i in range(4)]
    test = expressions("test")[:100]
    ious = [_iou([mean[i] * (w if i % 2 == 0 else h) for i in range(4)], b) for b, w, h in test]
    got = chance_metrics(chance_config("grounding", str(tiny_benchmark), 100))
    assert got["miou"] == pytest.approx(100 * sum(ious) / len(ious))
    assert got["acc_iou50"] == pytest.approx(100 * sum(iou >= 0.5 for iou in ious) / len(ious))


def test_balanced_labels_and_uninformative_scores(tiny_benchmark):
    assert chance_metrics(chance_config("nlvr2", str(tiny_benchmark)))["acc"] == 50.0
    patch = chance_metrics(chance_config("patch_detection", str(tiny_benchmark)))
    assert patch["patch_auc"] == 0.5 and patch["patch_auc_se"] == pytest.approx(auc_null_se(500, 500))  # per image
    pretrain = chance_metrics(chance_config("pretrain", str(tiny_benchmark), 250))
    assert pretrain["itc_r1"] == 1 / 250 and pretrain["itm_auc"] == 0.5
    assert pretrain["itm_auc_se"] == pytest.approx(auc_null_se(250, 250))  # one mismatched pair per caption


def _brute_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_auc_standard_error_is_the_spread_of_uninformative_scores():
    rng = np.random.default_rng(0)
    aucs = [_brute_auc(rng.random(30), rng.random(50)) for _ in range(4000)]
    assert statistics.stdev(aucs) == pytest.approx(auc_null_se(30, 50), rel=0.05)


def test_binomial_standard_error_is_the_spread_of_a_coin_of_that_rate():
    rng = np.random.default_rng(0)
    accuracies = [100 * rng.binomial(120, 0.3) / 120 for _ in range(4000)]
    assert statistics.stdev(accuracies) == pytest.approx(binomial_se(30.0, 120), rel=0.05)


def test_retrieval_standard_error_is_the_spread_of_random_score_matrices():
    """R-mean of uniformly random image x text similarities, ranked both ways (by sorting here, by counting in
    harness/chance.py), over many draws: what a model that has learned nothing scores, and its spread."""
    captions = [1, 2, 3, 5, 1, 2, 4, 3, 2, 1, 5, 2]
    owner = np.array([i for i, m in enumerate(captions) for _ in range(m)])
    rng = np.random.default_rng(0)
    means = []
    for _ in range(3000):
        sims = rng.random((len(captions), len(owner)))
        text_order = np.argsort(-sims, axis=1)  # each image's texts, best first
        first = np.array([np.flatnonzero(owner[text_order[i]] == i)[0] for i in range(len(captions))])
        image_rank = (sims > sims[owner, np.arange(len(owner))]).sum(axis=0)  # each text's own image's rank
        recalls = [100 * (first < k).mean() for k in (1, 5, 10)] + [100 * (image_rank < k).mean() for k in (1, 5, 10)]
        means.append(sum(recalls) / 6)
    got = _retrieval([{"texts": ["t"] * m} for m in captions])
    assert statistics.fmean(means) == pytest.approx(got["r_mean"], rel=0.02)
    assert statistics.stdev(means) == pytest.approx(random_ranking_se(captions, draws=3000, seed=1), rel=0.06)
    assert got["r_mean_se"] == pytest.approx(statistics.stdev(means), rel=0.15)  # its default 200 draws


def test_caption_standard_error_is_the_per_image_spread_of_the_majority_caption(tiny_benchmark):
    from harness.chance import test_samples
    from harness.metrics.caption import CaptionMetric, cider_per_image

    cfg = chance_config("caption", str(tiny_benchmark), 60)
    got = chance_metrics(cfg)
    caption = json.loads((tiny_benchmark / "annotations" / "captions_train.json").read_text())
    texts = [a["caption"] for a in caption["annotations"]]
    majority = max(sorted(set(texts)), key=texts.count)
    rows = [dict(image_id=s["image_id"], caption=majority, references=s["texts"]) for s in test_samples(cfg)]
    per_image = cider_per_image(rows)
    metric = CaptionMetric()
    metric.process(None, rows)
    assert 100 * statistics.fmean(per_image) == pytest.approx(metric.compute_metrics(metric.results)["cider"])
    assert got["cider"] == pytest.approx(100 * statistics.fmean(per_image))
    assert got["cider_se"] == pytest.approx(100 * statistics.stdev(per_image) / math.sqrt(60))

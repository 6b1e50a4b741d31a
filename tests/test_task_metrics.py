"""Downstream-task metrics against independent computations: hand-computed values, brute force written
differently from the implementation, and pycocoevalcap's scorers called directly."""

from __future__ import annotations

import itertools
import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.metrics import (
    AccuracyMetric,
    CaptionMetric,
    GroundingMetric,
    PatchDetectionMetric,
    RetrievalMetric,
    VQAMetric,
    box_iou_xywh,
    normalize_answer,
    tokenize_caption,
)
from harness.registry import METRICS


def run_metric(metric, rows, batch_size: int = 3) -> dict[str, float]:
    """Feed rows through ``process`` in batches and evaluate in this one process."""
    for start in range(0, len(rows), batch_size):
        metric.process({}, rows[start:start + batch_size])
    return metric.evaluate(len(metric.results))


def test_every_metric_is_registered_without_prefix():
    for name in ("RetrievalMetric", "VQAMetric", "AccuracyMetric", "CaptionMetric", "GroundingMetric",
                 "PatchDetectionMetric", "PretrainMetric"):
        metric = METRICS.build({"type": name})
        assert metric.prefix is None


# ----------------------------------------------------------------------------------------------- retrieval


def test_retrieval_hand_built_ranks():
    rows = [
        # image queries over 12 texts
        {"query": "image", "index": 0, "scores": torch.tensor([.9, .8] + [.1] * 10), "targets": [0, 1]},  # rank 1
        {"query": "image", "index": 1, "scores": torch.tensor([.9, .8, .7] + [.1] * 9), "targets": [2, 5]},  # 3
        {"query": "image", "index": 2, "scores": torch.arange(12.0), "targets": [5]},  # 7 higher: rank 7
        {"query": "image", "index": 3, "scores": torch.arange(12.0), "targets": [0]},  # rank 12
        # text queries over 4 images
        {"query": "text", "index": 0, "scores": np.array([.1, .9, .3, .2]), "targets": [1]},  # rank 1
        {"query": "text", "index": 1, "scores": np.array([.1, .9, .3, .2]), "targets": [0]},  # rank 4
    ]
    result = run_metric(RetrievalMetric(), rows)
    assert result["txt_r1"] == pytest.approx(25.0)
    assert result["txt_r5"] == pytest.approx(50.0)
    assert result["txt_r10"] == pytest.approx(75.0)
    assert result["img_r1"] == pytest.approx(50.0)
    assert result["img_r5"] == result["img_r10"] == pytest.approx(100.0)
    assert result["r_mean"] == pytest.approx((25 + 50 + 75 + 50 + 100 + 100) / 6)
    assert "rerank_k" not in result


def test_retrieval_ties_count_against_the_query():
    tie = {"query": "text", "index": 0, "scores": torch.tensor([.5, .5, .1]), "targets": [0]}
    result = run_metric(RetrievalMetric(), [tie])
    assert result["img_r1"] == 0.0 and result["img_r5"] == 100.0
    flat = {"query": "text", "index": 0, "scores": torch.zeros(20), "targets": [0]}  # collapsed model: rank 20
    assert run_metric(RetrievalMetric(), [flat])["img_r10"] == 0.0
    two_targets_tied = {"query": "text", "index": 0, "scores": torch.tensor([.5, .5, .1]), "targets": [0, 1]}
    assert run_metric(RetrievalMetric(), [two_targets_tied])["img_r1"] == 100.0


def test_retrieval_duplicates_missing_direction_and_rerank_k():
    hit = {"query": "text", "index": 0, "scores": torch.tensor([.9, .1]), "targets": [0], "k": 16}
    miss = {"query": "text", "index": 1, "scores": torch.tensor([.9, .1]), "targets": [1], "k": 16}
    result = run_metric(RetrievalMetric(), [hit, miss, dict(miss)])  # the padded duplicate of query 1
    assert result["img_r1"] == pytest.approx(50.0)
    assert not any(key.startswith("txt_") for key in result) and "r_mean" not in result
    assert result["rerank_k"] == 16


def brute_force_recalls(sim: np.ndarray, targets: list[set[int]]) -> dict[int, float]:
    """R@{1,5,10} by sorting each row: score descending, and on equal scores non-targets first."""
    hits = {1: 0, 5: 0, 10: 0}
    for row, good in zip(sim, targets, strict=True):
        is_target = np.array([j in good for j in range(len(row))])
        order = np.lexsort((is_target, -row))  # last key is primary
        first = int(np.flatnonzero(is_target[order])[0]) + 1
        for k in hits:
            hits[k] += first <= k
    return {k: 100.0 * v / len(sim) for k, v in hits.items()}


def test_retrieval_random_matrix_against_sorting():
    rng = np.random.default_rng(0)
    n_images, per_image = 20, 5
    sim = rng.integers(0, 8, size=(n_images * per_image, n_images)).astype(np.float32)  # many ties
    text_targets = [{t // per_image} for t in range(n_images * per_image)]
    image_targets = [set(range(i * per_image, (i + 1) * per_image)) for i in range(n_images)]
    rows = [{"query": "text", "index": t, "scores": torch.from_numpy(sim[t]), "targets": sorted(text_targets[t])}
            for t in range(len(sim))]
    rows += [{"query": "image", "index": i, "scores": sim[:, i], "targets": sorted(image_targets[i])}
             for i in range(n_images)]
    result = run_metric(RetrievalMetric(), rows, batch_size=16)
    img = brute_force_recalls(sim, text_targets)
    txt = brute_force_recalls(sim.T, image_targets)
    for k in (1, 5, 10):
        assert result[f"img_r{k}"] == pytest.approx(img[k])
        assert result[f"txt_r{k}"] == pytest.approx(txt[k])


# ----------------------------------------------------------------------------------------------------- VQA


@pytest.mark.parametrize("raw, canonical", [
    ("two", "2"), ("Two", "2"), ("none", "0"), ("ten", "10"),
    ("the dog", "dog"), ("a red car", "red car"), ("An apple", "apple"),
    ("yes.", "yes"), ("Yes", "yes"), ("yes!", "yes"),  # "!" is in the current official punctuation list
    ("3.5", "3.5"), ("1,000", "1000"), ("hello,world", "hello world"), ("left, right", "left right"),
    ("dont", "don't"), ("  tennis\n", "tennis"), ("", ""),  # ASCII apostrophes since the official 2016 fix
])
def test_vqa_answer_normalisation(raw, canonical):
    assert normalize_answer(raw) == canonical


def official_accuracy(pred: str, humans: list[str]) -> float:
    """The leave-one-out average spelled out: for each human, count matches among the other nine."""
    accs = []
    for i in range(len(humans)):
        others = humans[:i] + humans[i + 1:]
        accs.append(min(1.0, sum(h == pred for h in others) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize("matching, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_ten_subset_formula(matching, expected):
    humans = ["2"] * matching + ["3"] * (10 - matching)
    assert official_accuracy("2", humans) == pytest.approx(expected)
    # "Two." is normalised only when the humans disagree (official script); ten times "2" needs "2" verbatim
    pred = "Two." if 0 < matching < 10 else "2"
    row = {"question_id": 1, "pred_answer": pred, "answers": humans, "answer_type": "number"}
    result = run_metric(VQAMetric(), [row])
    assert result["vqa_acc"] == pytest.approx(100 * expected)
    assert result["vqa_acc_number"] == pytest.approx(100 * expected)


def test_vqa_per_type_dedup_and_empty_prediction():
    rows = [
        # 1.0: humans disagree in writing, so both sides are normalised ("yes." -> "yes"); ten times "yes." would
        # leave the answers as written and score 0, as the official script does
        {"question_id": 1, "pred_answer": "yes", "answers": ["yes."] * 9 + ["yes"], "answer_type": "yes/no"},
        {"question_id": 2, "pred_answer": "the dog", "answers": ["dog"] * 2 + ["cat"] * 8,
         "answer_type": "other"},  # 0.6
        {"question_id": 3, "pred_answer": "", "answers": ["cat"] * 10, "answer_type": "other"},  # 0
        {"question_id": 3, "pred_answer": "", "answers": ["cat"] * 10, "answer_type": "other"},  # duplicate
    ]
    result = run_metric(VQAMetric(), rows)
    assert result["vqa_acc"] == pytest.approx(100 * 1.6 / 3)
    assert result["vqa_acc_yes/no"] == pytest.approx(100.0)
    assert result["vqa_acc_other"] == pytest.approx(30.0)
    assert set(result) == {"vqa_acc", "vqa_acc_yes/no", "vqa_acc_other"}


# ------------------------------------------------------------------------------------------------ accuracy


def test_accuracy_hand_cases_and_dedup():
    rows = [{"pred": 1, "label": 1, "id": "a"}, {"pred": torch.tensor(0), "label": torch.tensor(1), "id": "b"},
            {"pred": 1, "label": 0, "id": "b"}, {"pred": 0, "label": 0}, {"pred": 0, "label": 0}]
    assert run_metric(AccuracyMetric(), rows)["acc"] == pytest.approx(75.0)  # 3 of 4 after dropping "b" again
    assert run_metric(AccuracyMetric(), [{"pred": 2, "label": 2}])["acc"] == 100.0


# ------------------------------------------------------------------------------------------------- caption


def test_caption_tokenizer():
    assert tokenize_caption("A man riding a horse.") == "a man riding a horse"
    assert tokenize_caption("The dog's bone; it can't -- \"really\" (no)!") == "the dog 's bone it ca n't really no"
    assert tokenize_caption("A black-and-white photo of 1,000 birds, at 10:30...") == \
        "a black-and-white photo of 1,000 birds at 10:30"
    assert tokenize_caption("  ...  ") == ""


CAPTIONS = [
    {"image_id": 1, "caption": "A man is riding a horse.",
     "references": ["A man rides a horse.", "A person on a brown horse", "man riding a horse on the beach"]},
    {"image_id": 2, "caption": "Two dogs play with a ball",
     "references": ["Two dogs playing with a ball.", "A pair of dogs chase a red ball", "dogs in the grass"]},
    {"image_id": 3, "caption": "A plate of food on a table",
     "references": ["A plate with food on a wooden table", "food on a plate", "A table holding a plate of food."]},
]
CAPTIONS_TOKENISED = {
    1: ("a man is riding a horse",
        ["a man rides a horse", "a person on a brown horse", "man riding a horse on the beach"]),
    2: ("two dogs play with a ball",
        ["two dogs playing with a ball", "a pair of dogs chase a red ball", "dogs in the grass"]),
    3: ("a plate of food on a table",
        ["a plate with food on a wooden table", "food on a plate", "a table holding a plate of food"]),
}


def test_caption_matches_pycocoevalcap_on_hand_tokenised_input():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    gts = {k: refs for k, (_, refs) in CAPTIONS_TOKENISED.items()}
    res = {k: [cap] for k, (cap, _) in CAPTIONS_TOKENISED.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    result = run_metric(CaptionMetric(), CAPTIONS + [dict(CAPTIONS[0], caption="duplicate, ignored")])
    assert result["bleu4"] == pytest.approx(100 * bleu[3])
    assert result["cider"] == pytest.approx(100 * cider)
    assert result["cider"] > 0


def test_caption_bleu4_by_hand():
    # hypothesis "the cat sat on the mat" (6), reference "the cat sat on a red mat" (7): clipped n-gram
    # precisions 5/6, 3/5, 2/4, 1/3; brevity penalty exp(1 - 7/6)
    row = {"image_id": 7, "caption": "The cat sat on the mat.", "references": ["The cat sat on a red mat"]}
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25 * math.exp(1 - 7 / 6)
    assert run_metric(CaptionMetric(), [row])["bleu4"] == pytest.approx(expected, rel=1e-6)


def test_caption_identical_and_empty():
    same = {"image_id": 1, "caption": "a dog runs on the grass", "references": ["A dog runs on the grass."]}
    assert run_metric(CaptionMetric(), [same])["bleu4"] == pytest.approx(100.0, abs=1e-5)
    empty = {"image_id": 1, "caption": "", "references": ["A dog runs on the grass."]}
    scores = run_metric(CaptionMetric(), [empty])
    assert (scores["bleu4"], scores["cider"]) == (0.0, 0.0) and set(scores) == {"bleu4", "cider", "cider_java_ptb"}

    from pycocoevalcap.cider.cider import Cider

    rows = [CAPTIONS[0], dict(CAPTIONS[1], caption="..."), CAPTIONS[2]]
    gts = {k: refs for k, (_, refs) in CAPTIONS_TOKENISED.items()}
    res = {1: [CAPTIONS_TOKENISED[1][0]], 2: [""], 3: [CAPTIONS_TOKENISED[3][0]]}
    _, per_image = Cider().compute_score(gts, res)
    assert per_image[1] == 0.0
    assert run_metric(CaptionMetric(), rows)["cider"] == pytest.approx(100 * per_image.mean())


# ----------------------------------------------------------------------------------------------- grounding


def raster_iou(a, b, size: int = 40) -> float:
    """IoU of integer boxes by counting pixels."""
    masks = []
    for x, y, w, h in (a, b):
        mask = np.zeros((size, size), dtype=bool)
        if w > 0 and h > 0:
            mask[y:y + h, x:x + w] = True
        masks.append(mask)
    union = (masks[0] | masks[1]).sum()
    return float((masks[0] & masks[1]).sum() / union) if union and masks[0].any() else 0.0


def test_iou_cases():
    assert box_iou_xywh([10, 10, 5, 5], [10, 10, 5, 5]) == 1.0
    assert box_iou_xywh([0, 0, 5, 5], [10, 10, 5, 5]) == 0.0
    assert box_iou_xywh([0, 0, 5, 5], [5, 0, 5, 5]) == 0.0  # touching edges
    assert box_iou_xywh([0, 0, 2, 2], [1, 0, 2, 2]) == pytest.approx(1 / 3)  # half of each box overlaps
    assert box_iou_xywh([0, 0, 2, 2], [0, 0, 2, 1]) == 0.5
    assert box_iou_xywh([3, 3, 0, 4], [3, 3, 0, 4]) == 0.0
    assert box_iou_xywh([3, 3, -2, 4], [0, 0, 10, 10]) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = [*rng.integers(0, 20, 2), *rng.integers(-1, 20, 2)]
        b = [*rng.integers(0, 20, 2), *rng.integers(1, 20, 2)]
        assert box_iou_xywh(a, b) == pytest.approx(raster_iou(a, b))


def test_grounding_metric():
    rows = [
        {"pred_box": [10, 10, 5, 5], "gt_box": [10, 10, 5, 5]},  # 1
        {"pred_box": torch.tensor([0.0, 0.0, 2.0, 2.0]), "gt_box": torch.tensor([0.0, 0.0, 2.0, 1.0])},  # 0.5
        {"pred_box": [0, 0, 2, 2], "gt_box": [1, 0, 2, 2]},  # 1/3
        {"pred_box": [0, 0, 0, 0], "gt_box": [1, 0, 2, 2]},  # 0
    ]
    result = run_metric(GroundingMetric(), rows)
    assert result["acc_iou50"] == pytest.approx(50.0)
    assert result["miou"] == pytest.approx(100 * (1 + 0.5 + 1 / 3) / 4)


# ----------------------------------------------------------------------------------------- patch detection


def test_patch_detection_by_hand():
    rows = [
        {"patch_scores": torch.tensor([0.9, 0.2, 0.8, 0.1]), "patch_labels": torch.tensor([1, 1, 0, 0]),
         "kept": torch.tensor([True, False, True, False])},
        # no object at all: its kept patches are still false positives
        {"patch_scores": np.array([0.7, 0.6, 0.3]), "patch_labels": np.array([0, 0, 0]),
         "kept": np.array([True, True, False])},
    ]
    result = run_metric(PatchDetectionMetric(), rows)
    # TP 1, FP 1 + 2, FN 1
    assert result["patch_precision"] == pytest.approx(25.0)
    assert result["patch_recall"] == pytest.approx(50.0)
    assert result["patch_f1"] == pytest.approx(100 * 2 * 0.25 * 0.5 / 0.75)
    # positives 0.9, 0.2 against negatives 0.8, 0.1, 0.7, 0.6, 0.3: 5 + 1 wins of 10
    assert result["patch_auc"] == pytest.approx(0.6)


def test_patch_auc_against_pairwise_count():
    rng = np.random.default_rng(1)
    rows = [{"patch_scores": torch.from_numpy(rng.integers(0, 5, 16).astype(np.float32)),
             "patch_labels": torch.from_numpy((rng.random(16) < 0.3).astype(np.int64)),
             "kept": torch.from_numpy(rng.random(16) < 0.5)} for _ in range(6)]
    scores = np.concatenate([r["patch_scores"].numpy() for r in rows])
    labels = np.concatenate([r["patch_labels"].numpy() for r in rows]).astype(bool)
    kept = np.concatenate([r["kept"].numpy() for r in rows])
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p, n in itertools.product(scores[labels], scores[~labels]))
    result = run_metric(PatchDetectionMetric(), rows)
    assert result["patch_auc"] == pytest.approx(wins / (labels.sum() * (~labels).sum()))
    assert result["patch_precision"] == pytest.approx(100 * labels[kept].mean())
    assert result["patch_recall"] == pytest.approx(100 * kept[labels].mean())


def test_patch_detection_nothing_kept_is_nan_precision():
    row = {"patch_scores": [0.1, 0.2], "patch_labels": [1, 0], "kept": [False, False]}
    result = run_metric(PatchDetectionMetric(), [row])
    assert math.isnan(result["patch_precision"])
    assert result["patch_recall"] == 0.0 and result["patch_f1"] == 0.0


# ------------------------------------------------------------------------------- gathering across processes


def retrieval_rows() -> list[dict]:
    rng = np.random.default_rng(2)
    sim = rng.integers(0, 6, size=(30, 6)).astype(np.float32)
    rows = [{"query": "text", "index": t, "scores": torch.from_numpy(sim[t]), "targets": [t // 5]}
            for t in range(30)]
    rows += [{"query": "image", "index": i, "scores": torch.from_numpy(sim[:, i].copy()),
              "targets": list(range(5 * i, 5 * i + 5))} for i in range(6)]
    return rows


def distributed_worker(rank: int, port: int, out_dir: str) -> None:
    """One of two gloo processes: process every other sample, then evaluate over the gathered corpus."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=2)
    try:
        results = {}
        for name, metric_cls, rows in (("retrieval", RetrievalMetric, retrieval_rows()),
                                       ("caption", CaptionMetric, CAPTIONS)):
            metric = metric_cls(collect_dir=str(Path(out_dir) / f"collect_{name}"))
            metric.process({}, rows[rank::2])
            results[name] = metric.evaluate(len(rows))
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gathering_equals_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(distributed_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    single = {"retrieval": run_metric(RetrievalMetric(), retrieval_rows()),
              "caption": run_metric(CaptionMetric(), CAPTIONS)}
    for rank in range(2):
        gathered = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, expected in single.items():
            assert gathered[name] == pytest.approx(expected)

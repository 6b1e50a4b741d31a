"""Chance: what a model that ignores the image scores on a job's own test set, by the task's own metric.

Every task's table needs its floor beside it ("above chance" is otherwise a guess), and the floor depends on
the test set a suite evaluates (its size for retrieval, its answer mix for VQA). So each baseline is computed
on the job's test samples from training-set statistics, and scored by the task's metric class:

- retrieval: the expected recall of a random ranking (closed form: 1 - C(T-m, k) / C(T, k) for m relevant
  items in a gallery of T);
- vqa: the most frequent training answer of each question type ("how many", "what color is the", ...;
  the "per Q-type prior" of the VQA paper, Antol et al. 2015), which a model reading only the question's
  first words reaches; nlvr2: the most frequent training label;
- caption: the most frequent training caption for every image;
- grounding: the mean training box (relative to the image) for every expression;
- patch detection and pre-training: the values of scores that carry no information (AUC 0.5, R@1 = 1/N).
"""

from __future__ import annotations

from collections import Counter
from math import comb

from harness.errors import InputError


def _build(dataset_cfg: dict):
    from harness.registry import DATASETS
    from harness.runner import _register_everything

    _register_everything()
    cfg = dict(dataset_cfg, pipeline=[])
    dataset = DATASETS.build(cfg)
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def _metric(evaluator_cfg: dict):
    from mmengine.logging import MMLogger

    from harness.registry import METRICS
    from harness.runner import quiet_console

    quiet_console(MMLogger.get_current_instance())  # no Runner has set up the console yet
    return METRICS.build(dict(evaluator_cfg))


def _retrieval(test: list[dict]) -> dict[str, float]:
    counts = [len(sample["texts"]) for sample in test]
    images, texts = len(counts), sum(counts)
    metrics = {}
    for k in (1, 5, 10):
        shown = min(k, texts)
        expected = sum(1 - comb(texts - m, shown) / comb(texts, shown) for m in counts) / images
        metrics[f"txt_r{k}"] = 100.0 * expected  # an image query finds one of its m captions among all texts
        metrics[f"img_r{k}"] = 100.0 * min(k, images) / images  # a caption query finds its one image
    metrics["r_mean"] = sum(metrics.values()) / len(metrics)
    return metrics


def chance_config(task: str, data_root: str, eval_limit: int | None = None):
    """The task config (no model) with its datasets at ``data_root``; the test set cut to ``eval_limit``."""
    from harness.runner import load_task_config

    cfg = load_task_config(task)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):
            cfg[loader].dataset.data_root = data_root
            if eval_limit and loader != "train_dataloader":
                cfg[loader].dataset.indices = eval_limit
    return cfg


def chance_metrics(cfg) -> dict[str, float]:
    """The chance metrics of a task config (:func:`chance_config`, or any job config of the task)."""
    evaluator = cfg.get("test_evaluator") or cfg.get("val_evaluator")
    loader = cfg.get("test_dataloader") or cfg.get("val_dataloader")
    if evaluator is None or loader is None:
        raise InputError(None, "test_evaluator", "a job without a test set has no chance level")
    kind = evaluator["type"]
    if kind == "PretrainMetric":
        test = _build(loader["dataset"])
        return {"itm_auc": 0.5, "itm_acc": 0.5, "itc_r1": 1.0 / len(test), "patch_auc": 0.5}
    if kind == "PatchDetectionMetric":
        return {"patch_auc": 0.5}
    test = _build(loader["dataset"])
    if kind == "RetrievalMetric":
        return _retrieval(test)
    train = _build(cfg.train_dataloader["dataset"])
    metric = _metric(evaluator)
    if kind == "VQAMetric":
        overall = Counter(s["multiple_choice_answer"] for s in train).most_common(1)[0][0]
        by_type: dict[str, Counter] = {}
        for s in train:
            by_type.setdefault(s.get("question_type", ""), Counter())[s["multiple_choice_answer"]] += 1
        prior = {qtype: counts.most_common(1)[0][0] for qtype, counts in by_type.items()}
        metric.process(None, [dict(question_id=s["question_id"], answers=s["answers"], answer_type=s.get("answer_type"),
                                   pred_answer=prior.get(s.get("question_type", ""), overall)) for s in test])
    elif kind == "AccuracyMetric":
        label = Counter(s["label"] for s in train).most_common(1)[0][0]
        metric.process(None, [dict(pred=label, label=s["label"], id=s["identifier"]) for s in test])
    elif kind == "CaptionMetric":
        caption = Counter(s["text"] for s in train).most_common(1)[0][0]
        metric.process(None, [dict(image_id=s["image_id"], caption=caption, references=s["texts"]) for s in test])
    elif kind == "GroundingMetric":
        mean = [sum(s["bbox"][i] / (s["width"] if i % 2 == 0 else s["height"]) for s in train) / len(train)
                for i in range(4)]
        metric.process(None, [dict(pred_box=[mean[i] * (s["width"] if i % 2 == 0 else s["height"])
                                             for i in range(4)], gt_box=s["bbox"]) for s in test])
    else:
        raise InputError(None, "test_evaluator", f"no chance level known for {kind}")
    return metric.compute_metrics(metric.results)

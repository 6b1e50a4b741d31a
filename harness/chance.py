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

Beside the headline metric each predictor reports its standard error on the same test set, ``<metric>_se``
(:data:`SE_SUFFIX`): how far chance itself moves from one test set to another of the same size. "Above chance"
in a table means above the floor by several of these (the tables print chance + 3 SE): binomial for accuracies
(for VQA's soft accuracy, whose per-question scores lie in [0, 1], an upper bound), the Mann-Whitney null for
AUCs, the spread of a random ranking for retrieval, the per-image scores' spread for CIDEr.

Each is a predictor registered in ``harness.registry.CHANCE`` under the name a task's declaration gives as its
``chance`` (harness/taskspec.py); a plugin registers its own task's the same way (docs/extending.md).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from math import comb

import numpy as np

from harness.config_namespace import settings as harness_settings
from harness.errors import InputError
from harness.registry import CHANCE


def _build(dataset_cfg: dict) -> list[dict]:
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


CHANCE_VERSION = 2  # in the chance jobs' hashes: a store made before the standard errors recomputes its rows
SE_SUFFIX = "_se"  # a chance row's standard error of a metric: metric name + this
RECALL_KS = (1, 5, 10)


def binomial_se(percent: float, n: int) -> float:
    """Standard error, in points, of an accuracy of ``percent`` over ``n`` independent samples."""
    p = min(max(percent / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def auc_null_se(positives: int, negatives: int) -> float:
    """Standard error of the ROC AUC of scores that carry no information (the Mann-Whitney U statistic's null
    variance n1 n2 (n1 + n2 + 1) / 12, divided by (n1 n2)^2)."""
    return math.sqrt((positives + negatives + 1) / (12.0 * positives * negatives))


def random_ranking_se(counts: Sequence[int], draws: int = 200, seed: int = 0) -> float:
    """Standard deviation of R-mean over ``draws`` uniformly random image x text similarity matrices, ranked
    both ways as a model's are (image i owns ``counts[i]`` texts). Simulated rather than closed-form: the two
    directions share the matrix (a text that happens to score high with its own image helps both), so they
    are correlated and independent rankings would understate the spread by about a fifth."""
    counts = list(counts)
    owner = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        sims = rng.random((len(counts), len(owner)), dtype=np.float32)
        own = sims[owner, np.arange(len(owner))]
        best = np.full(len(counts), -1.0, dtype=np.float32)
        np.maximum.at(best, owner, own)  # each image's best-scoring caption of its own
        text_rank = (sims > best[:, None]).sum(axis=1)  # texts above it: an image query's first hit is at this rank
        image_rank = (sims > own[None, :]).sum(axis=0)  # images above a caption's own
        recalls = [(rank < k).mean() for rank in (text_rank, image_rank) for k in RECALL_KS]
        values.append(100.0 * sum(recalls) / len(recalls))
    return float(np.std(values, ddof=1))


def _retrieval(test: list[dict]) -> dict[str, float]:
    counts = [len(sample["texts"]) for sample in test]
    images, texts = len(counts), sum(counts)
    metrics = {}
    for k in RECALL_KS:
        shown = min(k, texts)
        expected = sum(1 - comb(texts - m, shown) / comb(texts, shown) for m in counts) / images
        metrics[f"txt_r{k}"] = 100.0 * expected  # an image query finds one of its m captions among all texts
        metrics[f"img_r{k}"] = 100.0 * min(k, images) / images  # a caption query finds its one image
    metrics["r_mean"] = sum(metrics.values()) / len(metrics)
    metrics["r_mean" + SE_SUFFIX] = random_ranking_se(counts)
    return metrics


def chance_config(task: str, data_root: str, eval_limit: int | None = None):
    """The task's config (no model; a variant's is the config it is declared in) with its datasets at
    ``data_root``; the test set cut to ``eval_limit``."""
    from harness.runner import load_task_config
    from harness.taskspec import task_spec

    cfg = load_task_config(task_spec(task).config)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):
            cfg[loader].dataset.data_root = data_root
            if eval_limit and loader != "train_dataloader":
                cfg[loader].dataset.indices = eval_limit
    return cfg


def test_samples(cfg) -> list[dict]:
    """The data infos of a job config's test set (its val set when it has none), without loading images."""
    return _build((cfg.get("test_dataloader") or cfg.get("val_dataloader"))["dataset"])


def train_samples(cfg) -> list[dict]:
    """The data infos of a job config's training set: the statistics a chance predictor may learn."""
    return _build(cfg.train_dataloader["dataset"])


def scored(cfg, results: list[dict]) -> dict[str, float]:
    """``results`` (what the task's model would put into its metric) scored by the config's own metric."""
    metric = _metric(cfg.get("test_evaluator") or cfg.get("val_evaluator"))
    metric.process(None, results)
    return metric.compute_metrics(metric.results)


def chance_metrics(cfg, task: str | None = None) -> dict[str, float]:
    """The chance metrics of a task config (:func:`chance_config`, or any job config of the task), by the
    predictor that ``task``'s declaration names (default: the config's own ``harness.task_spec``)."""
    from harness.taskspec import task_spec

    evaluator = cfg.get("test_evaluator") or cfg.get("val_evaluator")
    loader = cfg.get("test_dataloader") or cfg.get("val_dataloader")
    if evaluator is None or loader is None:
        raise InputError(None, "test_evaluator", "a job without a test set has no chance level")
    declared = harness_settings(cfg).get("task_spec")
    if task is not None:
        name = task_spec(task, flag="task").chance
    elif isinstance(declared, dict):
        name = declared.get("chance")
    else:
        raise InputError(getattr(cfg, "filename", None), "harness.task_spec", "the config declares no task "
                         "(harness/taskspec.py), so no chance predictor")
    predictor = CHANCE.get(name) if isinstance(name, str) else None
    if predictor is None:
        raise InputError(None, "harness.task_spec.chance", f"no chance predictor {name!r} is registered "
                         f"(harness.registry.CHANCE: {', '.join(sorted(CHANCE.module_dict))})")
    return predictor(cfg)


@CHANCE.register_module(name="uninformative_pretrain")
def uninformative_pretrain(cfg) -> dict[str, float]:
    """Pre-training's ITM and patch scores at chance (AUC 0.5, accuracy 0.5) and ITC R@1 at 1 / N. ITM's AUC
    ranks each caption's true pair against one mismatched pair; patch AUC's standard error counts images, not
    patches (the patches of one image are not independent), so it errs high."""
    test = test_samples(cfg)
    return {"itm_auc": 0.5, "itm_acc": 0.5, "itc_r1": 1.0 / len(test), "patch_auc": 0.5,
            "itm_auc" + SE_SUFFIX: auc_null_se(len(test), len(test)), **_patch_auc_se(test)}


def _patch_auc_se(test: list[dict]) -> dict[str, float]:
    images = len({s.get("image_id", i) for i, s in enumerate(test)})
    return {"patch_auc" + SE_SUFFIX: auc_null_se(images, images)}


@CHANCE.register_module(name="uninformative_scores")
def uninformative_scores(cfg) -> dict[str, float]:
    """Patch scores that carry no information: AUC 0.5 (standard error over images, as pre-training's)."""
    return {"patch_auc": 0.5, **_patch_auc_se(test_samples(cfg))}


@CHANCE.register_module(name="random_ranking")
def random_ranking(cfg) -> dict[str, float]:
    """The expected recalls of a random ranking of the test gallery."""
    return _retrieval(test_samples(cfg))


@CHANCE.register_module(name="question_type_prior")
def question_type_prior(cfg) -> dict[str, float]:
    """The most frequent training answer of each question type (VQA's "per Q-type prior")."""
    train, test = train_samples(cfg), test_samples(cfg)
    overall = Counter(s["multiple_choice_answer"] for s in train).most_common(1)[0][0]
    by_type: dict[str, Counter] = {}
    for s in train:
        by_type.setdefault(s.get("question_type", ""), Counter())[s["multiple_choice_answer"]] += 1
    prior = {qtype: counts.most_common(1)[0][0] for qtype, counts in by_type.items()}
    metrics = scored(cfg, [dict(question_id=s["question_id"], answers=s["answers"],
                                answer_type=s.get("answer_type"), pred_answer=prior.get(s.get("question_type", ""),
                                                                                        overall)) for s in test])
    return {**metrics, "vqa_acc" + SE_SUFFIX: binomial_se(metrics["vqa_acc"], len(test))}


@CHANCE.register_module(name="majority_label")
def majority_label(cfg) -> dict[str, float]:
    """The most frequent training label for every sample."""
    train, test = train_samples(cfg), test_samples(cfg)
    label = Counter(s["label"] for s in train).most_common(1)[0][0]
    metrics = scored(cfg, [dict(pred=label, label=s["label"], id=s["identifier"]) for s in test])
    return {**metrics, "acc" + SE_SUFFIX: binomial_se(metrics["acc"], len(test))}


@CHANCE.register_module(name="majority_caption")
def majority_caption(cfg) -> dict[str, float]:
    """The most frequent training caption for every image."""
    train, test = train_samples(cfg), test_samples(cfg)
    caption = Counter(s["text"] for s in train).most_common(1)[0][0]
    from harness.metrics.caption import cider_per_image

    rows = [dict(image_id=s["image_id"], caption=caption, references=s["texts"]) for s in test]
    metrics = scored(cfg, rows)
    per_image = cider_per_image(rows, (cfg.get("test_evaluator") or cfg.get("val_evaluator")).get("tokenizer",
                                                                                                 "auto"))
    spread = statistics.stdev(per_image) if len(per_image) > 1 else 0.0
    return {**metrics, "cider" + SE_SUFFIX: 100.0 * spread / math.sqrt(len(per_image))}


@CHANCE.register_module(name="mean_box")
def mean_box(cfg) -> dict[str, float]:
    """The mean training box (relative to the image) for every expression."""
    train, test = train_samples(cfg), test_samples(cfg)
    mean = [sum(s["bbox"][i] / (s["width"] if i % 2 == 0 else s["height"]) for s in train) / len(train)
            for i in range(4)]
    metrics = scored(cfg, [dict(pred_box=[mean[i] * (s["width"] if i % 2 == 0 else s["height"]) for i in range(4)],
                                gt_box=s["bbox"]) for s in test])
    return {**metrics, "acc_iou50" + SE_SUFFIX: binomial_se(metrics["acc_iou50"], len(test))}

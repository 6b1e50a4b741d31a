"""Vision pre-training (the tiny scale's ImageNet stand-in): labels, mAP, export and loading into a VLP model."""

from __future__ import annotations

import contextlib
import io
import itertools

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from copa.build import build_model
from harness import runner
from harness.data.datasets import ObjectLabelDataset, object_label_classes
from harness.metrics import average_precision
from harness.runner import ensure_vision_init
from harness.tasks.vision_pretrain import ENCODER_FILE

TOKENS = dict(vocab_size=2000, cls_token_id=1, sep_token_id=2, pad_token_id=0, mask_token_id=3)


def test_object_labels_agree_with_pycocotools(tiny_benchmark):
    path = str(tiny_benchmark / "annotations" / "instances_val.json")
    dataset = ObjectLabelDataset(ann_file=path, data_root="", lazy_init=False)
    classes = object_label_classes(path)
    assert dataset.classes == classes and len(classes) == 8 + 8 + 64
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    for i in range(0, len(dataset), 97):
        info = dataset.get_data_info(i)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info["image_id"]))
        want = {names[a["category_id"]] for a in anns} | {a["colour"] for a in anns}
        want |= {f"{a['colour']} {names[a['category_id']]}" for a in anns}
        assert {classes[j] for j in np.flatnonzero(info["labels"])} == want


def test_average_precision_against_the_pairwise_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, 30).astype(float)  # many ties
        labels = rng.random(30) < 0.3
        if not labels.any():
            continue
        # AP = mean over positives p of (#positives ranked at or above p) / (#items ranked at or above p), with
        # ties broken against the positives (negatives of an equal score come first)
        precisions = []
        for p in np.flatnonzero(labels):
            above = (scores > scores[p]) | ((scores == scores[p]) & ~labels)
            pos_above = (scores > scores[p]) & labels
            same = np.flatnonzero((scores == scores[p]) & labels)
            tie_rank = int(np.sum(same <= p))  # equal-score positives in a fixed order
            precisions.append((pos_above.sum() + tie_rank) / (above.sum() + tie_rank))
        assert average_precision(scores, labels) == pytest.approx(np.mean(precisions))
    assert np.isnan(average_precision(np.ones(3), np.zeros(3)))


@pytest.mark.slow
def test_exported_encoder_initialises_every_model(tiny_benchmark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real_build, trained = runner.build_vision_config, []
    iters = {"n": 2}

    def small(*args, **kwargs):
        cfg = real_build(*args, **kwargs, max_iters=iters["n"])
        cfg.train_dataloader.batch_size = 8
        cfg.val_dataloader.dataset.indices = 16
        return cfg

    def counted(cfg):
        trained.append(cfg.train_cfg.max_iters)
        return real_train(cfg)

    real_train = runner.train
    monkeypatch.setattr(runner, "build_vision_config", small)
    monkeypatch.setattr(runner, "train", counted)
    path, digest = ensure_vision_init("tiny", tiny_benchmark, seed=0)
    again, same = ensure_vision_init("tiny", tiny_benchmark, seed=0)  # already made: no second job
    assert trained == [2] and (again, same) == (path, digest)
    iters["n"] = 3  # another vision config: its encoder is made again, never taken from the old run
    assert ensure_vision_init("tiny", tiny_benchmark, seed=0)[1] != digest and trained == [2, 3]
    assert path.name == ENCODER_FILE and path.is_file()
    state = torch.load(path, weights_only=True)
    for name in ("albef", "copa", "vilt"):
        model = build_model(name, "tiny", vision_pretrained=str(path), **TOKENS)
        for key, value in itertools.islice(state.items(), 0, None, 7):
            torch.testing.assert_close(model.vision.state_dict()[key], value)

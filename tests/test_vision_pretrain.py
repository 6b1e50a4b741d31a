"""Vision pre-training (the tiny scale's ImageNet stand-in): labels, mAP, export and loading into a VLP model."""

from __future__ import annotations

import contextlib
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from copa.patch_labels import box_patch_overlap
from harness import runner
from harness.data.collate import label_collate
from harness.data.datasets import ObjectLabelDataset, object_label_classes
from harness.data.scenes import CATEGORIES, COLOURS
from harness.metrics import average_precision
from harness.metrics.multilabel import MultiLabelMetric
from harness.runner import build_config, build_vision_config, ensure_vision_init
from harness.tasks.vision_pretrain import ENCODER_FILE, ObjectClassifier, object_tokens
from zoo import build_model

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


def test_object_targets_and_pooling_weights_agree_with_pycocotools(tiny_benchmark):
    path = str(tiny_benchmark / "annotations" / "instances_val.json")
    pipeline = [dict(type="LoadImage"), dict(type="Resize", size=64), dict(type="ObjectPatchWeights", patch_size=8),
                dict(type="ToTensor")]
    dataset = ObjectLabelDataset(ann_file=path, data_root="", data_prefix=dict(img_path=str(tiny_benchmark / "images")),
                                 pipeline=pipeline)
    assert dataset.categories == list(CATEGORIES) and dataset.values == sorted(COLOURS)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    for i in range(0, len(dataset), 131):
        sample = dataset[i]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=sample["image_id"]))
        assert [(dataset.categories[c], dataset.values[v]) for c, v in sample["object_targets"]] == \
            [(names[a["category_id"]], a["colour"]) for a in anns]
        for weights, a in zip(sample["object_weights"], anns, strict=True):
            share = box_patch_overlap(a["bbox"], (64, 64), 8)
            np.testing.assert_allclose(weights.numpy(), share / share.sum(), rtol=1e-6)
    batch = label_collate([dataset[0], dataset[1]])
    counts = [len(coco.getAnnIds(imgIds=dataset[i]["image_id"])) for i in (0, 1)]
    assert batch["object_images"].tolist() == [0] * counts[0] + [1] * counts[1]
    assert batch["object_weights"].shape == (sum(counts), 64) and batch["object_targets"].shape == (sum(counts), 2)


def test_object_tokens_are_the_weighted_means_of_the_patches_under_each_box():
    tokens = torch.randn(2, 4, 3)
    weights = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.25, 0.25, 0.25, 0.25]])
    images = torch.tensor([0, 0, 1])
    want = torch.stack([(tokens[0, 0] + tokens[0, 1]) / 2, tokens[0, 3], tokens[1].mean(0)])
    torch.testing.assert_close(object_tokens(tokens, weights, images), want)


def test_object_accuracy_counts_only_objects_that_have_the_label():
    metric = MultiLabelMetric()
    rows = [dict(scores=torch.tensor([0.9, 0.1]), labels=torch.tensor([1.0, 0.0]),
                 object_pred=torch.tensor([[1, 2], [3, 0]]), object_targets=torch.tensor([[1, 2], [2, -1]])),
            dict(scores=torch.tensor([0.2, 0.8]), labels=torch.tensor([0.0, 1.0]),
                 object_pred=torch.tensor([[0, 5]]), object_targets=torch.tensor([[0, 4]]))]
    metric.process(None, rows)
    out = metric.compute_metrics(metric.results)
    # categories: 1=1, 3!=2, 0=0 -> 2 of 3; values: 2=2, (no label), 5!=4 -> 1 of 2
    assert out == pytest.approx({"mAP": 100.0, "object_category_acc": 200 / 3, "object_value_acc": 50.0})


def test_vision_init_learns_from_the_box_free_pool(tiny_benchmark, tmp_path, monkeypatch):
    """The ViT initialisation reads class labels of the vision pool only: no instances file, no caption image, no
    box; one class per image (softmax), [CLS] and average heads. Its work dir is named by its job hash, under
    $COPA_BENCH_CACHE when set, so two datasets or recipes never share one."""
    monkeypatch.delenv(runner.CACHE_ENV, raising=False)
    cfg = build_vision_config("tiny", tiny_benchmark, max_iters=1)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert loader.dataset.type == "ImageClassDataset" and loader.dataset.ann_file == "vision_pool/classes.json"
        assert all(step["type"] != "ObjectPatchWeights" for step in loader.dataset.pipeline)
    assert "instances" not in str(cfg.to_dict()) and "annotations/" not in str(cfg.to_dict())
    assert cfg.model.num_classes == 64 and cfg.model.single_label and cfg.model.avg_head
    model = ObjectClassifier(**{k: v for k, v in cfg.model.items() if k != "type"})
    assert model.category_head is None and model.value_head is None
    images, labels = torch.randn(2, 3, 64, 64), torch.nn.functional.one_hot(torch.tensor([3, 40]), 64).float()
    losses = model(images, labels, mode="loss")
    assert set(losses) == {"loss_cls", "loss_avg"}
    logits = model(images, mode="tensor")
    assert losses["loss_cls"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([3, 40])).item())
    digest = runner.job_digest(cfg)
    assert Path(cfg.work_dir) == Path("work_dirs") / "vision_pretrain" / f"vit_tiny_seed0_{digest[:12]}"
    monkeypatch.setenv(runner.CACHE_ENV, str(tmp_path / "cache"))
    cached = build_vision_config("tiny", tiny_benchmark, max_iters=1)
    assert Path(cached.work_dir) == tmp_path / "cache" / "vision_pretrain" / f"vit_tiny_seed0_{digest[:12]}"
    assert Path(build_vision_config("tiny", tiny_benchmark, max_iters=2).work_dir).name != Path(cached.work_dir).name


def test_the_classifier_trains_every_head_and_reports_objects(tiny_benchmark):
    """The per-object heads (the box-supervised initialisation before the vision pool) still train and report."""
    cfg = build_vision_config("tiny", tiny_benchmark, max_iters=1)
    torch.manual_seed(0)
    model = ObjectClassifier(vision=cfg.model.vision, num_classes=24, num_categories=8, num_values=8)
    assert (model.category_head.out_features, model.value_head.out_features) == (8, 8)
    images = torch.randn(2, 3, 64, 64)
    weights = torch.zeros(3, 64)
    weights[0, :2] = weights[1, 9] = weights[2, 63] = 1.0
    weights = weights / weights.sum(1, keepdim=True)
    targets, owners = torch.tensor([[1, 2], [3, -1], [0, 4]]), torch.tensor([0, 0, 1])
    labels = torch.zeros(2, model.head.out_features)
    losses = model(images, labels, weights, targets, owners, mode="loss")
    assert set(losses) == {"loss_cls", "loss_category", "loss_value"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    unlabelled = targets.clone()
    unlabelled[:, 1] = -1  # no object has a colour: the head stays in the graph with a zero loss (DDP needs it)
    losses = model(images, labels, weights, unlabelled, owners, mode="loss")
    assert losses["loss_value"].item() == 0.0 and losses["loss_value"].requires_grad
    rows = model(images, labels, weights, targets, owners, mode="predict")
    assert [r["object_targets"].tolist() for r in rows] == [[[1, 2], [3, -1]], [[0, 4]]]
    assert [r["object_pred"].shape for r in rows] == [(2, 2), (1, 2)]


def test_a_pretrained_vit_learns_at_its_setting_s_rate_a_random_one_at_the_full_rate(tiny_benchmark, tmp_path):
    """Pre-training trains a pre-trained ViT at the full rate by default (ALBEF's);
    ``harness.pretrained_vision_lr_mult`` slows it (fine-tuning's tenth), and never a ViT that starts from scratch."""
    from mmengine.optim import build_optim_wrapper

    state = build_model("copa", "tiny", **TOKENS).vision.state_dict()
    vit = tmp_path / "vit.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("reducers.")}, vit)
    rates = {}
    tenth = ["harness.pretrained_vision_lr_mult=0.1"]
    for key, init, options in (("tenth", str(vit), tenth), ("default", str(vit), None), ("none", "none", tenth)):
        cfg = build_config("copa", "pretrain", data=tiny_benchmark, work_dir=tmp_path / "w", vision_init=init,
                           options=options)
        model = build_model("copa", "tiny", **{k: v for k, v in cfg.model.items() if k != "type"})
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        names = {id(p): n for n, p in model.named_parameters()}
        rates[key] = {names[id(p)]: g["lr"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    base = 5e-4
    vision = [n for n in rates["none"] if n.startswith("vision.") and not n.startswith("vision.reducers.")]
    assert len(vision) > 50 and all(rates["tenth"][n] == pytest.approx(base / 10) for n in vision)
    others = [n for n in rates["none"] if n not in vision]
    assert any(n.startswith("vision.reducers.") for n in others) and any(n.startswith("text_to_vision") for n in others)
    assert all(rates["tenth"][n] == pytest.approx(base) for n in others)
    assert all(rate == pytest.approx(base) for key in ("default", "none") for rate in rates[key].values())


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


def test_building_a_config_makes_nothing_and_prepare_makes_what_it_needs(tiny_benchmark, tmp_path, monkeypatch,
                                                                           capsys):
    """build_config only reads: with no default benchmark, or no ViT initialisation for this config, it names what
    is missing and writes nothing. prepare checks the arguments before doing anything, then says what it makes
    and makes it (a stand-in training here); the same build_config then starts pre-training from it."""
    import json

    from harness.errors import InputError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(runner.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(InputError, match=r"^data/tiny: no benchmark here"):
        build_config("copa", "vqa")
    with pytest.raises(InputError, match="no ViT initialisation of this config yet"):
        build_config("copa", "pretrain", data=tiny_benchmark)
    with pytest.raises(InputError, match="--model: unknown model"):
        runner.prepare("nosuch", "pretrain", data=tiny_benchmark)
    assert list(tmp_path.iterdir()) == []

    made = []

    def stand_in(cfg):
        made.append(cfg.work_dir)
        Path(cfg.work_dir).mkdir(parents=True)
        (Path(cfg.work_dir) / ENCODER_FILE).write_bytes(b"")
        (Path(cfg.work_dir) / "last_checkpoint").write_text("iter_1.pth")
        (Path(cfg.work_dir) / runner.JOB_FILE).write_text(json.dumps(dict(job_hash=runner.job_digest(cfg))))

    monkeypatch.setattr(runner, "train", stand_in)
    runner.prepare("copa", "vqa", data=tiny_benchmark)  # fine-tuning starts from a checkpoint, not the ViT
    assert made == []
    runner.prepare("copa", "pretrain", data=tiny_benchmark)
    runner.prepare("albef", "pretrain", data=tiny_benchmark)  # one initialisation for every model
    assert len(made) == 1 and "pre-training the tiny ViT" in capsys.readouterr().err
    cfg = build_config("copa", "pretrain", data=tiny_benchmark)
    assert cfg.model.vision_pretrained == str(Path(made[0]) / ENCODER_FILE)

"""Keep-rate warm-up (harness.hooks.KeepRateWarmupHook) against EViT's official schedule."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch.nn as nn
from mmengine.logging import MessageHub

from harness.hooks import KeepRateWarmupHook, patch_reducers
from zoo import build_model


def official_adjust_keep_rate(iters, epoch, warmup_epochs, total_epochs, ITERS_PER_EPOCH, base_keep_rate=0.5,  # noqa: N803
                              max_keep_rate=1):
    """youweiliang/evit helpers.py ``adjust_keep_rate``, as published (epoch-based), for an independent check."""
    if epoch < warmup_epochs:
        return 1
    if epoch >= total_epochs:
        return base_keep_rate
    total_iters = ITERS_PER_EPOCH * (total_epochs - warmup_epochs)
    iters = iters - ITERS_PER_EPOCH * warmup_epochs
    return base_keep_rate + (max_keep_rate - base_keep_rate) * (math.cos(iters / total_iters * math.pi) + 1) * 0.5


def _runner(model, max_iters):
    hub = MessageHub.get_instance("test_keep_rate_warmup")
    return SimpleNamespace(model=model, iter=0, max_iters=max_iters, logger=logging.getLogger("test"), message_hub=hub)


def _ratios(model):
    """The model's own reducers' ratios, after checking that its momentum model's keep in step with them."""
    ratios = [r.keep_ratio for r in patch_reducers(model.vision)]
    if getattr(model, "momentum_model", None) is not None:
        assert [r.keep_ratio for r in patch_reducers(model.momentum_model)] == ratios
    return ratios


@pytest.mark.parametrize("target", [0.7, 0.5])
def test_the_schedule_is_evits_published_one_in_fractions_of_training(target):
    # EViT's run_code.sh: 300 epochs, shrink_start_epoch 10, shrink_epochs 100; here 4 iterations an epoch
    epochs, per_epoch, start, shrink = 300, 4, 10, 100
    model = build_model("evit", keep_ratio=target, momentum=0.995)
    hook = KeepRateWarmupHook()  # the defaults are the published recipe
    runner = _runner(model, epochs * per_epoch)
    hook.before_train(runner)
    assert len(patch_reducers(model)) == 6  # the model's three and its momentum model's, which keep in step
    for it in [0, 1, 39, 40, 41, 100, 239, 240, 241, 300, 439, 440, 441, 1199]:
        runner.iter = it
        hook.before_train_iter(runner, it % per_epoch)
        expected = official_adjust_keep_rate(it, it // per_epoch, start, start + shrink, per_epoch, target)
        assert _ratios(model) == pytest.approx([expected] * 3, abs=1e-12), it
        assert runner.message_hub.get_scalar("train/keep_ratio").current() == pytest.approx(expected)
    runner.iter = 240  # halfway: the mean of 1 and the target
    hook.before_train_iter(runner, 0)
    assert _ratios(model) == pytest.approx([(1 + target) / 2] * 3)


def test_evaluation_runs_at_the_target_and_training_resumes_the_warm_up():
    model = build_model("evit", keep_ratio=0.7)
    hook = KeepRateWarmupHook(begin_iters=0, length_iters=10)
    runner = _runner(model, 20)
    hook.before_train(runner)
    runner.iter = 3
    hook.before_train_iter(runner, 3)
    warm = 0.7 + 0.3 * (math.cos(math.pi * 3 / 10) + 1) / 2
    assert _ratios(model) == pytest.approx([warm] * 3)
    hook.before_val(runner)
    assert _ratios(model) == [0.7] * 3
    assert model.vision.token_schedule() == build_model("evit", keep_ratio=0.7).vision.token_schedule()
    hook.before_train_iter(runner, 3)
    assert _ratios(model) == pytest.approx([warm] * 3)
    hook.before_test(runner)
    assert _ratios(model) == [0.7] * 3
    hook.before_train_iter(runner, 3)
    hook.after_train(runner)
    assert _ratios(model) == [0.7] * 3


def test_selection_by_reducer_and_models_without_reducers():
    albef = build_model("albef")
    hook = KeepRateWarmupHook(reducers="all")
    runner = _runner(albef, 10)
    hook.before_train(runner)  # nothing to do, nothing fails
    hook.before_train_iter(runner, 0)
    hook.before_val(runner)
    assert patch_reducers(albef) == []

    copa = build_model("copa")
    default = KeepRateWarmupHook()  # EViT's reducer only: COPA prunes at its target from the first step
    runner = _runner(copa, 300)
    default.before_train(runner)
    default.before_train_iter(runner, 0)
    assert _ratios(copa) == [0.5] * 3
    everyone = KeepRateWarmupHook(reducers="all")
    everyone.before_train(runner)
    everyone.before_train_iter(runner, 0)
    assert _ratios(copa) == [1.0] * 3
    everyone.before_val(runner)
    assert _ratios(copa) == [0.5] * 3

    wrapped = nn.ModuleDict(dict(backbone=build_model("trips")))  # a task model or wrapper around the backbone
    hook = KeepRateWarmupHook(reducers=["TextAttentionReducer"], begin_iters=5, length_iters=0)
    runner = _runner(wrapped, 10)
    hook.before_train(runner)
    for it, expected in [(0, 1.0), (4, 1.0), (5, 0.5), (9, 0.5)]:  # no length: a step, as shrink_epochs=0 is
        runner.iter = it
        hook.before_train_iter(runner, it)
        assert _ratios(wrapped.backbone) == [expected] * 3


def test_bad_arguments_are_refused():
    for kwargs in (dict(schedule="step"), dict(start=0.0), dict(begin=0.9, length=0.2), dict(reducers="EViT"),
                   dict(length_iters=-1)):
        with pytest.raises(ValueError):
            KeepRateWarmupHook(**kwargs)


@pytest.mark.slow
def test_evit_pretrains_with_the_warm_up_and_validates_at_the_target(tiny_benchmark, tmp_path):
    from harness.runner import build_config, make_runner

    cfg = build_config("evit", "pretrain", data=tiny_benchmark, work_dir=tmp_path / "evit", max_iters=3,
                       vision_init="none")
    assert any(h["type"] == "KeepRateWarmupHook" for h in cfg.custom_hooks)  # on by default for EViT
    for hook in cfg.custom_hooks:
        if hook["type"] == "KeepRateWarmupHook":
            hook.update(begin_iters=1, length_iters=2)
    cfg.train_dataloader.dataset.indices = 8
    cfg.train_dataloader.batch_size = 4
    cfg.val_dataloader.dataset.indices = 4
    runner = make_runner(cfg)
    first = patch_reducers(runner.model)[0]
    seen = []  # (training?, tokens entering, tokens leaving the first reduction point)
    first.register_forward_hook(
        lambda module, args, out: seen.append((module.training, args[0].shape[1], out.tokens.shape[1])))
    runner.train()
    history = [float(v) for v in runner.message_hub.get_scalar("train/keep_ratio").data[0]]
    assert history == pytest.approx([1.0, 1.0, 0.75])  # begin 1, length 2: 1, 1 (t = 0), 0.5 + 0.5 * (0 + 1) / 2
    train = sorted({(n_in, n_out) for training, n_in, n_out in seen if training})
    val = {(n_in, n_out) for training, n_in, n_out in seen if not training}
    assert train == [(65, 50), (65, 65)]  # ceil(r * 64) + [CLS] + fused; r = 1: identity
    assert val == {(65, 34)}  # keep 0.5: 32 + [CLS] + fused
    assert all(r.keep_ratio == 0.5 for r in patch_reducers(runner.model))

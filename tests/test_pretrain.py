"""Pre-training under the mmengine Runner: falling losses, seeded, resumable with safe checkpoint loading."""

from __future__ import annotations

import pickle

import pytest
import torch

from harness.checkpoint import load_checkpoint
from harness.errors import InputError
from harness.runner import build_config, make_runner

pytestmark = pytest.mark.slow


def _config(tiny_benchmark, tmp_path, model="copa", max_iters=40, **kw):
    kw.setdefault("vision_init", "none")
    cfg = build_config(model, "pretrain", data=tiny_benchmark, work_dir=tmp_path / model, max_iters=max_iters, **kw)
    cfg.train_dataloader.dataset.indices = 64  # a fixed small set, so the losses must fall quickly
    cfg.train_dataloader.batch_size = 16
    cfg.val_dataloader.dataset.indices = 64
    cfg.default_hooks.logger.interval = 5
    return cfg


def _loss_history(runner, name="loss"):
    return runner.message_hub.get_scalar(f"train/{name}").data[0]


def test_copa_pretrains_with_falling_losses_and_validates(tiny_benchmark, tmp_path):
    runner = make_runner(_config(tiny_benchmark, tmp_path))
    runner.train()
    for name in ("loss", "loss_itc", "loss_mlm", "loss_lm"):
        history = _loss_history(runner, name)
        assert history[-8:].mean() < history[:8].mean(), name
    metrics = {k: v.current() for k, v in runner.message_hub.log_scalars.items() if k.startswith("val/")}
    assert {"val/itm_acc", "val/itc_r1", "val/patch_auc"} <= set(metrics)
    assert (tmp_path / "copa" / "iter_40.pth").is_file()


def test_resume_continues_from_the_last_checkpoint_with_safe_loading(tiny_benchmark, tmp_path):
    first = make_runner(_config(tiny_benchmark, tmp_path, model="albef", max_iters=10))
    first.train()
    checkpoint = load_checkpoint(tmp_path / "albef" / "iter_10.pth")  # weights_only=True with the allowlist
    assert checkpoint["meta"]["iter"] == 10
    resumed = make_runner(_config(tiny_benchmark, tmp_path, model="albef", max_iters=14, resume=True))
    resumed.train()
    assert resumed.iter == 14
    history = _loss_history(resumed)
    assert len(history) == 14  # the first 10 iterations' history came back with the checkpoint
    torch.testing.assert_close(torch.as_tensor(history[:10]), torch.as_tensor(_loss_history(first)))


def test_a_checkpoint_carrying_another_object_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": Payload()}, path)
    with pytest.raises(InputError, match=r"evil\.pth: refused to load: .*print"):
        load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):  # the plain torch default refuses it too
        torch.load(path, weights_only=True)


def test_same_seed_same_losses(tiny_benchmark, tmp_path, one_thread):
    runs = []
    for i in range(2):
        runner = make_runner(_config(tiny_benchmark, tmp_path / str(i), model="trips", max_iters=4))
        runner.train()
        runs.append(_loss_history(runner))
    torch.testing.assert_close(torch.as_tensor(runs[0]), torch.as_tensor(runs[1]), rtol=0, atol=0)


def test_efficiency_hook_records_flops_and_speed_after_testing(tiny_benchmark, tmp_path):
    import json

    from harness.profiling.efficiency import pair_macs
    from zoo import build_model

    cfg = _config(tiny_benchmark, tmp_path, model="copa", max_iters=1)
    cfg.test_dataloader.dataset.indices = 16
    cfg.test_dataloader.batch_size = 8
    runner = make_runner(cfg)
    metrics = runner.test()
    assert {"itm_acc", "itc_r1", "patch_auc"} <= set(metrics)
    record = json.loads((tmp_path / "copa" / runner.timestamp / "efficiency.json").read_text())
    batch = next(iter(runner.test_dataloader))
    expected, _ = pair_macs(build_model("copa", scale="tiny", **{k: cfg.model[k] for k in (
        "vocab_size", "pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id")}).eval(),
        text_len=batch["text_ids"].shape[1])
    assert record["gmacs"] == pytest.approx(expected["total"] / 1e9)
    assert record["batch"] == 8 and record["image_size"] == 64 and record["pairs_per_s"] > 0
    assert runner.message_hub.get_info("efficiency/gmacs") == pytest.approx(record["gmacs"])


def test_max_iters_rescales_the_schedule(tiny_benchmark, tmp_path):
    longer = build_config("albef", "pretrain", data=tiny_benchmark, work_dir=tmp_path, max_iters=1500,
                          vision_init="none")
    warmup, cosine = longer.param_scheduler
    assert (warmup["begin"], warmup["end"], cosine["begin"], cosine["end"]) == (0, 50, 50, 1500)
    assert longer.train_cfg.val_interval == 1500 and longer.default_hooks.checkpoint.interval == 250
    shorter = build_config("albef", "pretrain", data=tiny_benchmark, work_dir=tmp_path, max_iters=10,
                           vision_init="none")
    warmup, cosine = shorter.param_scheduler
    assert (warmup["end"], cosine["begin"], cosine["end"]) == (10, 9, 10)
    assert shorter.train_cfg.val_interval == 10 and shorter.default_hooks.checkpoint.interval == 10


def test_a_harness_setting_from_cfg_options_reaches_what_build_config_derives(tiny_benchmark, tmp_path):
    """``harness.pretrained_vision_lr_mult`` is read while the job config is built (into the optimiser's per-parameter
    rates): an option that set it only afterwards would be accepted and ignored."""
    vit = tmp_path / "vit.pth"
    vit.write_bytes(b"")  # build_config only checks that the file exists; no model is built here

    def vision_rates(options):
        cfg = build_config("albef", "pretrain", data=tiny_benchmark, work_dir=tmp_path / "w", vision_init=str(vit),
                           options=options)
        custom = cfg.optim_wrapper.get("paramwise_cfg", {}).get("custom_keys", {})
        return {key: spec.get("lr_mult") for key, spec in custom.items() if key.startswith("vision")}

    assert vision_rates(None) == {}  # pre-training's ViT learns at the full rate, as ALBEF's
    assert set(vision_rates(["harness.pretrained_vision_lr_mult=0.1"]).values()) == {0.1}
    assert set(vision_rates(["harness.pretrained_vision_lr_mult=0.5"]).values()) == {0.5}
    with pytest.raises(InputError, match="'pretrained_vision_lr_mult' is a harness setting: write harness."):
        vision_rates(["pretrained_vision_lr_mult=0.5"])
    with pytest.raises(InputError, match="'harness.lr_mult': the harness's options are harness.pretrained"):
        vision_rates(["harness.lr_mult=0.5"])


def test_job_hashes_are_computed_over_the_layout_before_the_harness_namespace():
    """A store's rows are found again by their job hashes: the namespace moved keys, not what a job is."""
    from harness.config_namespace import flat_layout
    from harness.runner import load_task_config

    flat = flat_layout(load_task_config("vqa").to_dict())
    assert "harness" not in flat and flat["requires"] == ["fusion"] and flat["pretrained_vision_lr_mult"] == 0.1
    assert flat["task_model"]["type"] == "VQAModel" and flat["task_spec"]["headline"] == "vqa_acc"
    flat = flat_layout(load_task_config("pretrain").to_dict())
    assert "requires" not in flat and flat["vision_init"] is True and flat["pretrained_vision_lr_mult"] == 1.0

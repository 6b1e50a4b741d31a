"""--device and --precision: checked before anything runs, carried by every job config, honoured by training
(an autocast optimizer wrapper), by the test loops and the efficiency hook, and recorded in the rows."""

from __future__ import annotations

import copy
import json
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.device import (
    CONFIG_KEY,
    check_precision,
    full_precision,
    job_settings,
    resolve_device,
    to_device,
)
from harness.errors import InputError
from harness.results import read_rows
from harness.runner import build_config, job_digest, make_runner, run_identity, run_suffix, without_validation

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@no_cuda
def test_a_device_this_machine_lacks_is_bad_input():
    with pytest.raises(InputError, match="--device: cuda requested but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="--device: unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(InputError, match="--device: unsupported device type 'meta'"):
        resolve_device("meta")
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")


def test_fp16_needs_cuda_and_unknown_precisions_are_refused():
    with pytest.raises(InputError, match="--precision: fp16 needs a CUDA device"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(InputError, match="--precision: unknown precision 'int8'"):
        check_precision("int8", torch.device("cpu"))
    assert check_precision("bf16", torch.device("cpu")) == "bf16"


def _one_line(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("copa-bench: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@no_cuda
@pytest.mark.parametrize("argv", [
    ["train", "--model", "copa", "--task", "pretrain", "--device", "cuda"],
    ["test", "--model", "copa", "--task", "retrieval", "--checkpoint", "nowhere.pth", "--device", "cuda:0"],
    ["run", "smoke", "--device", "cuda"],
    ["profile", "--device", "cuda"],
])
def test_every_command_refuses_a_missing_gpu_before_it_writes_anything(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)  # the default data/, work_dirs/ and results/ would appear here
    _one_line(capsys, argv, "--device", "CUDA is not available")
    assert list(tmp_path.iterdir()) == []


def test_fp16_on_the_cpu_is_refused_by_the_cli(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line(capsys, ["train", "--model", "copa", "--task", "pretrain", "--device", "cpu", "--precision", "fp16"],
              "--precision", "fp16 needs a CUDA device")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit) as parsed:  # argparse knows the three precisions
        main(["test", "--model", "copa", "--task", "vqa", "--checkpoint", "c", "--precision", "int8"])
    assert parsed.value.code == 2


def test_to_device_and_full_precision_keep_the_batch_structure():
    Pair = namedtuple("Pair", "ids mask")
    batch = {"images": torch.ones(2, 3), "texts": ["a", "b"], "pair": Pair(torch.zeros(2, dtype=torch.long), None),
             "nested": [(torch.ones(1, dtype=torch.bfloat16), 3)], "n": 5}
    moved = to_device(batch, "meta")  # a device every machine has: shows that every tensor moved
    assert moved["images"].device.type == "meta" and moved["nested"][0][0].device.type == "meta"
    assert isinstance(moved["pair"], Pair) and moved["pair"].ids.device.type == "meta" and moved["pair"].mask is None
    assert moved["texts"] == ["a", "b"] and moved["n"] == 5 and isinstance(moved["nested"][0], tuple)
    assert moved["pair"].ids.dtype == torch.long
    full = full_precision(batch)
    assert full["nested"][0][0].dtype == torch.float32 and full["pair"].ids.dtype == torch.long
    assert full["images"] is batch["images"]  # fp32 is left alone, not copied


def test_work_dir_suffix_and_hash_identity_leave_the_cpu_in_fp32_as_before():
    assert run_suffix("cpu", "fp32") == "" and run_identity("cpu", "fp32") == {}
    assert run_suffix("cuda:1", "bf16") == "_cuda_bf16" and run_suffix("cpu", "bf16") == "_cpu_bf16"
    assert run_suffix("cuda", "fp32") == "_cuda"
    assert run_identity("cuda:1", "fp32") == run_identity("cuda", "fp32") == {"device": "cuda", "precision": "fp32"}


def test_a_job_config_carries_its_device_and_precision(tiny_benchmark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = build_config("albef", "pretrain", data=tiny_benchmark, max_iters=2, vision_init="none", device="cpu")
    assert plain.harness[CONFIG_KEY] == {"device": "cpu", "precision": "fp32"}
    assert plain.optim_wrapper.get("type", "OptimWrapper") == "OptimWrapper"
    assert plain.work_dir == str(Path("work_dirs") / "pretrain" / "albef_tiny_seed0")
    legacy = copy.deepcopy(plain)
    legacy.harness.pop(CONFIG_KEY)
    assert job_digest(plain) == job_digest(legacy)  # hashes made before --device existed still match

    bf16 = build_config("albef", "pretrain", data=tiny_benchmark, max_iters=2, vision_init="none", device="cpu",
                        precision="bf16")
    assert job_settings(bf16) == (torch.device("cpu"), "bf16")
    assert bf16.optim_wrapper.type == "AutocastOptimWrapper" and bf16.optim_wrapper.dtype == "bfloat16"
    assert bf16.work_dir.endswith("albef_tiny_seed0_cpu_bf16")
    assert job_digest(bf16) != job_digest(plain)
    assert not (tmp_path / "work_dirs").exists()  # building a config writes nothing


def _linear_dtypes(runner) -> set[torch.dtype]:
    """The output dtypes of the model's first Linear, recorded from now on."""
    seen: set[torch.dtype] = set()
    linear = next(m for m in runner.model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
    return seen


def test_bf16_training_and_testing_on_the_cpu(tiny_benchmark, tmp_path):
    """A bf16 pre-training step (the autocast optimizer wrapper), then the test loop under autocast and the
    efficiency hook, which records what did the timing."""
    cfg = build_config("copa", "pretrain", data=tiny_benchmark, work_dir=tmp_path, max_iters=1, vision_init="none",
                       device="cpu", precision="bf16")
    without_validation(cfg)
    cfg.custom_hooks = [dict(type="EfficiencyHook", repeats=1)]
    cfg.train_dataloader.batch_size = 4
    cfg.test_dataloader.dataset.indices = 4
    cfg.test_dataloader.batch_size = 4
    runner = make_runner(cfg)
    seen = _linear_dtypes(runner)
    runner.train()
    assert type(runner.optim_wrapper).__name__ == "AutocastOptimWrapper"
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())  # mixed precision: fp32 weights
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    assert len(losses) == 1 and all(torch.isfinite(torch.as_tensor(losses)))

    seen.clear()
    metrics = runner.test()
    assert type(runner.test_loop).__name__ == "PrecisionTestLoop"
    assert torch.bfloat16 in seen and {"itm_acc", "patch_auc"} <= set(metrics)
    record = json.loads((tmp_path / runner.timestamp / "efficiency.json").read_text())
    assert (record["device"], record["precision"], record["batch"]) == ("cpu", "bf16", 4)
    assert record["threads"] == torch.get_num_threads() and record["peak_mem_mb"] is None
    assert runner.message_hub.get_info("efficiency/precision") == "bf16"
    assert runner.message_hub.get_info("efficiency/device") == "cpu"


@pytest.mark.slow
def test_a_suite_runs_every_job_in_the_precision_and_records_it(tiny_benchmark, tmp_path, write_suite, monkeypatch):
    """In worker processes too (the pre-training's job.json is written by its worker)."""
    from harness.suite import run_suite

    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path / "micro.py", tiny_benchmark, ["copa"], ["patch_detection"],
                        max_iters=dict(pretrain=1), eval_limit=dict(pretrain=4, patch_detection=4))
    counts = run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None, device="cpu",
                       precision="bf16", workers=2)
    assert counts["failed"] == 0 and counts["run"] == 4  # two chance jobs, pre-training, patch detection
    rows = read_rows(tmp_path / "store")
    ran = [r for r in rows if r["model"] == "copa"]
    assert {r["task"] for r in ran} == {"pretrain", "patch_detection"}
    assert {(r["machine"]["device"], r["machine"]["precision"]) for r in ran} == {("cpu", "bf16")}
    assert all("device" not in r["machine"] for r in rows if r["model"] == "chance")  # no model ran there
    record = json.loads((tmp_path / "work_dirs" / "suites" / "micro_cpu_bf16" / "copa_seed0" / "pretrain"
                         / "job.json").read_text())
    assert record["precision"] == "bf16"

    again = run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None, device="cpu")
    assert again["skipped"] == 2 and again["run"] == 2  # chance is the same job; fp32 is another measurement

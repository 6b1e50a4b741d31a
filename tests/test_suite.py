"""Suites end to end: every model on every task (tiny sizes) through the Runner into the results store; a rerun
skips every finished job and adds no row; tasks that do not apply are recorded as n/a with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.errors import InputError
from harness.results import make_row, provenance, read_rows
from harness.runner import load_task_config
from harness.suite import _job_cfg, _thread_mismatch, load_suite, plan, run_suite, suite_names

MODELS = ["albef", "copa", "trips", "evit", "random", "tome", "vilt"]
TASKS = ["retrieval_zeroshot", "patch_detection", "retrieval", "vqa", "nlvr2", "caption", "grounding"]
MODELS_HERE = ["copa", "vilt"]
NOT_APPLICABLE = {("vilt", "retrieval_zeroshot"), ("vilt", "retrieval"), ("vilt", "caption"),
                  ("vilt", "patch_detection")}


def _micro_suite(path, data, models=MODELS, tasks=TASKS) -> str:
    path.write_text(f"""
scale = "tiny"
data = {str(data)!r}
vision_init = "none"
seeds = [0]
models = {models!r}
tasks = {tasks!r}
test_only = ["retrieval_zeroshot", "patch_detection"]
max_iters = dict(pretrain=2, retrieval=1, vqa=1, nlvr2=1, caption=1, grounding=1)
eval_limit = dict(pretrain=8, retrieval_zeroshot=6, retrieval=6, patch_detection=8, vqa=8, nlvr2=8, caption=4,
                  grounding=8)
""")
    return str(path)


@pytest.mark.parametrize("name", suite_names())
def test_every_shipped_suite_is_valid(name):
    suite = load_suite(name)
    jobs = plan(suite)
    assert {j.model for j in jobs if j.kind != "chance"} >= set(suite.models) or not suite.get("tasks")


def test_plan_orders_pretraining_before_each_models_tasks():
    suite = load_suite("paper")
    jobs = plan(suite, seeds=[0], variants=[""], models=["copa", "vilt"])
    chance = [j for j in jobs if j.kind == "chance"]
    assert [j.task for j in chance] == ["pretrain", *suite.tasks] and jobs[:len(chance)] == chance
    jobs = jobs[len(chance):]
    assert [j.kind for j in jobs[:3]] == ["pretrain", "test", "test"]
    assert [(j.model, j.task) for j in jobs if j.kind == "pretrain"] == [("copa", "pretrain"), ("vilt", "pretrain")]
    assert jobs[-1].kind == "efficiency"
    sweep = plan(suite, seeds=[1], variants=["keep0.3"])
    assert {j.model for j in sweep} == {"copa", "trips", "evit", "random", "tome"}
    assert all(j.config["model"] == {"keep_ratio": 0.3} for j in sweep)
    part = plan(suite, seeds=[0], variants=["", "pta0"], models=["copa"], tasks=["patch_detection", "vqa"])
    assert [(j.kind, j.task, j.variant) for j in part] == [
        ("chance", "pretrain", ""), ("chance", "patch_detection", ""), ("chance", "vqa", ""),
        ("pretrain", "pretrain", ""), ("test", "patch_detection", ""), ("finetune", "vqa", ""),
        ("pretrain", "pretrain", "pta0"), ("test", "patch_detection", "pta0")]  # vqa is not an ablation task


def test_a_variants_options_reach_its_own_jobs_only(tiny_benchmark, tmp_path, write_suite):
    """Per-task ``options`` of a variant (the paper suite's ``warmup_off``: EViT without its keep-rate warm-up)
    change that variant's job configs, not the default's."""
    warmup = load_task_config("pretrain").custom_hooks[1]  # the hook the paper suite's option names by position
    assert warmup.type == "KeepRateWarmupHook" and warmup.reducers == ["CLSAttentionReducer"]
    variants = {"": {}, "warmup_off": load_suite("paper").variants.warmup_off.to_dict()}
    path = write_suite(tmp_path / "s.py", tiny_benchmark, ["evit"], ["grounding"], max_iters={}, eval_limit={},
                       variants=variants)
    suite = load_suite(path)
    jobs = [j for j in plan(suite) if j.kind == "pretrain"]
    assert [j.variant for j in jobs] == ["", "warmup_off"]
    hooks = {j.variant: [h.get("reducers") for h in _job_cfg(suite, j, None, False, tmp_path / j.variant).custom_hooks
                         if h.type == "KeepRateWarmupHook"] for j in jobs}
    assert hooks == {"": [["CLSAttentionReducer"]], "warmup_off": [[]]}
    bad = write_suite(tmp_path / "bad.py", tiny_benchmark, ["evit"], ["grounding"], max_iters={}, eval_limit={},
                      variants={"x": dict(tasks=["grounding"], options=dict(vqa=["optim_wrapper.optimizer.lr=1"]))})
    with pytest.raises(InputError, match=r"bad\.py: variants\.x\.options\.vqa: 'vqa' is not one of the variant's "
                       "tasks"):
        load_suite(bad)



def _row_at(threads: int, suite: str = "paper", task: str = "vqa", device: str = "cpu") -> dict:
    prov = provenance()
    prov = {**prov, "machine": {**prov["machine"], "threads": threads, "device": device, "precision": "fp32"}}
    return make_row(suite=suite, model="copa", task=task, metric="acc", value=1.0, seed=0, scale="tiny",
                    job_hash="h", data_hash="d", prov=prov)


def test_a_resumed_suite_warns_when_its_rows_ran_at_another_thread_count():
    """The job hash does not record threads, so only this warning keeps ``--workers 1`` (every thread) from
    adding rows beside a store's one-thread rows unnoticed."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        one_thread = [_row_at(1), _row_at(4, task="efficiency"), _row_at(2, suite="smoke")]
        warning = _thread_mismatch(one_thread, "paper", "cpu", workers=1)
        assert warning.startswith("suite paper: warning: its stored rows ran at 1 torch thread(s), the jobs this "
                                  "run adds at 2 (--workers 1 runs each job here at every thread)")
        assert warning.endswith("run it with --workers 2 or more to match them")
        assert _thread_mismatch(one_thread, "paper", "cpu", workers=2) is None
        assert _thread_mismatch(one_thread, "smoke", "cpu", workers=1) is None  # its rows ran at this count
        assert _thread_mismatch([], "paper", "cpu", workers=1) is None
        mixed = _thread_mismatch([_row_at(1), _row_at(2)], "paper", "cpu", workers=2)
        assert "ran at 1, 2 torch thread(s), the jobs this run adds at 1 (--workers 2" in mixed
        assert "to match" not in mixed
        gpu = [_row_at(1, device="NVIDIA H100")]
        assert _thread_mismatch(gpu, "paper", "cpu", workers=1) is None  # another device's rows differ anyway
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_every_task_then_a_rerun_skips_everything(tiny_benchmark, tmp_path, monkeypatch):
    """A reducing model and the single-stream one, which meets most not-applicable cases, each in a worker
    process; all seven models on every task run in CI's smoke suite (tox). The rerun is in this one."""
    monkeypatch.chdir(tmp_path)
    suite = _micro_suite(tmp_path / "micro.py", tiny_benchmark, models=MODELS_HERE)
    counts = run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None, workers=2)
    assert counts["failed"] == 0
    rows = read_rows(tmp_path / "store")
    done = {(r["model"], r["task"]) for r in rows}
    for model in MODELS_HERE:
        for task in ["pretrain", *TASKS]:
            assert (model, task) in done, (model, task)
    chance = {(r["task"], r["metric"]): r["value"] for r in rows if r["model"] == "chance"}
    assert {task for task, _ in chance} == {"pretrain", *TASKS}
    assert chance["nlvr2", "acc"] == 50.0 and chance["patch_detection", "patch_auc"] == 0.5
    assert chance["retrieval", "img_r1"] == pytest.approx(100 / 6)  # eval_limit 6 images: 1 in 6
    na = {(r["model"], r["task"]) for r in rows if r["status"] == "n/a"}
    assert na == NOT_APPLICABLE
    assert all(r["reason"] for r in rows if r["status"] == "n/a")
    work = tmp_path / "work_dirs" / "suites" / "micro" / "copa_seed0"
    summaries = {task: json.loads((work / task / "job.json").read_text())["summary"] for task in ("pretrain", "vqa")}
    assert any(k.startswith("val/") for k in summaries["pretrain"])  # pre-training's results are its validation
    assert not any(k.startswith("val/") for k in summaries["vqa"])  # a fine-tuning is tested, not validated too
    again = run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None)
    assert again["run"] == 0 and again["failed"] == 0
    assert len(read_rows(tmp_path / "store")) == len(rows)


def test_workers_must_be_a_positive_count(tmp_path, tiny_benchmark, write_suite):
    with pytest.raises(InputError, match="--workers: must be an integer >= 1"):
        run_suite("smoke", results_dir=tmp_path / "store", say=lambda message: None, workers=0)
    suite = write_suite(tmp_path / "bad.py", tiny_benchmark, ["copa"], ["vqa"], max_iters={}, eval_limit={},
                        workers=0.5)
    with pytest.raises(InputError, match=r"bad\.py: workers: must be an integer >= 1, got 0\.5"):
        run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None)
    assert not (tmp_path / "store").exists()


def test_efficiency_rows_record_the_threads_they_were_timed_with(tiny_benchmark, tmp_path, write_suite):
    suite = write_suite(tmp_path / "eff.py", tiny_benchmark, ["albef", "copa"], [], max_iters={}, eval_limit={},
                        efficiency=dict(scale="tiny", batch=2, repeats=1, threads=1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what the suite's provenance sees before the job pins its own
        run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None)
    finally:
        torch.set_num_threads(threads)
    rows = read_rows(tmp_path / "store")
    assert {r["task"] for r in rows} == {"efficiency"}
    assert {r["machine"]["threads"] for r in rows} == {1}
    assert {r["value"] for r in rows if r["model"] == "albef" and r["metric"] == "speedup_time"} == {1.0}


@pytest.mark.slow
def test_bad_input_met_in_a_worker_stops_the_suite_with_its_one_line_error(tiny_benchmark, tmp_path, write_suite,
                                                                          monkeypatch):
    """A job's InputError comes back from the worker process whole (file, field, message) and stops the suite,
    as it does in one process; what finished before it stays in the store."""
    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path / "bad.py", tiny_benchmark, ["copa"], ["vqa"], max_iters=dict(pretrain=1, vqa=1),
                        eval_limit=dict(pretrain=8, vqa=8), options=dict(vqa=["train_dataloader.nosuch.x=1"]))
    with pytest.raises(InputError) as raised:
        run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None, workers=2)
    # the suite file and its field are named (the contract: file and field), not a --cfg-options nobody gave
    assert str(raised.value) == (f"{suite}: options.vqa: the job config has no section 'nosuch' in "
                                 "'train_dataloader.nosuch.x'")
    assert {r["task"] for r in read_rows(tmp_path / "store") if r["model"] == "copa"} == {"pretrain"}


def test_workers_leave_the_shared_vit_initialisation_to_this_process(tiny_benchmark, tmp_path, write_suite,
                                                                     monkeypatch):
    """Two workers starting pre-training at once would both make a missing ViT initialisation in one work dir;
    the main process makes it first, at one thread like the workers (at two its weights differ). The stand-in
    below exists only here, not in a spawned worker."""
    import harness.runner

    def stand_in(scale, data, seed, *run):
        raise InputError(None, None, f"made by the main process: {scale} seed {seed}, "
                                     f"{torch.get_num_threads()} thread(s)")

    threads = torch.get_num_threads()
    torch.set_num_threads(2)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(harness.runner, "ensure_vision_init", stand_in)
    suite = write_suite(tmp_path / "auto.py", tiny_benchmark, ["copa", "albef"], ["vqa"], seeds=(3,),
                        max_iters=dict(pretrain=1, vqa=1), eval_limit=dict(pretrain=8, vqa=8))
    Path(suite).write_text(Path(suite).read_text().replace("vision_init = 'none'", "vision_init = 'auto'"))
    try:
        with pytest.raises(InputError, match=r"made by the main process: tiny seed 3, 1 thread\(s\)"):
            run_suite(suite, results_dir=tmp_path / "store", say=lambda message: None, workers=2)
        assert torch.get_num_threads() == 2  # the main process's own count, back
    finally:
        torch.set_num_threads(threads)
    assert not (tmp_path / "store").exists()


def test_prepare_only_makes_each_seeds_vit_initialisation_and_runs_no_job(tiny_benchmark, tmp_path, write_suite,
                                                                          monkeypatch):
    """``run --prepare-only`` makes what the jobs read, as the run itself would (one thread with workers), and
    nothing else: no job, no store, no work dir."""
    import harness.runner

    made = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(harness.runner, "ensure_vision_init",
                        lambda scale, data, seed, *run: made.append((scale, seed, torch.get_num_threads())))
    suite = write_suite(tmp_path / "auto.py", tiny_benchmark, ["copa", "albef"], ["vqa"], seeds=(0, 1),
                        max_iters=dict(pretrain=1, vqa=1), eval_limit=dict(pretrain=8, vqa=8))
    Path(suite).write_text(Path(suite).read_text().replace("vision_init = 'none'", "vision_init = 'auto'"))
    said = []
    counts = run_suite(suite, results_dir=tmp_path / "store", work_root=tmp_path / "work", say=said.append,
                       workers=2, prepare_only=True)
    assert made == [("tiny", 0, 1), ("tiny", 1, 1)]
    assert counts == dict(run=0, skipped=0, not_applicable=0, failed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.py"]
    assert said[-1].startswith(f"suite auto: prepared its data ({tiny_benchmark}) and ViT initialisations for 10 jobs")


def test_pytests_prepare_suite_option_fails_the_session_with_its_preparation(tmp_path):
    """tox's test pass makes the smoke suite's ViT initialisation meanwhile (``--prepare-suite smoke``, a success
    every CI run sees): its failure fails the session, with the end of its log (kept)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--prepare-suite", "nosuch",
                           f"{__file__}::test_plan_orders_pretraining_before_each_models_tasks"],
                          cwd=repo, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "--prepare-suite failed (exit 2)" in done.stderr and "nosuch" in done.stderr
    assert len(list(tmp_path.glob("copa-bench-prepare-nosuch-*.log"))) == 1, "its log, named in the message"

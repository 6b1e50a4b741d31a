"""Task declarations (harness/taskspec.py) and plugins (harness/plugins.py): a task without a declaration is a
clear error, and a user's package (tests/plugin_example: a reducer, a model over it, a metric and a task) runs
through the CLI to a table without any edit to copa-bench (docs/extending.md)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from harness import plugins, taskspec
from harness.cli import main
from harness.errors import InputError

TESTS = Path(__file__).resolve().parent


@pytest.fixture()
def clean_registries(monkeypatch):
    """Plugin registrations undone afterwards, so other tests see copa-bench's own models and tasks only."""
    from copa.registry import MODELS
    from harness.registry import METRICS
    from zoo import METHODS

    monkeypatch.setattr(taskspec, "_PLUGIN_DIRS", [])
    monkeypatch.setattr(plugins, "_LOADED", [])
    monkeypatch.syspath_prepend(str(TESTS))
    methods, models, metrics = dict(METHODS), dict(MODELS._module_dict), dict(METRICS._module_dict)
    taskspec.reset()
    yield
    METHODS.clear()
    METHODS.update(methods)
    for registry, before in ((MODELS, models), (METRICS, metrics)):
        registry._module_dict.clear()
        registry._module_dict.update(before)
    for name in [m for m in sys.modules if m == "plugin_example" or m.startswith("plugin_example.")]:
        del sys.modules[name]
    taskspec.reset()


def test_builtin_declarations_match_what_the_harness_used_to_hard_code():
    specs = taskspec.task_specs()
    assert list(specs) == ["pretrain", "retrieval_zeroshot", "retrieval", "vqa", "nlvr2", "caption", "grounding",
                           "patch_detection", "vision_pretrain"]
    assert {n: s.headline for n, s in specs.items()} == {
        "pretrain": "itm_auc", "retrieval_zeroshot": "r_mean", "retrieval": "r_mean", "vqa": "vqa_acc",
        "nlvr2": "acc", "caption": "cider", "grounding": "acc_iou50", "patch_detection": "patch_auc",
        "vision_pretrain": None}  # the ViT initialisation: declared, never tabled, gated or given a chance row
    assert specs["vision_pretrain"].chance is None
    assert specs["retrieval_zeroshot"].config == "retrieval" and specs["retrieval_zeroshot"].test_only
    assert specs["grounding"].gated_metrics == ("acc_iou50", "miou")
    assert {m for s in specs.values() for m in s.fractions} == {"itm_acc", "itm_auc", "itc_r1", "patch_auc"}


def _row(**fields) -> dict:
    from harness.results import make_row

    prov = {"git_commit": "0" * 40, "git_dirty": False, "versions": {}, "machine": {"cpu": "test", "threads": 1}}
    return make_row(**{**dict(suite="ci", scale="tiny", job_hash="j", data_hash="d", seed=0, prov=prov), **fields})


def test_task_without_declaration_fails_with_a_clear_error(tmp_path, clean_registries, capsys):
    from harness.gate import make_baseline
    from harness.results import VERSION_KEYS, append_rows
    from harness.tables import write_tables

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "undeclared.py").write_text('test_evaluator = dict(type="AccuracyMetric")\n')
    taskspec.register_task_dir(folder)
    with pytest.raises(InputError, match="declares no harness.task_spec") as error:
        taskspec.task_spec("undeclared")
    assert error.value.path == str(folder / "undeclared.py")
    assert "undeclared" not in taskspec.task_specs()  # the other tasks stay usable
    store = tmp_path / "store"
    rows = [_row(model="albef", task="vqa", metric="vqa_acc", value=50.0),
            _row(model="albef", task="undeclared", metric="acc", value=60.0)]
    for r in rows:
        r["versions"] = dict.fromkeys(VERSION_KEYS, "1")
    append_rows(store, rows)
    with pytest.raises(InputError, match="rows of task 'undeclared'.*declares no harness.task_spec"):
        write_tables(store, tmp_path / "tables", formats=["md"])
    with pytest.raises(InputError, match="declares no harness.task_spec"):
        make_baseline(store)
    assert main(["table", "--results", str(store), "--out", str(tmp_path / "t2"), "--format", "md"]) == 2
    assert "undeclared" in capsys.readouterr().err and not (tmp_path / "t2").exists()
    append_rows(store, [dict(rows[0], task="nosuchtask", metric="x")])  # no config at all
    with pytest.raises(InputError, match="'nosuchtask'.*no task config declares it"):
        write_tables(store, tmp_path / "tables", formats=["md"])


def test_declaration_keys_are_checked(tmp_path, clean_registries):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "typo.py").write_text('harness = dict(task_spec=dict(headline="acc", gatde=["x"]))\n')
    (folder / "nohead.py").write_text('harness = dict(task_spec=dict(chance=None))\n')
    (folder / "extra.py").write_text('harness = dict(task_spec=dict(headline="acc"), task_modle=dict())\n')
    (folder / "built.py").write_text('harness = dict(task_spec=dict(headline="acc"), device_cfg=dict(device="cpu"))\n')
    # the layout before the namespace: refused, not silently ignored
    (folder / "flat.py").write_text('task_spec = dict(headline="acc", requires=["itc"])\n')
    (folder / "flatreq.py").write_text('harness = dict(task_spec=dict(headline="acc"))\nrequires = ["fusion"]\n')
    taskspec.register_task_dir(folder)
    with pytest.raises(InputError, match="harness.task_spec.gatde: unknown key"):
        taskspec.task_spec("typo")
    with pytest.raises(InputError, match="harness.task_spec.headline: missing"):
        taskspec.task_spec("nohead")
    with pytest.raises(InputError, match="harness.task_modle: unknown key"):
        taskspec.task_spec("extra")
    with pytest.raises(InputError, match="harness.device_cfg: set by the harness when it builds a job"):
        taskspec.task_spec("built")
    with pytest.raises(InputError, match="task_spec: a harness setting at the top level: write it as "
                       "harness.task_spec") as error:
        taskspec.task_spec("flat")
    assert error.value.path == str(folder / "flat.py")
    with pytest.raises(InputError, match="requires: .* write it as harness.task_spec.requires"):
        taskspec.task_spec("flatreq")


def test_plugin_by_name_only(clean_registries):
    with pytest.raises(InputError, match="not a module name"):
        plugins.load_plugin("../evil.py")
    with pytest.raises(InputError, match="cannot import plugin 'no_such_plugin_module'"):
        plugins.load_plugin("no_such_plugin_module")


@pytest.mark.slow
def test_plugin_reducer_model_task_and_metric_run_through_a_suite_to_a_table(tiny_benchmark, tmp_path, write_suite,
                                                                               clean_registries, capsys):
    """tests/plugin_example, loaded with --plugin, through run (one pre-training iteration, then its test-only
    task; the pre-training trains the plugin's reducer), table, test, train, profile and list, as
    docs/extending.md shows."""
    suite = write_suite(tmp_path / "plug.py", tiny_benchmark, ["normtop", "albef"], ["patch_top1"],
                        max_iters=dict(pretrain=1), eval_limit=dict(pretrain=8, patch_top1=8))
    store, work = tmp_path / "store", tmp_path / "work"
    plugin = ["--plugin", "plugin_example"]
    assert main([*plugin, "run", suite, "--results", str(store), "--work-dir", str(work), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "not applicable" in err  # albef keeps every patch: the task's ``requires`` said so
    assert main([*plugin, "table", "--results", str(store), "--out", str(tmp_path / "tables"), "--format",
                 "md,csv"]) == 0
    table = (tmp_path / "tables" / "main.md").read_text()
    assert "top-1 patch" in table and "| normtop |" in table
    import pandas as pd

    numbers = pd.read_csv(tmp_path / "tables" / "main.csv")
    hit = numbers[(numbers.model == "normtop") & (numbers.metric == "top1_hit")]
    assert len(hit) == 1 and 0.0 <= float(hit["mean"].iloc[0]) <= 100.0
    # the same task from train and test
    checkpoint = Path((work / "plug" / "normtop_seed0" / "pretrain" / "last_checkpoint").read_text().strip())
    assert main([*plugin, "test", "--model", "normtop", "--task", "patch_top1", "--checkpoint", str(checkpoint),
                 "--data", str(tiny_benchmark), "--work-dir", str(tmp_path / "test"), "--device", "cpu",
                 "--cfg-options", "test_dataloader.dataset.indices=8"]) == 0
    assert "top1_hit" in capsys.readouterr().out
    # its model through train and profile too (the plugin's reducer trains and reports its own MACs)
    assert main([*plugin, "train", "--model", "normtop", "--task", "pretrain", "--data", str(tiny_benchmark),
                 "--vision-init", "none", "--max-iters", "1", "--work-dir", str(tmp_path / "train"), "--device", "cpu",
                 "--cfg-options", "train_dataloader.batch_size=4", "val_dataloader.dataset.indices=8"]) == 0
    assert "val/patch_auc" in capsys.readouterr().out
    assert main([*plugin, "profile", "--scale", "tiny", "--models", "normtop,albef", "--tasks", "pair", "--batch", "2",
                 "--repeats", "1", "--device", "cpu"]) == 0
    assert re.search(r"^\| normtop \| 64 \|", capsys.readouterr().out, flags=re.M)
    assert main([*plugin, "list", "tasks"]) == 0 and "patch_top1" in capsys.readouterr().out
    assert main([*plugin, "list", "models"]) == 0 and "NormReducer" in capsys.readouterr().out

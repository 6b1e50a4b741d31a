"""Hostile inputs across data files, configs, CLI arguments, checkpoints and results stores (docs/hostile-inputs.md
lists them): each gets exit status 2 and one line naming the file and the field, and nothing is written —
every file under the working directory, data and stores included, is byte-for-byte as before.

Data-file damage of the caption and instance annotations is covered case by case in test_bad_input.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from harness.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "hostile-inputs.md"
SUITE = """
scale = "tiny"
data = {data!r}
vision_init = "none"
seeds = [0]
models = ["copa"]
tasks = ["vqa"]
max_iters = dict(pretrain=2, vqa=1)
"""


class Payload:
    """Pickled into a checkpoint: running it would leave a file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the checkpoint ran code"))


def _bench_copy(tmp: Path, bench: Path) -> Path:
    root = tmp / "bench"
    root.mkdir()
    for entry in bench.iterdir():
        if entry.name in ("annotations", "vqa", "nlvr2", "refcoco", "karpathy"):
            shutil.copytree(entry, root / entry.name, symlinks=True)
        else:
            os.symlink(entry, root / entry.name)
    return root


def _edit_json(path: Path, edit: Callable) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _store(tmp: Path, rows: str = "") -> Path:
    store = tmp / "store"
    store.mkdir()
    (store / "rows.jsonl").write_text(rows)
    return store


# each case: (id, what it is) -> setup(tmp, bench, checkpoint) returning (argv, words the error line must hold)
CASES: dict[str, Callable] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


@case("vqa-questions-malformed-json")
def _(tmp, bench, ckpt):
    root = _bench_copy(tmp, bench)
    path = root / "vqa" / "v2_OpenEnded_synth_val_questions.json"
    path.write_text(path.read_text()[:500])
    return ["data", "check", str(root), "--split", "val"], ["v2_OpenEnded_synth_val_questions.json", "JSON"]


@case("vqa-answers-wrong-type")
def _(tmp, bench, ckpt):
    root = _bench_copy(tmp, bench)
    _edit_json(root / "vqa" / "v2_synth_val_annotations.json",
               lambda d: d["annotations"][2].__setitem__("answers", "yes"))
    return ["data", "check", str(root), "--split", "val"], ["v2_synth_val_annotations.json", "annotations[2].answers"]


@case("nlvr2-label-not-a-boolean")
def _(tmp, bench, ckpt):
    root = _bench_copy(tmp, bench)
    path = root / "nlvr2" / "val.json"
    lines = path.read_text().splitlines()
    record = json.loads(lines[4])
    record["label"] = "maybe"
    lines[4] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    return ["data", "check", str(root), "--split", "val"], ["val.json", "label"]


@case("refcoco-ref-to-a-missing-object")
def _(tmp, bench, ckpt):
    root = _bench_copy(tmp, bench)
    path = next((root / "refcoco").glob("*.json"))

    def edit(refs):
        next(r for r in refs if r["split"] == "val")["ann_id"] = 10**9

    _edit_json(path, edit)
    return ["data", "check", str(root), "--split", "val"], [path.name, "ann_id"]


@case("benchmark-without-manifest")
def _(tmp, bench, ckpt):
    root = _bench_copy(tmp, bench)
    (root / "MANIFEST.json").unlink()
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(root)], ["MANIFEST.json"]


@case("data-make-bad-pta-fraction")
def _(tmp, bench, ckpt):
    return ["data", "make", "--out", str(tmp / "new"), "--pta-fraction", "1.5"], ["--pta-fraction"]


@case("suite-unknown-name")
def _(tmp, bench, ckpt):
    return ["run", "smokey"], ["SUITE", "smokey"]


@case("suite-config-syntax-error")
def _(tmp, bench, ckpt):
    (tmp / "broken.py").write_text("models = ['copa'\nseeds = [0]\n")
    return ["run", str(tmp / "broken.py")], ["broken.py", "line"]


@case("suite-config-unknown-model")
def _(tmp, bench, ckpt):
    (tmp / "s.py").write_text(SUITE.format(data=str(bench)).replace('["copa"]', '["copa", "blip"]'))
    return ["run", str(tmp / "s.py"), "--results", str(tmp / "out")], ["s.py", "models", "blip"]


@case("suite-config-zero-iterations")
def _(tmp, bench, ckpt):
    (tmp / "s.py").write_text(SUITE.format(data=str(bench)).replace("vqa=1", "vqa=0"))
    return ["run", str(tmp / "s.py"), "--results", str(tmp / "out")], ["s.py", "max_iters.vqa"]


@case("run-seed-not-in-suite")
def _(tmp, bench, ckpt):
    (tmp / "s.py").write_text(SUITE.format(data=str(bench)))
    return ["run", str(tmp / "s.py"), "--seeds", "1", "--results", str(tmp / "out")], ["--seeds", "1", "choose from 0"]


@case("run-model-not-in-suite")
def _(tmp, bench, ckpt):
    (tmp / "s.py").write_text(SUITE.format(data=str(bench)))
    return ["run", str(tmp / "s.py"), "--models", "albef", "--results", str(tmp / "out")], ["--models", "'albef'"]


@case("suite-config-unknown-task")
def _(tmp, bench, ckpt):
    (tmp / "s.py").write_text(SUITE.format(data=str(bench)).replace('["vqa"]', '["vqa", "ocr"]'))
    return ["run", str(tmp / "s.py"), "--results", str(tmp / "out")], ["s.py", "tasks", "ocr"]


@case("cfg-options-unknown-section")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--cfg-options", "optim_wraper.optimizer.lr=1"], ["--cfg-options", "optim_wraper"]


@case("unknown-model")
def _(tmp, bench, ckpt):
    return ["train", "--model", "blip", "--task", "pretrain", "--data", str(bench)], ["--model", "blip"]


@case("unknown-task")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "ocr", "--data", str(bench)], ["--task", "ocr"]


@case("unknown-scale")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--scale", "huge", "--data", str(bench)], ["--scale"]


@case("zero-max-iters")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--max-iters", "0", "--data", str(bench),
            "--vision-init", "none"], ["--max-iters"]


@case("seeds-not-integers")
def _(tmp, bench, ckpt):
    return ["run", "smoke", "--seeds", "zero,one"], ["--seeds"]


@case("launcher-without-torchrun")
def _(tmp, bench, ckpt):
    return ["test", "--model", "copa", "--task", "retrieval", "--checkpoint", str(ckpt("copa")), "--data", str(bench),
            "--launcher", "pytorch"], ["--launcher", "torchrun"]


@case("checkpoint-runs-code-when-unpickled")
def _(tmp, bench, ckpt):
    evil = tmp / "evil.pth"
    state = torch.load(ckpt("copa"), weights_only=False)
    state["meta"]["note"] = Payload(tmp / "ran.txt")
    torch.save(state, evil)
    return ["test", "--model", "copa", "--task", "retrieval", "--checkpoint", str(evil), "--data", str(bench)], \
        ["evil.pth", "refused"]


@case("checkpoint-truncated")
def _(tmp, bench, ckpt):
    cut = tmp / "cut.pth"
    cut.write_bytes(Path(ckpt("copa")).read_bytes()[:4096])
    return ["test", "--model", "copa", "--task", "retrieval", "--checkpoint", str(cut), "--data", str(bench)], \
        ["cut.pth", "checkpoint"]


@case("checkpoint-of-another-model")
def _(tmp, bench, ckpt):
    return ["test", "--model", "albef", "--task", "retrieval", "--checkpoint", str(ckpt("copa")), "--data",
            str(bench)], [Path(ckpt("copa")).name, "state_dict", "does not fit"]


@case("checkpoint-without-weights")
def _(tmp, bench, ckpt):
    empty = tmp / "empty.pth"
    torch.save({"meta": {"iter": 3}}, empty)
    return ["test", "--model", "copa", "--task", "retrieval", "--checkpoint", str(empty), "--data", str(bench)], \
        ["empty.pth", "state_dict"]


@case("checkpoint-not-a-zip-archive")
def _(tmp, bench, ckpt):
    fake = tmp / "fake.pth"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("fake/data.pkl", b"not a pickle")
    return ["test", "--model", "copa", "--task", "retrieval", "--checkpoint", str(fake), "--data", str(bench)], \
        ["fake.pth"]


@case("baseline-malformed-json")
def _(tmp, bench, ckpt):
    (tmp / "baseline.json").write_text('{"entries": [')
    return ["check", "--baseline", str(tmp / "baseline.json"), "--results", str(_store(tmp))], ["baseline.json", "JSON"]


@case("baseline-negative-tolerance")
def _(tmp, bench, ckpt):
    (tmp / "baseline.json").write_text(json.dumps({"tolerances": {"accuracy": -1}, "entries": []}))
    return ["check", "--baseline", str(tmp / "baseline.json"), "--results", str(_store(tmp))], \
        ["baseline.json", "tolerances.accuracy"]


@case("results-store-is-a-file")
def _(tmp, bench, ckpt):
    (tmp / "store").write_text("not a directory")
    return ["table", "--results", str(tmp / "store"), "--out", str(tmp / "tables")], ["store"]


@case("results-store-row-of-another-schema")
def _(tmp, bench, ckpt):
    store = _store(tmp, json.dumps({"model": "copa", "value": "high"}) + "\n")
    return ["baseline", "update", "--results", str(store), "--out", str(tmp / "b.json")], ["rows.jsonl", "no results"]


@case("paper-reference-file-malformed")
def _(tmp, bench, ckpt):
    (tmp / "paper.json").write_text('{"citation": "x", "rows": {"copa": ')
    return ["table", "--results", str(_store(tmp)), "--paper", str(tmp / "paper.json"), "--out", str(tmp / "t")], \
        ["paper.json"]


@case("table-unknown-format")
def _(tmp, bench, ckpt):
    return ["table", "--results", str(_store(tmp)), "--format", "pdf", "--out", str(tmp / "t")], ["--format", "pdf"]


EVIL = "from pathlib import Path\nPath({marker!r}).write_text('the config ran code')\nmodels = ['copa']\n"


@case("task-name-is-a-relative-path")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "../../x", "--data", str(bench), "--vision-init", "none"], \
        ["--task", "not a name"]


@case("task-name-is-a-path-to-code")
def _(tmp, bench, ckpt):
    (tmp / "evil.py").write_text(EVIL.format(marker=str(tmp / "ran.txt")))
    return ["train", "--model", "copa", "--task", str(tmp / "evil"), "--data", str(bench), "--vision-init", "none"], \
        ["--task", "not a name"]


@case("suite-task-is-a-path-to-code")
def _(tmp, bench, ckpt):
    (tmp / "evil.py").write_text(EVIL.format(marker=str(tmp / "ran.txt")))
    (tmp / "s.py").write_text(SUITE.format(data=str(bench)).replace('["vqa"]', f'["vqa", {str(tmp / "evil")!r}]'))
    return ["run", str(tmp / "s.py"), "--results", str(tmp / "out")], ["s.py", "tasks"]


@case("suite-name-is-a-path")
def _(tmp, bench, ckpt):
    return ["run", "../suites/smoke"], ["SUITE", "not a name"]


@case("cfg-options-type-not-registered")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--cfg-options", "train_dataloader.dataset.pipeline.0.type=os.system"], ["--cfg-options", "os.system"]


@case("cfg-options-custom-imports")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--cfg-options", "custom_imports.imports=os"], ["--cfg-options", "custom_imports"]


@case("cfg-options-zero-batch-size")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--max-iters", "1", "--cfg-options", "train_dataloader.batch_size=0"], ["--cfg-options", "batch_size"]


@case("cfg-options-config-variable")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--cfg-options", "max_iters=5"], ["--cfg-options", "'max_iters'", "train_cfg.max_iters"]


@case("cfg-options-harness-setting-at-the-top-level")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--cfg-options", "pretrained_vision_lr_mult=0.1"], ["--cfg-options", "harness.pretrained_vision_lr_mult"]


@case("cfg-options-harness-unknown-key")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--cfg-options", "harness.vision_lr_mult=0.1"], ["--cfg-options", "'harness.vision_lr_mult'"]


@case("cfg-options-harness-task-model-type")
def _(tmp, bench, ckpt):
    return ["test", "--model", "copa", "--task", "patch_detection", "--data", str(bench), "--checkpoint", str(ckpt),
            "--cfg-options", "harness.task_model.type=this.x"], ["--cfg-options", "'harness.task_model.type'"]


@case("cfg-options-harness-recorded-key")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--cfg-options", "harness.data_config.sha256=0"], ["--cfg-options", "'harness.data_config.sha256'"]


@case("cfg-options-harness-section-the-task-lacks")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--cfg-options", "harness.task_model.k=3"], ["--cfg-options", "'task_model'"]


@case("cfg-options-harness-key-without-namespace")
def _(tmp, bench, ckpt):
    return ["test", "--model", "copa", "--task", "patch_detection", "--data", str(bench), "--checkpoint", str(ckpt),
            "--cfg-options", "task_model.k=3"], ["--cfg-options", "write harness.task_model.k="]


@case("negative-seed")
def _(tmp, bench, ckpt):
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--seed", "-1"], ["--seed"]


@case("work-dir-under-a-file")
def _(tmp, bench, ckpt):
    (tmp / "afile").write_text("not a directory")
    return ["train", "--model", "copa", "--task", "pretrain", "--data", str(bench), "--vision-init", "none",
            "--work-dir", str(tmp / "afile" / "job")], ["--work-dir", "not a directory"]


@case("instance-box-not-finite")
def _(tmp, bench, ckpt):
    root = _bench_copy(tmp, bench)
    _edit_json(root / "annotations" / "instances_val.json",
               lambda d: d["annotations"][0].__setitem__("bbox", [float("nan"), 1.0, 2.0, 2.0]))
    return ["data", "check", str(root), "--split", "val"], ["instances_val.json", "annotations[0].bbox", "finite"]


@case("check-missing-store")
def _(tmp, bench, ckpt):
    (tmp / "baseline.json").write_text(json.dumps({"tolerances": {}, "entries": []}))
    return ["check", "--baseline", str(tmp / "baseline.json"), "--results", str(tmp / "nostore")], \
        ["nostore", "--results"]


@case("profile-zero-threads")
def _(tmp, bench, ckpt):
    return ["profile", "--threads", "0"], ["--threads"]


@case("data-make-negative-seed")
def _(tmp, bench, ckpt):
    return ["data", "make", "--out", str(tmp / "new"), "--seed", "-1"], ["--seed"]


@case("image-is-a-named-pipe")
def _(tmp, bench, ckpt):
    root = _bench_copy(tmp, bench)
    (root / "images").unlink()
    (root / "images").mkdir()
    for entry in (bench / "images").iterdir():
        os.symlink(entry, root / "images" / entry.name)
    for entry in (root / "images").glob("synth_val_*"):
        entry.unlink()
        os.mkfifo(entry)
    return ["data", "check", str(root), "--split", "val"], ["synth_val_", "image", "named pipe"]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink()
            else "dir" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, tmp_path, monkeypatch, capsys, tiny_benchmark, pretrained_checkpoint):
    work = tmp_path / "work"
    work.mkdir()
    argv, words = CASES[name](work, tiny_benchmark, pretrained_checkpoint)
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(work)
    before = _snapshot(work)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # a usage error, from argparse
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("copa-bench: warning: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.match(r"copa-bench( \w+)*: (error|not applicable): ", lines[0]), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _snapshot(work) == before, "a hostile input left files behind or changed one"


def test_every_case_is_in_the_docs_table():
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(), flags=re.M))
    assert documented >= set(CASES), sorted(set(CASES) - documented)
    assert len(CASES) >= 20

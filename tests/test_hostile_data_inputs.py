"""Hostile data files (docs/hostile-inputs.md lists them): repeated ids, impossible image sizes, images of
another size than declared, non-string paths, non-integer PTA ids, a tokenizer without its special tokens.
Each gets exit status 2 and one line naming the file and the field, and nothing is written. Also a
SIGTERM during ``data make``: workers and the partial directory are removed, and a rerun removes what a
killed run left; and during a suite's ``run``: its workers stop mid-job.

The damaged files are copies of a micro benchmark (a few images per split, made in a second) rather than
of the session's tiny one, so this file runs on its own in seconds."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from harness.cli import main
from harness.data import benchmark
from harness.errors import InputError, Terminated

DOC = Path(__file__).resolve().parent.parent / "docs" / "hostile-inputs.md"
REPO = Path(__file__).resolve().parent.parent


def _micro_preset() -> benchmark.Preset:
    return dataclasses.replace(benchmark.PRESETS["tiny"], images={"train": 8, "val": 4, "test": 2},
                               nlvr2_pairs={"train": 2, "val": 2, "test": 2},
                               pool_per_class={"train": 1, "val": 1})


def _make_micro(out: Path, **kwargs) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(benchmark.PRESETS, "micro", _micro_preset())
        with contextlib.redirect_stderr(io.StringIO()):
            return benchmark.make_benchmark(out, preset="micro", seed=0, pta_fraction=0.5, workers=1, **kwargs)


@pytest.fixture(scope="module")
def micro_benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("micro") / "bench"
    _make_micro(root)
    return root


def _edit_json(path: Path, edit: Callable) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _check(root: Path, split: str = "val") -> list[str]:
    return ["data", "check", str(root), "--split", split]


CASES: dict[str, Callable[[Path], tuple[list[str], list[str]]]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


@case("coco-duplicate-image-id")
def _(root):
    _edit_json(root / "annotations" / "captions_val.json", lambda d: d["images"][1].update(id=d["images"][0]["id"]))
    return _check(root), ["captions_val.json", "images[1].id", "duplicate image id", "images[0]"]


@case("coco-duplicate-category-id")
def _(root):
    _edit_json(root / "annotations" / "instances_val.json",
               lambda d: d["categories"][2].update(id=d["categories"][0]["id"]))
    return _check(root), ["instances_val.json", "categories[2].id", "duplicate category id"]


@case("coco-duplicate-annotation-id")
def _(root):
    _edit_json(root / "annotations" / "instances_val.json",
               lambda d: d["annotations"][3].update(id=d["annotations"][1]["id"]))
    return _check(root), ["instances_val.json", "annotations[3].id", "duplicate annotation id"]


@case("vqa-duplicate-question-id")
def _(root):
    _edit_json(root / "vqa" / "v2_synth_val_annotations.json",
               lambda d: d["annotations"][2].update(question_id=d["annotations"][0]["question_id"]))
    return _check(root), ["v2_synth_val_annotations.json", "annotations[2].question_id", "duplicate"]


@case("coco-image-zero-height")
def _(root):
    _edit_json(root / "annotations" / "captions_val.json", lambda d: d["images"][0].update(height=0))
    return _check(root), ["captions_val.json", "images[0].height", "between 1 and"]


@case("coco-image-negative-width")
def _(root):
    _edit_json(root / "annotations" / "instances_val.json", lambda d: d["images"][2].update(width=-64))
    return _check(root), ["instances_val.json", "images[2].width", "got -64"]


@case("coco-image-size-not-an-integer")
def _(root):
    path = root / "annotations" / "captions_val.json"
    _edit_json(path, lambda d: d["images"][1].update(width=float("nan")))  # written as NaN, which JSON readers accept
    return _check(root), ["captions_val.json", "images[1].width", "expected int, got float"]


@case("coco-image-size-boolean")
def _(root):
    _edit_json(root / "annotations" / "captions_val.json", lambda d: d["images"][1].update(height=True))
    return _check(root), ["captions_val.json", "images[1].height", "expected int, got bool"]


@case("coco-captions-and-instances-disagree-on-size")
def _(root):
    _edit_json(root / "annotations" / "instances_val.json", lambda d: d["images"][0].update(width=65))
    return _check(root), ["instances_val.json", "images", "65x64"]


@case("image-size-differs-from-declared")
def _(root):
    name = json.loads((root / "annotations" / "captions_val.json").read_text())["images"][1]["file_name"]
    Image.new("RGB", (32, 64)).save(root / "images" / name)
    return _check(root), [name, "width", "32 pixels", "captions_val.json declares 64"]


@case("karpathy-filepath-not-a-string")
def _(root):
    _edit_json(root / "karpathy" / "dataset_coco.json", lambda d: d["images"][-1].update(filepath=7))
    return _check(root, "test"), ["dataset_coco.json", ".filepath", "expected str, got int"]


@case("karpathy-filename-not-a-string")
def _(root):
    _edit_json(root / "karpathy" / "dataset_coco.json", lambda d: d["images"][-1].update(filename=[1, 2]))
    return _check(root, "test"), ["dataset_coco.json", ".filename", "expected str, got list"]


@case("pta-image-id-is-a-string")
def _(root):
    _edit_json(root / "annotations" / "pta_boxes_train.json", lambda d: d["image_ids"].insert(1, "3"))
    return _check(root, "train"), ["pta_boxes_train.json", "image_ids[1]", "expected an integer", 'str "3"']


@case("pta-image-id-is-nested")
def _(root):
    _edit_json(root / "annotations" / "pta_boxes_train.json", lambda d: d["image_ids"].append([1, [2]]))
    return _check(root, "train"), ["pta_boxes_train.json", "image_ids[", "expected an integer", "list"]


@case("tokenizer-vocab-without-special-token")
def _(root):
    path = root / "tokenizer" / "vocab.txt"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if line != "[MASK]"))
    return _check(root), ["vocab.txt", "[MASK]", "special token missing"]


@case("tokenizer-vocab-repeats-a-token")
def _(root):
    path = root / "tokenizer" / "vocab.txt"
    path.write_text(path.read_text() + "[CLS]\n")
    return _check(root), ["vocab.txt", "line ", "[CLS]", "twice"]


@case("tokenizer-vocab-empty")
def _(root):
    (root / "tokenizer" / "vocab.txt").write_text("\n")
    return _check(root), ["vocab.txt", "empty"]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_data_input(name, micro_benchmark, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    root = work / "bench"
    shutil.copytree(micro_benchmark, root)
    argv, words = CASES[name](root)
    monkeypatch.chdir(work)
    before = _snapshot(work)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("copa-bench: warning: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("copa-bench: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "nan%" not in captured.out
    assert _snapshot(work) == before, "a hostile input left files behind or changed one"


def test_the_undamaged_micro_benchmark_passes(micro_benchmark, capsys):
    assert main(["data", "check", str(micro_benchmark)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "test" in out


def test_every_data_case_is_in_the_docs_table():
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(), flags=re.M))
    stops = {"data-make-sigterm", "data-make-stale-partial-directory", "run-sigterm"}
    assert documented >= set(CASES) | stops, sorted((set(CASES) | stops) - documented)


@pytest.mark.parametrize("bad", ["7", 7.0, 7.5, True, None, [7], {"id": 7}])
def test_pta_image_ids_must_be_json_integers(micro_benchmark, tmp_path, bad):
    from harness.data.datasets import _pta_image_ids

    path = tmp_path / "pta.json"
    path.write_text(json.dumps({"image_ids": [1, bad]}))
    with pytest.raises(InputError, match=r"image_ids\[1\]: expected an integer image id"):
        _pta_image_ids(str(path))


def test_an_image_of_another_size_is_refused_when_a_task_reads_it(micro_benchmark, tmp_path):
    """The pipeline's LoadImage is followed by the size check, so training and testing refuse it too."""
    from harness.registry import DATASETS

    root = tmp_path / "bench"
    shutil.copytree(micro_benchmark, root)
    cfg = benchmark.offline_datasets(root, "val")
    images = json.loads((root / "annotations" / "instances_val.json").read_text())["images"]
    Image.new("RGB", (64, 40)).save(root / "images" / images[0]["file_name"])
    for kind in ("captions", "grounding"):
        dataset = DATASETS.build({**cfg[kind], "pipeline": [dict(type="LoadImage"), dict(type="Resize", size=32)]})
        index = next(i for i in range(len(dataset)) if dataset.get_data_info(i)["image_id"] == images[0]["id"])
        with pytest.raises(InputError) as info:
            dataset[index]
        assert images[0]["file_name"] in str(info.value) and "height: the image is 40 pixels" in str(info.value)
        dataset[(index + 5) % len(dataset)]  # another image passes


def test_attributes_are_found_by_position_when_annotations_have_no_id(micro_benchmark, tmp_path):
    from harness.data.datasets import _attributed_objects

    path = tmp_path / "instances.json"
    data = json.loads((micro_benchmark / "annotations" / "instances_val.json").read_text())
    for ann in data["annotations"]:
        ann.pop("id")
    path.write_text(json.dumps(data))
    _, _, objects = _attributed_objects(str(path), "colour")
    values = [o["value"] for objs in objects.values() for o in objs]
    assert values == [a["colour"] for a in data["annotations"]]


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_data_make_sigterm_removes_the_partial_directory_and_the_workers(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "data", "make", "--out", str(out),
                             "--preset", "tiny", "--workers", "2"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:  # until images are being written by workers
            partial = list(tmp_path.glob(".bench.partial-*"))
            workers = _children(proc.pid)
            if partial and len(workers) >= 2 and len(list((partial[0] / "images").glob("*.png"))) > 10:
                break
            time.sleep(0.05)
        assert partial and workers, "the generation did not start"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.startswith("copa-bench:")]
    assert len(lines) == 1 and "terminated by SIGTERM" in lines[0] and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a partial directory or the output was left"
    time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the generator"


def test_run_sigterm_stops_the_suites_workers_mid_job(micro_benchmark, tmp_path, write_suite):
    """A suite's worker processes once finished the job in hand after SIGTERM and outlived their parent."""
    suite = write_suite(tmp_path / "long.py", micro_benchmark, ["albef", "copa"], ["retrieval_zeroshot"],
                        max_iters=dict(pretrain=100_000), eval_limit=dict(pretrain=8, retrieval_zeroshot=8))
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", suite, "--workers", "2", "--results",
                             str(store), "--work-dir", str(tmp_path / "work")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:  # until both pre-trainings are under way
            workers = _children(proc.pid)
            if len(list((tmp_path / "work").glob("long/*/pretrain/*/vis_data"))) == 2:
                break
            time.sleep(0.2)
        assert len(workers) >= 2 and proc.poll() is None, "the pre-trainings did not start"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)  # a suite waiting for its workers' jobs times out here
    finally:
        if proc.poll() is None:
            for pid in _children(proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.startswith("copa-bench:")]
    assert len(lines) == 1 and "terminated by SIGTERM" in lines[0] and "Traceback" not in err, err
    time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the suite"
    rows = [json.loads(line) for line in (store / "rows.jsonl").read_text().splitlines()]
    assert rows and {r["model"] for r in rows} == {"chance"}, "only the finished (chance) jobs have rows"


def test_a_rerun_removes_partial_directories_of_dead_runs(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f".bench.partial-{gone.pid}"
    (stale / "images").mkdir(parents=True)
    (stale / "images" / "x.png").write_bytes(b"half")
    live = tmp_path / f".bench.partial-{os.getppid()}"  # a live process's run: not ours to remove
    live.mkdir()
    other = tmp_path / f".other.partial-{gone.pid}"  # another output's: left alone
    other.mkdir()
    _make_micro(tmp_path / "bench")
    assert not stale.exists() and live.is_dir() and other.is_dir()
    assert (tmp_path / "bench" / "MANIFEST.json").is_file()


def test_sigterm_inside_make_benchmark_restores_the_previous_benchmark(tmp_path, monkeypatch):
    """Stopped between moving the old benchmark aside and moving the new one in: the old one is put back."""
    out = tmp_path / "bench"
    _make_micro(out)
    before = _snapshot(out)
    real_rename = os.rename

    def rename(src, dst):
        real_rename(src, dst)
        if ".old-" in str(dst):
            raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(benchmark.os, "rename", rename)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(benchmark.PRESETS, "micro", _micro_preset())
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(Terminated):
            benchmark.make_benchmark(out, preset="micro", seed=1, pta_fraction=0.5, workers=1, force=True)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

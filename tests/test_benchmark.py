"""The offline benchmark generator: determinism, real formats, sizes and the text-relevant share."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
from PIL import Image
from pycocotools.coco import COCO

from harness.data import benchmark
from harness.data.benchmark import SPLITS, _scene_record, make_benchmark, read_manifest
from harness.data.check import relevant_patch_fraction
from harness.data.datasets import CaptionDataset
from harness.data.scenes import CATEGORIES


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True)


def test_scene_records_are_a_function_of_seed_split_and_index():
    a, b = _scene_record((0, 0, 7, "tiny")), _scene_record((0, 0, 7, "tiny"))
    assert a["png"] == b["png"] and a["captions"] == b["captions"] and a["questions"] == b["questions"]
    c = _scene_record((1, 0, 7, "tiny"))
    assert c["png"] != a["png"]


def test_tiny_preset_sizes_and_manifest(tiny_benchmark):
    manifest = read_manifest(tiny_benchmark)
    counts = manifest["counts"]
    assert counts["train"]["images"] >= 3000 and counts["val"]["images"] >= 500 and counts["test"]["images"] >= 500
    assert manifest["content_sha256"] == benchmark.content_hash(tiny_benchmark)
    first = json.loads((tiny_benchmark / "annotations" / "instances_train.json").read_text())["images"][0]
    with Image.open(tiny_benchmark / "images" / first["file_name"]) as img:
        assert img.format == "PNG" and img.size == (64, 64)


def test_pycocotools_loads_every_instances_and_captions_file(tiny_benchmark):
    for split in SPLITS:
        with contextlib.redirect_stdout(io.StringIO()):
            inst = COCO(str(tiny_benchmark / "annotations" / f"instances_{split}.json"))
            caps = COCO(str(tiny_benchmark / "annotations" / f"captions_{split}.json"))
        assert [c["name"] for c in inst.loadCats(inst.getCatIds())] == list(CATEGORIES)
        assert set(caps.getImgIds()) == set(inst.getImgIds())
        for img_id in inst.getImgIds()[:50]:
            anns = inst.loadAnns(inst.getAnnIds(imgIds=img_id))
            assert len(anns) >= 4 and all(a["area"] > 0 and a["bbox"][2] > 0 for a in anns)
            assert all({"colour", "size"} <= set(a) for a in anns)
            assert len(caps.getAnnIds(imgIds=img_id)) == 5


def test_pta_exposure_is_the_configured_share_of_train_images(tiny_benchmark):
    pta = json.loads((tiny_benchmark / "annotations" / "pta_boxes_train.json").read_text())
    n_train = read_manifest(tiny_benchmark)["counts"]["train"]["images"]
    assert pta["fraction"] == 0.05 and len(pta["image_ids"]) == round(0.05 * n_train)
    assert len(set(pta["image_ids"])) == len(pta["image_ids"])


def test_vqa_has_ten_answers_of_every_question_type(tiny_benchmark):
    ann = json.loads((tiny_benchmark / "vqa" / "v2_synth_val_annotations.json").read_text())["annotations"]
    assert all(len(a["answers"]) == 10 for a in ann)
    assert {a["question_type"] for a in ann} == {"how many", "is there a", "what color is the",
                                                 "what shape is the", "is the"}


def test_nlvr2_labels_are_balanced(tiny_benchmark):
    rows = [json.loads(line) for line in (tiny_benchmark / "nlvr2" / "train.json").read_text().splitlines()]
    share = sum(r["label"] == "True" for r in rows) / len(rows)
    assert 0.4 < share < 0.6


def test_text_relevant_patches_are_a_minority(tiny_benchmark):
    """Which patches a model keeps must decide its accuracy: text-relevant patches are <= 25%."""
    ds = CaptionDataset(ann_file="annotations/captions_train.json", instances_file="annotations/instances_train.json",
                        data_root=str(tiny_benchmark), data_prefix={"img_path": "images"})
    fraction = relevant_patch_fraction(ds, patch_size=8)
    print(f"\nmean share of text-relevant 8px patches on tiny/train: {fraction:.1%}")
    assert 0.05 < fraction <= 0.25


@pytest.mark.slow
def test_same_seed_same_hash_other_seed_other_hash(tmp_path, tiny_benchmark):
    first = _cli("data", "make", "--out", str(tmp_path / "a"), "--seed", "0")
    assert first.returncode == 0, first.stderr
    hash_line = first.stdout.strip().splitlines()[-1]
    assert hash_line == f"sha256:{read_manifest(tiny_benchmark)['content_sha256']}"
    other = _cli("data", "make", "--out", str(tmp_path / "b"), "--seed", "1", "--workers", "1")
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip().splitlines()[-1] != hash_line
    again = _cli("data", "make", "--out", str(tmp_path / "a"), "--seed", "0")  # already there: reused
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == hash_line


def test_a_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = benchmark._scene_record

    def failing(args):
        calls["n"] += 1
        if calls["n"] > 100:
            raise RuntimeError("disk full")
        return real(args)

    monkeypatch.setattr(benchmark, "_scene_record", failing)
    out = tmp_path / "bench"
    with pytest.raises(RuntimeError), contextlib.redirect_stderr(io.StringIO()):
        make_benchmark(out, workers=1)
    assert list(tmp_path.iterdir()) == []

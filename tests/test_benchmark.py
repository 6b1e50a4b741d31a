"""The offline benchmark generator: determinism, real formats, sizes and the text-relevant share."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from collections import Counter

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


def _template(sentence: str) -> str:
    """The words of a statement with its colours and shapes blanked out."""
    from harness.data.scenes import COLOURS

    nouns = sorted({*CATEGORIES, *(f"{c}s" for c in CATEGORIES), "crosses"}, key=len, reverse=True)
    for word in (*COLOURS, *nouns):
        sentence = re.sub(rf"\b{word}\b", "_", sentence)
    return sentence


def test_nlvr2_statements_do_not_give_away_their_label(tiny_benchmark):
    """Every statement template is True about half the time, so only the images decide the label: guessing
    each test statement's label from its template's (or the exact sentence's) majority in train is chance."""
    def rows(split: str) -> list[dict]:
        return [json.loads(line) for line in (tiny_benchmark / "nlvr2" / f"{split}.json").read_text().splitlines()]

    train, test = rows("train"), rows("test")
    for key in (_template, lambda sentence: sentence):
        votes: dict[str, Counter] = {}
        for r in train:
            votes.setdefault(key(r["sentence"]), Counter())[r["label"]] += 1
        guess = [votes[k].most_common(1)[0][0] if (k := key(r["sentence"])) in votes else "True" for r in test]
        accuracy = sum(g == r["label"] for g, r in zip(guess, test, strict=True)) / len(test)
        assert accuracy < 0.556, accuracy  # 500 test pairs: 0.556 is 2.5 standard deviations above 0.5
    pooled: dict[str, Counter] = {}
    for r in train + test + rows("val"):
        pooled.setdefault(_template(r["sentence"]), Counter())[r["label"]] += 1
    assert len(pooled) >= 8
    for template, counts in pooled.items():
        if sum(counts.values()) >= 100:
            assert 0.38 < counts["True"] / sum(counts.values()) < 0.62, (template, counts)


def test_counting_questions_do_not_favour_one_answer(tiny_benchmark):
    """"How many" questions pick the count first, so "0" is not the answer to half of them."""
    ann = json.loads((tiny_benchmark / "vqa" / "v2_synth_train_annotations.json").read_text())["annotations"]
    counts = Counter(a["multiple_choice_answer"] for a in ann if a["question_type"] == "how many")
    assert counts.most_common(1)[0][1] / sum(counts.values()) < 0.4 and {"0", "1", "2"} <= set(counts)


def test_text_relevant_patches_are_a_minority(tiny_benchmark):
    """Which patches a model keeps must decide its accuracy: text-relevant patches are <= 25%."""
    ds = CaptionDataset(ann_file="annotations/captions_train.json", instances_file="annotations/instances_train.json",
                        data_root=str(tiny_benchmark), data_prefix={"img_path": "images"})
    fraction = relevant_patch_fraction(ds, patch_size=8)
    print(f"\nmean share of text-relevant 8px patches on tiny/train: {fraction:.1%}")
    assert 0.05 < fraction <= 0.25


@pytest.mark.slow
def test_same_seed_same_hash_whatever_the_workers(tmp_path, tiny_benchmark):
    """One process writes the bytes two wrote (the session's benchmark). Another seed's bytes differ from the first
    image on (test_scene_records_are_a_function_of_seed_split_and_index), so a whole second benchmark is not made."""
    first = _cli("data", "make", "--out", str(tmp_path / "a"), "--seed", "0", "--workers", "1")
    assert first.returncode == 0, first.stderr
    hash_line = first.stdout.strip().splitlines()[-1]
    assert hash_line == f"sha256:{read_manifest(tiny_benchmark)['content_sha256']}"
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


def test_the_default_dataset_follows_the_generator(tiny_benchmark, tmp_path, monkeypatch):
    """``data/tiny`` (made by copa-bench when no --data is given) is remade when an older generator wrote
    it, so a changed generator never runs on stale text; a current one is used as it is."""
    import shutil

    from harness import runner

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_benchmark, runner.DEFAULT_DATA)
    made = []
    monkeypatch.setattr(benchmark, "make_benchmark", lambda out, **kwargs: made.append(kwargs))
    assert runner.ensure_benchmark(None) == runner.DEFAULT_DATA and made == []
    manifest_path = runner.DEFAULT_DATA / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps(dict(manifest, generator_version=benchmark.GENERATOR_VERSION - 1)))
    runner.ensure_benchmark(None)
    assert made == [dict(preset="tiny", seed=0, force=True)]

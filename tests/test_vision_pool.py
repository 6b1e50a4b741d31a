"""The benchmark's vision pool: single-object images in ImageNet's folder-per-class layout, drawn apart from the
caption images and without boxes, that the tiny ViT initialisation learns from (issue: a box-free ViT init)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from harness.data.benchmark import PRESETS, read_manifest
from harness.data.datasets import ImageClassDataset, image_class_labels, image_class_table
from harness.data.scenes import CATEGORIES, COLOURS
from harness.errors import InputError


def test_pool_layout_and_counts(tiny_benchmark):
    pool = tiny_benchmark / "vision_pool"
    table = json.loads((pool / "classes.json").read_text())
    assert len(table) == len(CATEGORIES) * len(COLOURS)
    assert all(set(entry) == {"dir", "colour", "category"} for entry in table)  # labels only: no box anywhere
    per_class = PRESETS["tiny"].pool_per_class
    for split, n in per_class.items():
        for entry in table:
            files = sorted((pool / split / entry["dir"]).iterdir())
            assert len(files) == n and all(f.suffix == ".png" for f in files)
    assert read_manifest(tiny_benchmark)["counts"]["vision_pool"] == {
        split: n * len(table) for split, n in per_class.items()}


def test_pool_images_show_their_class_and_share_none_with_the_caption_images(tiny_benchmark):
    pool = tiny_benchmark / "vision_pool"
    caption_images = {hashlib.sha256(p.read_bytes()).digest() for p in (tiny_benchmark / "images").iterdir()}
    for entry in json.loads((pool / "classes.json").read_text())[::9]:
        for path in sorted((pool / "train" / entry["dir"]).iterdir())[:3]:
            assert hashlib.sha256(path.read_bytes()).digest() not in caption_images
            pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
            share = (pixels == np.array(COLOURS[entry["colour"]])).all(axis=1).mean()
            assert 0.01 < share < 0.5, (path, share)  # one object of the class's colour on the background


@pytest.mark.parametrize("single_label", [False, True])
def test_class_labels_follow_the_folders(tiny_benchmark, single_label):
    pool = tiny_benchmark / "vision_pool"
    dataset = ImageClassDataset(ann_file=str(pool / "classes.json"), data_root="", split="val",
                                single_label=single_label, lazy_init=False)
    table = {e["dir"]: e for e in json.loads((pool / "classes.json").read_text())}
    assert len(dataset) == PRESETS["tiny"].pool_per_class["val"] * len(table)
    for i in range(0, len(dataset), 37):
        info = dataset.get_data_info(i)
        entry = table[info["img_path"].split("/")[-2]]
        names = {f"{entry['colour']} {entry['category']}"}
        if not single_label:
            names |= {entry["colour"], entry["category"]}
        assert {dataset.classes[k] for k in np.flatnonzero(info["labels"])} == names


def test_class_list_orders_and_bad_tables(tmp_path):
    table = [{"dir": "red_ring", "colour": "red", "category": "ring"},
             {"dir": "blue_ring", "colour": "blue", "category": "ring"}]
    assert image_class_labels(table) == ["ring", "blue", "red", "blue ring", "red ring"]
    assert image_class_labels(table, single_label=True) == ["red ring", "blue ring"]
    for bad, field in (([], None), ([{"dir": "../x", "colour": "red", "category": "ring"}], "[0].dir"),
                       ([{"dir": "a", "colour": 3, "category": "ring"}], "[0].colour"), (table + table[:1], "dir")):
        path = tmp_path / "classes.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(InputError) as e:
            image_class_table(str(path))
        assert str(path) in str(e.value) and (field is None or field in str(e.value))

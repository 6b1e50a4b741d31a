"""``copa-bench data check``: load every file of a generated benchmark through the same loaders the
tasks use (the tokenizer too), decode every image, check it has the size its annotation declares, and report
sizes and the share of text-relevant patches."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence

import numpy as np

from copa.patch_labels import patch_labels_from_boxes
from harness.data.benchmark import SPLITS, offline_datasets, read_manifest
from harness.data.io import check_image_size
from harness.data.tokenizer import load_tokenizer
from harness.data.transforms import read_rgb
from harness.registry import DATASETS


def relevant_patch_fraction(dataset, patch_size: int, min_overlap: float = 0.1) -> float:
    """Mean share of patches that are text-relevant, over the captions of a ``CaptionDataset``."""
    fractions = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        labels = patch_labels_from_boxes(info["relevant_boxes"], (info["height"], info["width"]), patch_size,
                                         min_overlap)
        fractions.append(labels.mean())
    return float(np.mean(fractions))


def check_benchmark(
    root: str | os.PathLike, splits: Sequence[str] | None = None, patch_size: int = 8, min_overlap: float = 0.1
) -> str:
    from pycocotools.coco import COCO

    import harness.data.datasets  # noqa: F401  (registers the dataset classes)

    manifest = read_manifest(root)
    load_tokenizer(os.path.join(root, "tokenizer"))  # every task reads it; a bad one fails here, not mid-run
    lines = [f"benchmark {root}: preset {manifest.get('preset')}, seed {manifest.get('seed')}, "
             f"sha256:{manifest.get('content_sha256')}",
             f"{'split':<6} {'images':>7} {'captions':>9} {'vqa':>6} {'nlvr2':>6} {'refs':>6} {'relevant patches':>17}"]
    for split in splits or SPLITS:
        built = {name: DATASETS.build(cfg) for name, cfg in offline_datasets(root, split).items()}
        for kind in ("instances", "captions"):  # after our checks, which name the bad field
            with contextlib.redirect_stdout(io.StringIO()):
                COCO(os.path.join(root, "annotations", f"{kind}_{split}.json"))
        declared: dict[str, tuple[int, int]] = {}
        for i in range(len(built["captions"])):
            info = built["captions"].get_data_info(i)
            declared[info["img_path"]] = (info["height"], info["width"])
        paths = set(declared)
        for i in range(len(built["nlvr2"])):
            paths.update(built["nlvr2"].get_data_info(i)["img_paths"])
        for path in sorted(paths):
            image = read_rgb(path)
            if path in declared:
                check_image_size(path, (image.height, image.width), declared[path], built["captions"].ann_file)
        fraction = relevant_patch_fraction(built["captions"], patch_size, min_overlap)
        lines.append(f"{split:<6} {len(built['retrieval']):>7} {len(built['captions']):>9} {len(built['vqa']):>6} "
                     f"{len(built['nlvr2']):>6} {len(built['grounding']):>6} {fraction:>16.1%}")
    lines.append(f"relevant patches: mean share of {patch_size}px patches overlapping (> {min_overlap:.0%} of a patch) "
                 "an object the caption mentions")
    return "\n".join(lines)

"""Image transforms for the dataset pipelines. Geometry-preserving only: a flip or crop would make
captions ("to the left of") and boxes wrong."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from copa.patch_labels import box_patch_overlap, patch_labels_from_boxes
from harness.data.io import check_regular_file
from harness.errors import InputError
from harness.registry import TRANSFORMS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def read_rgb(path: str) -> Image.Image:
    """Decode an image file fully; a missing or corrupt file is an InputError naming it. A path that is
    not a regular file (a named pipe would block the open forever) is refused before it is opened."""
    check_regular_file(path, "image")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise InputError(path, "image", "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(path, "image", f"cannot be decoded: {e}") from None


@TRANSFORMS.register_module()
class LoadImage:
    """``img_path`` → ``img`` (or each of ``img_paths`` → ``imgs``), as RGB PIL images."""

    def __call__(self, results: dict) -> dict:
        if "img_paths" in results:
            results["imgs"] = [read_rgb(p) for p in results["img_paths"]]
            first = results["imgs"][0]
        else:
            results["img"] = first = read_rgb(results["img_path"])
        results["ori_shape"] = (first.height, first.width)
        return results


@TRANSFORMS.register_module()
class Resize:
    """Resize to ``size`` x ``size`` (bicubic) and scale the boxes that travel with the sample."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, results: dict) -> dict:
        h, w = results["ori_shape"]
        sx, sy = self.size / w, self.size / h
        for key in ("img", "imgs"):
            if key in results:
                imgs = results[key] if key == "imgs" else [results[key]]
                resized = [im.resize((self.size, self.size), Image.BICUBIC) for im in imgs]
                results[key] = resized if key == "imgs" else resized[0]
        for key in ("relevant_boxes", "object_boxes"):
            if key in results:
                results[key] = [[bx * sx, by * sy, bw * sx, bh * sy] for bx, by, bw, bh in results[key]]
        if "bbox" in results:
            x, y, bw, bh = results["bbox"]
            results["bbox"] = [x * sx, y * sy, bw * sx, bh * sy]
        results["img_shape"] = (self.size, self.size)
        return results


@TRANSFORMS.register_module()
class PatchLabels:
    """0/1 text-relevance label per ViT patch from the boxes of the objects the caption mentions."""

    def __init__(self, patch_size: int, min_overlap: float = 0.1) -> None:
        self.patch_size = patch_size
        self.min_overlap = min_overlap

    def __call__(self, results: dict) -> dict:
        if "relevant_boxes" in results:
            shape = results.get("img_shape", results["ori_shape"])
            labels = patch_labels_from_boxes(results["relevant_boxes"], shape, self.patch_size, self.min_overlap)
            results["patch_labels"] = torch.from_numpy(labels.astype(np.float32))
        return results


@TRANSFORMS.register_module()
class ObjectPatchWeights:
    """``object_boxes`` → ``object_weights`` ``(objects, patches)``: each patch's share of the area a box covers
    on the ViT's patch grid, normalised to sum to one per object: the weights that pool an object's patch tokens
    into one vector (vision pre-training names each object from it)."""

    def __init__(self, patch_size: int) -> None:
        self.patch_size = patch_size

    def __call__(self, results: dict) -> dict:
        if "object_boxes" in results:
            shape = results.get("img_shape", results["ori_shape"])
            rows = [box_patch_overlap(box, shape, self.patch_size) for box in results["object_boxes"]]
            weights = np.stack(rows) if rows else np.zeros((0, math.ceil(shape[0] / self.patch_size)
                                                              * math.ceil(shape[1] / self.patch_size)))
            weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
            results["object_weights"] = torch.from_numpy(weights.astype(np.float32))
        return results


@TRANSFORMS.register_module()
class ToTensor:
    """PIL image(s) → normalised float tensors (C, H, W); CLIP's mean and std by default."""

    def __init__(self, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def _one(self, img: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std

    def __call__(self, results: dict) -> dict:
        if "imgs" in results:
            results["imgs"] = torch.stack([self._one(im) for im in results["imgs"]])
        if "img" in results:
            results["img"] = self._one(results["img"])
        return results

"""Object boxes to patch-level labels for Patch-Text Alignment (PTA).

A patch is text-relevant when it overlaps the box of an object whose category the caption mentions.
Which categories a caption mentions is decided from the caption's words against the category names,
as it must be on real COCO: plurals ("two buses", "knives"), multi-word names ("traffic light"), and a
category mentioned twice is still one category. Nothing here knows how the data was generated.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

_IRREGULAR_PLURALS = {
    "person": ("people", "persons"),
    "man": ("men",),
    "woman": ("women",),
    "child": ("children",),
    "mouse": ("mice",),
    "knife": ("knives",),
    "leaf": ("leaves",),
    "sheep": ("sheep",),
    "fish": ("fish",),
    "skis": ("skis",),
    "scissors": ("scissors",),
}
_WORD = re.compile(r"[a-z0-9]+")


def _plurals(word: str) -> set[str]:
    if word in _IRREGULAR_PLURALS:
        return set(_IRREGULAR_PLURALS[word])
    if re.search(r"(s|x|z|ch|sh)$", word):
        return {word + "es"}
    if re.search(r"[^aeiou]y$", word):
        return {word[:-1] + "ies"}
    if word.endswith("fe"):
        return {word + "s", word[:-2] + "ves"}
    if word.endswith("f"):
        return {word + "s", word[:-1] + "ves"}
    return {word + "s"}


def name_variants(name: str) -> set[tuple[str, ...]]:
    """Word sequences that refer to a category: the name and its plural (last word pluralised)."""
    words = tuple(_WORD.findall(name.lower()))
    if not words:
        return set()
    return {words} | {words[:-1] + (p,) for p in _plurals(words[-1])}


@functools.lru_cache(maxsize=16)
def _longest_first(categories: tuple[tuple[int, str], ...]) -> list[tuple[tuple[str, ...], int]]:
    """Every (name variant, category id), longest variant first; one list per category table."""
    return sorted(((v, cid) for cid, name in categories for v in name_variants(name)), key=lambda vc: -len(vc[0]))


def mentioned_categories(caption: str, categories: Mapping[int, str]) -> set[int]:
    """Ids of the categories whose name (or plural) occurs in ``caption`` as whole words.

    Longer names win over names they contain: in "a traffic light", "light" (if it were a category)
    is not counted, because its words are already taken by "traffic light".
    """
    tokens = _WORD.findall(caption.lower())
    variants = _longest_first(tuple(categories.items()))
    taken = [False] * len(tokens)
    found: set[int] = set()
    for words, cid in variants:
        n = len(words)
        for start in range(len(tokens) - n + 1):
            if tuple(tokens[start : start + n]) == words and not any(taken[start : start + n]):
                found.add(cid)
                taken[start : start + n] = [True] * n
    return found


def box_patch_overlap(
    box: Sequence[float], image_size: tuple[int, int], patch_size: int
) -> np.ndarray:
    """Share of each patch's area (row-major, ``ceil(H/p) * ceil(W/p)``) that one COCO ``[x, y, w, h]`` box
    covers, the box clipped to the image of ``image_size = (height, width)``. The last row/column patch is
    measured by its full area when the image size is not a multiple of the patch size."""
    height, width = image_size
    if patch_size <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    rows, cols = math.ceil(height / patch_size), math.ceil(width / patch_size)
    x0, y0 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
    x1, y1 = min(float(box[0]) + float(box[2]), width), min(float(box[1]) + float(box[3]), height)
    if x1 <= x0 or y1 <= y0:
        return np.zeros(rows * cols)
    edges_y = np.arange(rows + 1) * patch_size
    edges_x = np.arange(cols + 1) * patch_size
    overlap_y = np.clip(np.minimum(edges_y[1:], y1) - np.maximum(edges_y[:-1], y0), 0, None)
    overlap_x = np.clip(np.minimum(edges_x[1:], x1) - np.maximum(edges_x[:-1], x0), 0, None)
    return (np.outer(overlap_y, overlap_x) / float(patch_size * patch_size)).reshape(-1)


def patch_labels_from_boxes(
    boxes: Sequence[Sequence[float]] | np.ndarray,
    image_size: tuple[int, int],
    patch_size: int,
    min_overlap: float = 0.1,
) -> np.ndarray:
    """0/1 label per patch (row-major, ``(H/p) * (W/p)``) for the union of ``boxes``.

    ``boxes`` are COCO ``[x, y, w, h]`` in pixels of an image of ``image_size = (height, width)``.
    A patch is positive when the area it shares with one box, clipped to the image, is more than
    ``min_overlap`` of the patch's area (so a box that only touches a patch's border never marks it).
    Boxes partly outside the image are clipped; the image size need not be a multiple of the patch
    size (the ViT grid is ``ceil`` of it, and the last row/column patch is measured by its full area).
    """
    if patch_size <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    if not 0.0 <= min_overlap < 1.0:
        raise ValueError(f"min_overlap must be in [0, 1), got {min_overlap}")
    height, width = image_size
    labels = np.zeros(math.ceil(height / patch_size) * math.ceil(width / patch_size), dtype=np.uint8)
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        labels |= (box_patch_overlap(box, image_size, patch_size) > min_overlap).astype(np.uint8)
    return labels


def caption_patch_labels(
    caption: str,
    annotations: Iterable[Mapping],
    categories: Mapping[int, str],
    image_size: tuple[int, int],
    patch_size: int,
    min_overlap: float = 0.1,
) -> np.ndarray:
    """Patch labels of one caption: the boxes of every object whose category the caption mentions."""
    wanted = mentioned_categories(caption, categories)
    boxes = [a["bbox"] for a in annotations if a["category_id"] in wanted]
    return patch_labels_from_boxes(boxes, image_size, patch_size, min_overlap)

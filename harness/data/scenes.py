"""Cluttered synthetic scenes: shapes of several colours and sizes on a textured background.

A scene is drawn from its own random generator, so any image can be rebuilt from (seed, split, index)
alone and the benchmark is byte-identical for a seed whatever order the images are drawn in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "ring",
    "half circle",
)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (240, 215, 35),
    "purple": (135, 50, 175),
    "orange": (245, 135, 25),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SIZE_WORDS = ("small", "medium", "large")


@dataclass(frozen=True)
class SceneSpec:
    image_size: int
    min_objects: int
    max_objects: int
    min_object: int
    max_object: int
    min_visible: float = 0.5


@dataclass
class SceneObject:
    category: str
    colour: str
    size_word: str
    bbox: list[float]  # COCO [x, y, w, h] of the visible part
    area: int  # visible pixels

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return x + w / 2, y + h / 2


def _shape_mask(category: str, size: int, x0: int, y0: int, canvas: int) -> np.ndarray:
    mask = Image.new("1", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    x1, y1 = x0 + size - 1, y0 + size - 1
    cx, cy, r = x0 + (size - 1) / 2, y0 + (size - 1) / 2, (size - 1) / 2
    if category == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=1)
    elif category == "square":
        inset = size // 8
        draw.rectangle([x0 + inset, y0 + inset, x1 - inset, y1 - inset], fill=1)
    elif category == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=1)
    elif category == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=1)
    elif category == "star":
        points = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
        draw.polygon(points, fill=1)
    elif category == "cross":
        bar = max(2, size // 3)
        lo = int(round(cx - bar / 2))
        draw.rectangle([lo, y0, lo + bar - 1, y1], fill=1)
        lo = int(round(cy - bar / 2))
        draw.rectangle([x0, lo, x1, lo + bar - 1], fill=1)
    elif category == "ring":
        draw.ellipse([x0, y0, x1, y1], outline=1, width=max(2, size // 5))
    elif category == "half circle":
        draw.pieslice([x0, y0 - size // 4, x1, y1 - size // 4], 0, 180, fill=1)
    else:
        raise ValueError(f"unknown category {category!r}")
    return np.array(mask, dtype=bool)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted, noisy background with a low-frequency pattern so that patches are not trivially empty."""
    base = rng.uniform(70, 170, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(1.5, 5.0) * 2 * math.pi / size
    wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * freq + rng.uniform(0, 2 * math.pi))
    tint = rng.uniform(-1, 1, size=3) * 18
    img = base[None, None, :] + wave[..., None] * tint[None, None, :]
    img += rng.normal(0, 14, size=(size, size, 3))
    return img


def draw_scene(rng: np.random.Generator, spec: SceneSpec, category: str | None = None,
               colour: str | None = None) -> tuple[Image.Image, list[SceneObject]]:
    """Draw one scene; objects may touch and partly occlude each other, but each keeps at least
    ``min_visible`` of its pixels so that it is still there to be named. ``category`` and ``colour`` fix
    every object's (the vision pool's single-object images of one class)."""
    fixed_category, fixed_colour = category, colour
    size = spec.image_size
    img = _background(rng, size)
    n_objects = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    placed: list[tuple[str, str, int]] = []
    full_area = np.zeros(0)
    visible = np.zeros((0, size, size), dtype=bool)
    for _ in range(n_objects):
        for _attempt in range(30):
            category = fixed_category or CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            colour = fixed_colour or list(COLOURS)[int(rng.integers(len(COLOURS)))]
            obj_size = int(rng.integers(spec.min_object, spec.max_object + 1))
            x0 = int(rng.integers(0, size - obj_size + 1))
            y0 = int(rng.integers(0, size - obj_size + 1))
            mask = _shape_mask(category, obj_size, x0, y0, size)
            remaining = visible & ~mask[None]
            if np.any(remaining.sum(axis=(1, 2)) < spec.min_visible * full_area):
                continue
            placed.append((category, colour, obj_size))
            full_area = np.append(full_area, mask.sum())
            visible = np.concatenate([remaining, mask[None]], axis=0)
            break
    objects = []
    span = spec.max_object - spec.min_object + 1
    for (category, colour, obj_size), vis in zip(placed, visible, strict=True):
        img[vis] = COLOURS[colour]
        ys, xs = np.nonzero(vis)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        size_word = SIZE_WORDS[min(2, (obj_size - spec.min_object) * 3 // span)]
        objects.append(SceneObject(category, colour, size_word, bbox, int(vis.sum())))
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB"), objects


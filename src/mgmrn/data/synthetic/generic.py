"""The generic drawn set the shipped demo backbone is pretrained on (``scripts/pretrain_backbone.py``).

What ImageNet is to the benchmarks, this set is to the drawn demo sets: many object categories,
labelled the way a generic pretraining labels, and none of them the task. An image shows 1-6
objects on a cluttered background, each of a category (:data:`CATEGORIES`), a colour
(:data:`GENERIC_COLORS`) and a surface texture (:data:`TEXTURES`), rotated, mirrored, of a
diameter from a few pixels to half the image side (log-uniform), overlapping one another. Its
labels are multi-label presence: which categories, colours, textures and category x colour pairs
show (an object counts when at least :data:`MIN_VISIBLE` of it stays in view).

Disjoint from the demo sets' classes: no category is one of the shapes set's shapes
(:data:`~mgmrn.data.synthetic.demo_draw.SHAPES`), nothing is a creature, a beak or a wing, and no
label names a part; ``tests/unit/test_data_generic.py`` checks it. Colours are shared with the demo
palette on purpose (and four more added): a colour is a generic cue, as it is in ImageNet.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from mgmrn.data.synthetic.demo_draw import (
    COLORS,
    SUPERSAMPLE,
    background,
    downsample,
    paint,
    pattern_mask,
    place,
)

CATEGORIES = ("ellipse", "crescent", "arrow", "heart", "diamond", "bar", "chevron", "semicircle",
              "trapezoid", "teardrop")
EXTRA_COLORS = {"pink": (240, 150, 190), "brown": (130, 80, 40), "black": (30, 30, 34),
                "lime": (170, 230, 60)}
GENERIC_COLORS = {**COLORS, **EXTRA_COLORS}
TEXTURES = ("solid", "stripes", "dots", "checker", "waves")
OBJECTS = (1, 7)  # objects per image, [low, high)
DIAMETER = (0.04, 0.5)  # object diameter as a share of the image side, log-uniform
MIN_VISIBLE = 0.4  # share of an object's pixels that must stay in view for it to be labelled


def label_names() -> list[str]:
    """The L label names: ``category:<c>``, ``color:<c>``, ``texture:<t>``, ``<colour>_<category>``."""
    return ([f"category:{c}" for c in CATEGORIES] + [f"color:{c}" for c in GENERIC_COLORS]
            + [f"texture:{t}" for t in TEXTURES]
            + [f"{col}_{cat}" for cat, col in itertools.product(CATEGORIES, GENERIC_COLORS)])


def category_mask(category: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a category of radius about 1 centred at the origin; (h, w) bool like ``u``."""
    r = np.hypot(u, v)
    if category == "ellipse":
        return u * u + (v / 0.55) ** 2 <= 1.0
    if category == "crescent":
        return (r <= 1.0) & (np.hypot(u - 0.5, v) > 0.8)
    if category == "arrow":
        shaft = (np.abs(v) <= 0.2) & (u >= -1.0) & (u <= 0.2)
        return shaft | ((u >= 0.1) & (u <= 1.0) & (np.abs(v) <= 0.85 * (1.0 - u)))
    if category == "heart":
        x, y = 1.25 * u, 1.25 * v + 0.25
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    if category == "diamond":
        return np.abs(u) + np.abs(v) / 0.6 <= 1.0
    if category == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.24)
    if category == "chevron":
        return (np.abs(u + 0.8 * np.abs(v) - 0.3) <= 0.25) & (np.abs(v) <= 0.9)
    if category == "semicircle":
        return (r <= 1.0) & (v >= 0.0)
    if category == "trapezoid":
        return (np.abs(v) <= 0.6) & (np.abs(u) <= 0.45 + 0.4 * (v + 0.6) / 1.2)
    if category == "teardrop":
        tip = (u >= -0.3) & (u <= 1.0) & (np.abs(v) <= 0.62 * (1.0 - u) / 1.3)
        return (np.hypot(u + 0.3, v) <= 0.62) | tip
    raise ValueError(f"unknown category {category!r}")


def texture_mask(texture: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Where the texture darkens the object; ``waves`` besides the demo set's patterns."""
    if texture == "waves":
        return (y / period + 0.25 * np.sin(2 * math.pi * x / period)) % 1.0 < 0.45
    return pattern_mask(texture, x, y, period)


def draw_generic(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One generic image and its labels.

    Args:
        rng: the image's generator.
        size: output side in pixels.

    Returns:
        (size, size, 3) uint8 image; (L,) float32 0/1 labels in :func:`label_names` order.
    """
    side = size * SUPERSAMPLE
    image = background(rng, side)
    owner = np.zeros((side, side), dtype=np.int16)  # which object shows at each point, 0: none
    colors = list(GENERIC_COLORS)
    objects, areas = [], []
    for k in range(1, rng.integers(*OBJECTS) + 1):
        diameter = math.exp(rng.uniform(*np.log(DIAMETER)))
        rows, cols, u, v, x, y = place(rng, side, (diameter, diameter))
        if rng.random() < 0.5:
            u = -u
        category = CATEGORIES[rng.integers(len(CATEGORIES))]
        color = colors[rng.integers(len(colors))]
        # small objects show their texture too coarsely to tell: they are drawn solid
        texture = TEXTURES[rng.integers(len(TEXTURES))] if diameter >= 0.15 else "solid"
        mask = category_mask(category, u, v)
        tone = np.clip(np.array(GENERIC_COLORS[color], np.float32) * rng.uniform(0.85, 1.1)
                       + rng.normal(0, 8, 3), 0, 255)
        paint(image[rows, cols], mask, tone)
        period = max(diameter * side / 4, 3.0)
        paint(image[rows, cols], mask & texture_mask(texture, x, y, period), tone * 0.3)
        owner[rows, cols][mask] = k
        objects.append((category, color, texture))
        areas.append(int(mask.sum()))
    shown = np.bincount(owner.ravel(), minlength=len(objects) + 1)
    index = {name: i for i, name in enumerate(label_names())}
    labels = np.zeros(len(index), dtype=np.float32)
    for k, (category, color, texture) in enumerate(objects, start=1):
        if areas[k - 1] and shown[k] >= MIN_VISIBLE * areas[k - 1]:
            for name in (f"category:{category}", f"color:{color}", f"texture:{texture}",
                         f"{color}_{category}"):
                labels[index[name]] = 1.0
    return downsample(rng, image, size), labels


def draw_generic_batch(seed: int, start: int, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start .. start+count-1`` of the set with ``seed``, each from its own generator.

    Returns:
        (count, size, size, 3) uint8; (count, L) float32.
    """
    drawn = [draw_generic(np.random.default_rng([seed, i]), size) for i in range(start, start + count)]
    return np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn])


__all__ = ["CATEGORIES", "GENERIC_COLORS", "TEXTURES", "category_mask",
           "draw_generic", "draw_generic_batch", "label_names"]

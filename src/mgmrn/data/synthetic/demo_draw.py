"""Drawing of the demo images: one patterned object, faint distractors, a cluttered background.

Everything is numpy on a 2x supersampled grid (for smooth edges), averaged down at the end. All
randomness comes from the generator passed in, so an image is a pure function of its seed.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (160, 60, 210),
    "cyan": (40, 200, 210),
    "orange": (245, 130, 30),
    "white": (245, 245, 245),
}
PATTERNS = ("solid", "stripes", "dots", "checker")
SUPERSAMPLE = 2
OBJECT_SIZE = (0.32, 0.52)  # object diameter, as a share of the image side
DISTRACTOR_SIZE = (0.14, 0.26)


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a shape of radius about 1 centred at the origin.

    Args:
        shape: one of SHAPES.
        u: (H, W) object-frame coordinates, in units of the object radius.
        v: (H, W) same, other axis.

    Returns:
        (H, W) bool mask.
    """
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == "triangle":  # equilateral, circumradius 1: inradius 0.5 along three normals
        return (v >= -0.5) & (0.866 * u + 0.5 * v <= 0.5) & (-0.866 * u + 0.5 * v <= 0.5)
    if shape == "star":  # five points: radius alternates between 1 and 0.45 around the circle
        phase = (np.arctan2(v, u) * 5 / (2 * np.pi)) % 1.0
        return r <= 0.45 + 0.55 * np.abs(2 * phase - 1) ** 1.5
    if shape == "cross":
        a, b = np.abs(u), np.abs(v)
        return ((a <= 0.32) & (b <= 1.0)) | ((b <= 0.32) & (a <= 1.0))
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "hexagon":
        a = np.abs(u)
        return (np.abs(v) <= 0.866) & (0.866 * a + 0.5 * np.abs(v) <= 0.866)
    raise ValueError(f"unknown shape {shape!r}")


def pattern_mask(pattern: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Where the pattern darkens the object.

    Args:
        pattern: one of PATTERNS.
        x: (H, W) object-frame coordinates in pixels (rotating with the object).
        y: (H, W) same, other axis.
        period: pattern period in pixels.

    Returns:
        (H, W) bool mask of the dark part.
    """
    if pattern == "solid":
        return np.zeros(x.shape, dtype=bool)
    if pattern == "stripes":
        return (y / period) % 1.0 < 0.45
    if pattern == "dots":
        dx, dy = (x / period) % 1.0 - 0.5, (y / period) % 1.0 - 0.5
        return dx * dx + dy * dy <= 0.28**2
    if pattern == "checker":
        half = period * 0.7
        return (np.floor(x / half) + np.floor(y / half)) % 2 == 0
    raise ValueError(f"unknown pattern {pattern!r}")


@functools.lru_cache(maxsize=8)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) of a side x side image, each (side, side)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    return yy, xx


def _box(side: int, cx: float, cy: float, extent: float) -> tuple[slice, slice]:
    """Rows and columns within ``extent`` pixels of a centre: work is done on this window only."""
    y0, y1 = max(0, int(cy - extent)), min(side, int(np.ceil(cy + extent)) + 1)
    x0, x1 = max(0, int(cx - extent)), min(side, int(np.ceil(cx + extent)) + 1)
    return slice(y0, y1), slice(x0, x1)


def background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Low-contrast clutter: a grey tone, smooth low-saturation noise and faint blobs.

    Returns:
        (side, side, 3) float image in 0..255.
    """
    base = rng.uniform(95, 165)
    coarse = rng.normal(0, 22, (6, 6, 1)) + rng.normal(0, 7, (6, 6, 3))  # mostly grey variation
    low = np.clip(base + coarse, 0, 255).astype(np.uint8)
    image = np.asarray(Image.fromarray(low).resize((side, side), Image.BICUBIC), dtype=np.float32)
    yy, xx = _grid(side)
    for _ in range(rng.integers(3, 7)):
        cx, cy = rng.uniform(0, side, 2)
        rx, ry = rng.uniform(0.05, 0.25, 2) * side
        rows, cols = _box(side, cx, cy, max(rx, ry))
        blob = ((xx[rows, cols] - cx) / rx) ** 2 + ((yy[rows, cols] - cy) / ry) ** 2 <= 1
        image[rows, cols][blob] += rng.normal(0, 14) + rng.normal(0, 4, 3)
    return image


def place(rng: np.random.Generator, side: int, size_range: tuple[float, float]):
    """Random radius, centre and rotation; the window around the object and its frame coordinates.

    Returns:
        (rows, cols, u, v, x, y): the window, object-frame coordinates in radii (u, v) and in
        pixels (x, y), each (h, w) over the window.
    """
    radius = rng.uniform(*size_range) * side / 2
    cx, cy = rng.uniform(radius, side - radius, 2)
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = _box(side, cx, cy, 1.2 * radius)
    yy, xx = _grid(side)
    dx, dy = xx[rows, cols] - cx, yy[rows, cols] - cy
    c, s = np.cos(angle), np.sin(angle)
    x, y = c * dx + s * dy, -s * dx + c * dy
    return rows, cols, x / radius, y / radius, x, y


def paint(window: np.ndarray, mask: np.ndarray, color: np.ndarray, alpha: float = 1.0) -> None:
    window[mask] = (1 - alpha) * window[mask] + alpha * color


def jitter_tone(rng: np.random.Generator, color: str) -> np.ndarray:
    """A palette colour with a random brightness and a slight random tint, (3,) float."""
    return np.clip(np.array(COLORS[color], dtype=np.float32) * rng.uniform(0.85, 1.1)
                   + rng.normal(0, 8, 3), 0, 255)


def block_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Mean of each SUPERSAMPLE x SUPERSAMPLE block: (size*SUPERSAMPLE, ., ...) -> (size, size, ...).

    Strided sums, several times faster than a mean over a reshaped array, and equal to it bit for
    bit (the same additions in the same order).
    """
    total = np.zeros((size, size, *image.shape[2:]), dtype=np.float32)
    for dy in range(SUPERSAMPLE):
        for dx in range(SUPERSAMPLE):
            total += image[dy::SUPERSAMPLE, dx::SUPERSAMPLE]
    return total / SUPERSAMPLE**2


def downsample(rng: np.random.Generator, image: np.ndarray, size: int) -> np.ndarray:
    """Average a supersampled (size*SUPERSAMPLE, ., 3) float image down, add sensor grain.

    Returns:
        (size, size, 3) uint8 image.
    """
    small = block_mean(image, size)
    small += rng.normal(0, 4, (size, size, 1)) + rng.normal(0, 2, (size, size, 3))  # sensor grain
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def draw_image(rng: np.random.Generator, size: int, shape: str, color: str, pattern: str,
               shapes: tuple[str, ...], colors: tuple[str, ...]) -> np.ndarray:
    """One demo image.

    Args:
        rng: the image's generator.
        size: output side in pixels.
        shape: the object's shape.
        color: the object's colour name.
        pattern: the object's surface pattern.
        shapes: shapes distractors may take.
        colors: colours in use; distractors take colours other than the object's.

    Returns:
        (size, size, 3) uint8 image.
    """
    side = size * SUPERSAMPLE
    image = background(rng, side)
    others = [c for c in colors if c != color] or list(colors)
    for _ in range(rng.integers(2, 5)):
        rows, cols, u, v, x, y = place(rng, side, DISTRACTOR_SIZE)
        tint = np.array(COLORS[others[rng.integers(len(others))]], dtype=np.float32)
        mask = shape_mask(shapes[rng.integers(len(shapes))], u, v)
        paint(image[rows, cols], mask, tint, alpha=rng.uniform(0.7, 1.0))
        paint(image[rows, cols], mask & pattern_mask(PATTERNS[rng.integers(len(PATTERNS))], x, y,
                                                      period=side / 9), tint * 0.3)
    rows, cols, u, v, x, y = place(rng, side, OBJECT_SIZE)
    body = shape_mask(shape, u, v)
    tone = jitter_tone(rng, color)
    window = image[rows, cols]
    paint(window, body, tone)
    paint(window, body & pattern_mask(pattern, x, y, period=side / 9), tone * 0.3)
    return downsample(rng, image, size)

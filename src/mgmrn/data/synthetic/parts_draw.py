"""Drawing of the parts images: a bird-like creature whose class lives in its parts, at three scales.

The creature, seen from the side, in its own frame (u forward, v up, units of the body radius R):
a tail and an elliptic body in the body colour (coarse), a wing on the body (middle, about a
quarter of the body's area), a dark hood with a white eye (a part with no attribute), and a small
beak (fine, a few pixels wide at 96 px). Every part has a dark outline. Placement, size,
rotation, mirroring, tail shape, wing tilt, beak length and the tones vary from image to image.

Before the creature, the background gets distractors in the same colours as the parts, drawn
regardless of the class: loose feathers shaped and sized like the wing, and seeds shaped and sized
like the beak. So a colour's presence, at any scale, says little about the part that wears it.

All randomness comes from the generator passed in, and the draws never depend on the part
colours: two classes drawn from the same generator state differ only inside the parts whose
colours differ. Besides the image, drawing returns the supersampled map of which layer shows where,
from which :func:`part_masks` tells where each part is visible.
"""

from __future__ import annotations

import math

import numpy as np

from mgmrn.data.synthetic.demo_draw import (
    COLORS,
    SUPERSAMPLE,
    background,
    block_mean,
    downsample,
    jitter_tone,
    paint,
    place,
)

PARTS = ("body", "wing", "beak")  # the parts that carry attributes, coarse to fine
OUTLINE = (28, 28, 32)
FIXED_TONES = {"hood": (66, 64, 72), "eye": (238, 238, 232), "pupil": OUTLINE}
LAYERS = ("outline", *PARTS, *FIXED_TONES)  # label codes 1.. of the painted layers
CODE = {name: i + 1 for i, name in enumerate(LAYERS)}
BODY_RADIUS = (0.2, 0.25)  # R, as a share of the image side
REACH = 1.66  # farthest drawn point from the body centre, in R (beak tip, tail end)
LINE = 0.06  # outline width, in R
FEATHERS = (2, 5)  # loose wing-like feathers per image, [low, high)
SEEDS = (5, 11)  # loose beak-like seeds per image
PLACE_TRIES = 20
HEAD_ZONE = (1.1, 0.25, 0.75)  # centre u, v and radius of a disc holding hood, eye and beak, in R


def _ellipse(u, v, centre: tuple[float, float], a: float, b: float, line: float,
             tilt: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Ellipse with semi-axes a, b turned by ``tilt``, with and without an outline.

    Returns:
        (outer, inner) bool masks like ``u``.
    """
    du, dv = u - centre[0], v - centre[1]
    c, s = math.cos(tilt), math.sin(tilt)  # Python floats keep float32 arrays float32
    p, q = c * du + s * dv, -s * du + c * dv
    return ((p / (a + line)) ** 2 + (q / (b + line)) ** 2 <= 1.0,
            (p / a) ** 2 + (q / b) ** 2 <= 1.0)


def _wedge(u, v, start: float, length: float, width0: float, width1: float, notch: float,
           line: float) -> tuple[np.ndarray, np.ndarray]:
    """Wedge along u from ``start`` over ``length`` (negative: backwards), with and without outline.

    Its half-width goes from width0 to width1; its far end is cut back at the centre line by a
    V-shaped notch of depth ``notch`` (a share of the length).

    Returns:
        (outer, inner) bool masks like ``u``.
    """
    t = (u - start) / length
    half = width0 + (width1 - width0) * np.clip(t, 0, 1)
    a = np.abs(v)
    end = 1.0 - notch * np.clip(1.0 - a / np.maximum(half, 1e-6), 0, 1)
    pad = line / abs(length)
    return ((t >= -pad) & (t <= end + pad) & (a <= half + line),
            (t >= 0) & (t <= end) & (a <= half))


def creature_layers(rng: np.random.Generator, u: np.ndarray,
                    v: np.ndarray) -> tuple[list, np.ndarray]:
    """The creature's layers, back to front, with their shape drawn from ``rng``.

    Args:
        rng: the image's generator (draws 5 numbers).
        u: (h, w) creature-frame coordinates in body radii, forward.
        v: (h, w) same, up.

    Returns:
        [(layer, box, outer, inner)]: layer is one of LAYERS; box the (rows, cols) slices of
        ``u`` where the layer lies (the small head layers are computed there only); outer the
        bool mask over the box with the outline, inner without it. Then the (h, w) bool disc
        around the head and beak.
    """
    tail_len, tail_spread, notch = rng.uniform(0.55, 0.8), rng.uniform(0.0, 0.3), rng.uniform(0, 0.5)
    tilt, beak_len = rng.uniform(-0.35, -0.1), rng.uniform(0.42, 0.55)
    zone = (u - HEAD_ZONE[0]) ** 2 + (v - HEAD_ZONE[1]) ** 2 <= HEAD_ZONE[2] ** 2
    rows, cols = np.flatnonzero(zone.any(axis=1)), np.flatnonzero(zone.any(axis=0))
    head = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # inside u: never empty
    whole = (slice(None), slice(None))
    hu, hv = u[head], v[head]
    return [
        ("body", whole, *_wedge(u, v - 0.08, -0.7, -tail_len, 0.14, 0.14 + tail_spread, notch, LINE)),
        ("body", whole, *_ellipse(u, v, (0, 0), 1, 0.78, LINE)),
        ("wing", whole, *_ellipse(u, v, (-0.12, 0.1), 0.6, 0.3, LINE, tilt)),
        ("hood", head, *_ellipse(hu, hv, (0.86, 0.28), 0.36, 0.36, LINE)),
        ("beak", head, *_wedge(hu, hv - 0.22, 1.06, beak_len, 0.16, 0.0, 0.0, LINE)),
        ("eye", head, *_ellipse(hu, hv, (0.88, 0.42), 0.085, 0.085, LINE)),
        ("pupil", head, *_ellipse(hu, hv, (0.9, 0.42), 0.045, 0.045, 0.0)),
    ], zone


def _distractors(rng: np.random.Generator, image: np.ndarray, palette: tuple[str, ...],
                 keep_out: np.ndarray) -> None:
    """Loose feathers (wing-sized) and seeds (beak-sized) in palette colours, whatever the class.

    A distractor touching ``keep_out`` (around the head and beak) is drawn again elsewhere, so
    that no seed passes for a second beak; after PLACE_TRIES failures it is left out.
    """
    def feather(u, v):
        return _ellipse(u, v, (0, 0), 0.9, 0.42, 0.1)

    def seed(u, v):
        return _wedge(u, v, -1.0, 2.0, 0.62, 0.0, 0.0, 0.12)

    r = float(np.mean(BODY_RADIUS))
    kinds = [(FEATHERS, (1.1 * r, 1.4 * r), feather), (SEEDS, (0.4 * r, 0.6 * r), seed)]
    for count, diameter, shape in kinds:  # diameter: a share of the image side
        for _ in range(rng.integers(*count)):
            for _ in range(PLACE_TRIES):
                rows, cols, u, v, _, _ = place(rng, image.shape[0], diameter)
                outer, inner = shape(u, v)
                if not (outer & keep_out[rows, cols]).any():
                    break
            else:
                continue
            paint(image[rows, cols], outer, np.array(OUTLINE, dtype=np.float32))
            paint(image[rows, cols], inner, jitter_tone(rng, palette[rng.integers(len(palette))]))


def draw_creature(rng: np.random.Generator, size: int, colors: dict[str, str],
                  palette: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One parts image.

    Args:
        rng: the image's generator.
        size: output side in pixels.
        colors: colour name of each of PARTS.
        palette: colours in use by any part; the distractors take them at random.

    Returns:
        (size, size, 3) uint8 image; (size*SUPERSAMPLE, size*SUPERSAMPLE) int8 map of the
        creature's layer shown at each supersampled point (CODE values, 0 elsewhere).
    """
    side = size * SUPERSAMPLE
    image = background(rng, side)
    extent = (2 * REACH * BODY_RADIUS[0], 2 * REACH * BODY_RADIUS[1])  # diameter, share of side
    rows, cols, u, v, _, _ = place(rng, side, extent)
    mirror = REACH if rng.random() < 0.5 else -REACH  # mirrored half the time
    layers, head_zone = creature_layers(rng, (u * REACH).astype(np.float32),
                                        (v * mirror).astype(np.float32))
    tones = np.zeros((len(LAYERS) + 1, 3), dtype=np.float32)
    tones[CODE["outline"]] = OUTLINE
    for name in PARTS:
        tones[CODE[name]] = jitter_tone(rng, colors[name])
    for name, tone in FIXED_TONES.items():
        tones[CODE[name]] = tone
    labels = np.zeros((side, side), dtype=np.int8)
    labels[rows, cols] = head_zone
    _distractors(rng, image, palette, labels > 0)
    window = labels[rows, cols]
    window[:] = 0
    for name, box, outer, inner in layers:  # back to front: later layers cover earlier ones
        window[box][outer] = CODE["outline"]
        window[box][inner] = CODE[name]
    image[rows, cols] = np.where(window[..., None] > 0, tones[window], image[rows, cols])
    return downsample(rng, image, size), labels


def part_masks(labels: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Where each of PARTS shows, inside its outline.

    Args:
        labels: (size*SUPERSAMPLE, size*SUPERSAMPLE) layer map from :func:`draw_creature`.
        size: output side in pixels.

    Returns:
        {part: (size, size) float32 share of each output pixel the part covers}.
    """
    return {name: block_mean(labels == CODE[name], size) for name in PARTS}


def part_palette(counts: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Colour values of each part: the first ``counts[part]`` palette colours, shared by all parts.

    Sharing the palette makes a colour name say nothing about the part: red is a body colour of
    some classes, a wing colour of others and a beak colour of others again.
    """
    names = tuple(COLORS)
    return {part: names[:counts[part]] for part in PARTS}

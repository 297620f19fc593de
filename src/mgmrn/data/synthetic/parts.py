"""Built-in parts dataset: zero-shot learning on attributes of parts at different scales.

The demo set's attributes describe the whole object; those of fine-grained benchmarks such as CUB
describe parts ("wing colour", "bill shape", "eye colour"), some large, some a few pixels wide.
This set models that, to measure whether a design choice helps on such attributes (e.g. the
multi-granularity levels of Mg-MRN against one pooled feature), without any download.

Each image shows one bird-like creature on a cluttered background (see :mod:`.parts_draw`). A class
is a (body colour, wing colour, beak colour) combination, one part per scale: the visible body
covers 6-10% of the image (coarse), the wing 2.3-3.5% (middle), the beak 0.26-0.54%, a few pixels
wide at 96 px (fine). Its attributes are ``body_color_*``, ``wing_color_*`` and
``beak_color_*``, one-hot per part; all three are colours, so that the groups differ only in
the part and its scale, not in the kind of cue (the tail's shape varies, but carries no class).
All parts take their colours from one shared palette, and loose wing-sized feathers and
beak-sized seeds in the same colours, whatever the class, litter the background: a colour's
presence anywhere in the image, at any size, says little about which part wears it, so the wing
and beak attributes have to be read off that part at its scale (the body colour, the largest area,
stays easy; ``tests/unit/test_data_parts.py`` checks that a global colour histogram gives the body
colour but not the beak colour). Position, size, rotation and mirroring vary from image to image.

``parts.num_unseen`` combinations are unseen, chosen as in the demo set so that every attribute
value still occurs in at least :data:`MIN_SEEN_CLASSES` seen classes. The set is written once, in
the custom format, plus ``parts.json`` with the generator parameters, to ``data.root``, and
regenerated when those parameters differ (see :mod:`.procedural`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mgmrn.config import PartsConfig
from mgmrn.data.errors import DataError
from mgmrn.data.synthetic.demo_draw import COLORS
from mgmrn.data.synthetic.parts_draw import PARTS, draw_creature, part_masks, part_palette
from mgmrn.data.synthetic.procedural import (
    MIN_SEEN_CLASSES,
    DrawnClasses,
    ensure_drawn,
    one_hot_classes,
    write_set,
)

__all__ = ["MIN_SEEN_CLASSES", "ensure_parts", "parts_classes", "parts_params", "redraw_parts_image",
           "write_parts"]

GENERATOR_VERSION = 1  # bump when drawing changes, so that old caches are regenerated


def _counts(cfg: PartsConfig) -> dict[str, int]:
    counts = {}
    for part in PARTS:
        key = f"num_{part}_colors"
        n = getattr(cfg, key)
        if not 1 <= n <= len(COLORS):
            raise DataError(f"config key 'data.parts.{key}' must lie in 1..{len(COLORS)}, got {n}")
        counts[part] = n
    return counts


def parts_classes(cfg: PartsConfig) -> DrawnClasses:
    """Classes (combos are (body, wing, beak) colours), attributes and unseen split.

    Class names are ``<body>_body_<wing>_wing_<beak>_beak``; attributes ``body_color_*``,
    ``wing_color_*``, ``beak_color_*``.
    """
    values = part_palette(_counts(cfg))
    groups = [(f"{part}_color", values[part]) for part in PARTS]
    return one_hot_classes(groups, cfg.num_unseen, cfg.seed, "parts",
                           name=lambda combo: "_".join(f"{c}_{p}" for c, p in zip(combo, PARTS)))


def parts_params(cfg: PartsConfig) -> dict:
    """What ``parts.json`` records; a cache whose record differs is regenerated."""
    return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(cfg)}


def write_parts(folder: Path, cfg: PartsConfig) -> None:
    """Draw the whole parts set into ``folder`` (custom format); every image from its own seed.

    Args:
        folder: an existing empty folder.
        cfg: parts parameters.
    """
    classes = parts_classes(cfg)

    def draw(rng, c):
        return _draw(cfg, classes, rng, c)[0]

    write_set(folder, classes, cfg.images_per_class, cfg.seed, draw, "parts.json",
              parts_params(cfg))


def _draw(cfg: PartsConfig, classes: DrawnClasses, rng, c: int):
    palette = tuple(COLORS)[:max(_counts(cfg).values())]  # every colour some part can take
    return draw_creature(rng, cfg.image_size, dict(zip(PARTS, classes.combos[c])), palette)


def redraw_parts_image(cfg: PartsConfig, class_name: str, index: int,
                       classes: DrawnClasses | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw image ``index`` of a class again, with where each part shows.

    The set keeps no masks: every image comes from its own seed, so drawing it again gives the
    same pixels (tested against the written files) and the layer map behind them.

    Args:
        cfg: the parameters the set was drawn with.
        class_name: a class of the set, e.g. ``red_body_green_wing_blue_beak``.
        index: the image's number within its class (its file is ``<index:04d>.png``).
        classes: ``parts_classes(cfg)``, to save recomputing it for many images.

    Returns:
        (size, size, 3) uint8 pixels; {part: (size, size) float32 share of each pixel the part
        covers} for each of body, wing, beak.
    """
    classes = classes or parts_classes(cfg)
    if class_name not in classes.names:
        raise DataError(f"{class_name!r} is not a class of the parts set drawn with {cfg}")
    c = classes.names.index(class_name)
    pixels, labels = _draw(cfg, classes, np.random.default_rng([cfg.seed, c, index]), c)
    return pixels, part_masks(labels, cfg.image_size)


def ensure_parts(root: str | Path, cfg: PartsConfig) -> Path:
    """Return ``root`` holding the parts set of ``cfg``, drawing it first if needed.

    Args:
        root: the cache folder (data.root).
        cfg: parts parameters.
    """
    n_images = cfg.images_per_class * cfg.num_body_colors * cfg.num_wing_colors * cfg.num_beak_colors
    return ensure_drawn(root, "parts.json", parts_params(cfg),
                        lambda folder: write_parts(folder, cfg), "parts", n_images)

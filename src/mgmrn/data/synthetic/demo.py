"""Built-in demo dataset: compositional zero-shot learning on drawn shapes, no download.

A class is a (shape, colour, pattern) combination; its attributes are those three values, one-hot
(A = shapes + colours + patterns). ``demo.num_unseen`` combinations are unseen, chosen with the seed
so that every attribute value still occurs in at least :data:`MIN_SEEN_CLASSES` seen classes: an
unseen class is a new combination of values the model has only seen apart.

``demo.num_withheld`` further classes, drawn like the unseen ones, are left out of the run entirely
(neither seen nor unseen): their images and attribute rows go to ``withheld/images/<class>/`` and
``withheld/classes.csv`` (the format of ``mgmrn predict --add-classes``), to be added as new classes
after training.

The set is written once, in the custom format, plus ``demo.json`` with the generator parameters,
to ``data.root``, and regenerated when those parameters differ (see :mod:`.procedural`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mgmrn.config import DemoConfig
from mgmrn.data.errors import DataError
from mgmrn.data.synthetic.demo_draw import COLORS, PATTERNS, SHAPES, draw_image
from mgmrn.data.synthetic.procedural import (
    MIN_SEEN_CLASSES,
    DrawnClasses,
    choose_unseen,
    ensure_drawn,
    one_hot_classes,
    write_set,
)

__all__ = ["MIN_SEEN_CLASSES", "DemoClasses", "choose_unseen", "demo_classes", "demo_params",
           "ensure_demo", "write_demo"]

GENERATOR_VERSION = 2  # bump when drawing changes, so that old caches are regenerated
DemoClasses = DrawnClasses  # combos are (shape, colour, pattern); names <colour>_<pattern>_<shape>


def _values(cfg: DemoConfig) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    limits = (("num_shapes", SHAPES), ("num_colors", tuple(COLORS)), ("num_patterns", PATTERNS))
    out = []
    for key, values in limits:
        n = getattr(cfg, key)
        if not 1 <= n <= len(values):
            raise DataError(f"config key 'data.demo.{key}' must lie in 1..{len(values)}, got {n}")
        out.append(values[:n])
    return out[0], out[1], out[2]


def demo_classes(cfg: DemoConfig) -> DemoClasses:
    """Classes, attributes (``shape_*``, ``color_*``, ``pattern_*``) and unseen split."""
    shapes, colors, patterns = _values(cfg)
    groups = [("shape", shapes), ("color", colors), ("pattern", patterns)]
    return one_hot_classes(groups, cfg.num_unseen, cfg.seed, "demo",
                           name=lambda combo: f"{combo[1]}_{combo[2]}_{combo[0]}",
                           num_withheld=cfg.num_withheld)


def demo_params(cfg: DemoConfig) -> dict:
    """What ``demo.json`` records; a cache whose record differs is regenerated."""
    params = {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(cfg)}
    if not params["num_withheld"]:  # caches drawn before the key existed stay valid
        del params["num_withheld"]
    return params


def write_demo(folder: Path, cfg: DemoConfig) -> None:
    """Draw the whole demo set into ``folder`` (custom format); every image from its own seed.

    Args:
        folder: an existing empty folder.
        cfg: demo parameters.
    """
    classes = demo_classes(cfg)
    shapes, colors, _ = _values(cfg)

    def draw(rng, c):
        shape, color, pattern = classes.combos[c]
        return draw_image(rng, cfg.image_size, shape, color, pattern, shapes, colors)

    write_set(folder, classes, cfg.images_per_class, cfg.seed, draw, "demo.json", demo_params(cfg))


def ensure_demo(root: str | Path, cfg: DemoConfig) -> Path:
    """Return ``root`` holding the demo set of ``cfg``, drawing it first if needed.

    Args:
        root: the cache folder (data.root).
        cfg: demo parameters.
    """
    n_images = cfg.images_per_class * cfg.num_shapes * cfg.num_colors * cfg.num_patterns
    return ensure_drawn(root, "demo.json", demo_params(cfg), lambda folder: write_demo(folder, cfg),
                        "demo", n_images)

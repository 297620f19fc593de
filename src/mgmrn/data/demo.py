"""Built-in demo dataset: compositional zero-shot learning on drawn shapes, no download.

A class is a (shape, colour, pattern) combination; its attributes are those three values, one-hot
(A = shapes + colours + patterns). ``demo.num_unseen`` combinations are unseen, chosen with the seed
so that every attribute value still occurs in at least :data:`MIN_SEEN_CLASSES` seen classes: an
unseen class is a new combination of values the model has only seen apart.

The set is written once, in the custom format (``classes.csv``, ``images/<class>/``,
``test_seen.txt``), plus ``demo.json`` with the generator parameters, to ``data.root``; it is
regenerated when those parameters differ. ``demo.num_withheld`` further classes, drawn like the
unseen ones, are left out of the run entirely (neither seen nor unseen): their images and attribute
rows go to ``withheld/images/<class>/`` and ``withheld/classes.csv`` (``class,<attributes...>``, the
format of ``mgmrn predict --add-classes``), to be added as new classes after training.
Generation goes to a temporary folder that is renamed into place, so an interrupted run or a
concurrent rank never sees a half-written set.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import DemoConfig
from .demo_draw import COLORS, PATTERNS, SHAPES, draw_image
from .errors import DataError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when drawing changes, so that old caches are regenerated
MIN_SEEN_CLASSES = 3
TEST_SEEN_FRACTION = 0.2
MAX_TRIES = 2000


@dataclasses.dataclass
class DemoClasses:
    """The demo's classes.

    Attributes:
        combos: C (shape, colour, pattern) names, class c is combos[c].
        names: C class names, ``<colour>_<pattern>_<shape>``.
        attribute_names: A names, ``shape_*``, ``color_*``, ``pattern_*``.
        attributes: (C, A) 0/1 float32.
        unseen: sorted indices of the unseen classes.
        withheld: sorted indices of the classes left out of the run (``demo.num_withheld``).
    """

    combos: list[tuple[str, str, str]]
    names: list[str]
    attribute_names: list[str]
    attributes: np.ndarray
    unseen: np.ndarray
    withheld: np.ndarray


def _values(cfg: DemoConfig) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    limits = (("num_shapes", SHAPES), ("num_colors", tuple(COLORS)), ("num_patterns", PATTERNS))
    out = []
    for key, values in limits:
        n = getattr(cfg, key)
        if not 1 <= n <= len(values):
            raise DataError(f"config key 'data.demo.{key}' must lie in 1..{len(values)}, got {n}")
        out.append(values[:n])
    return out[0], out[1], out[2]


def choose_unseen(attributes: np.ndarray, groups: list[np.ndarray], num_unseen: int,
                  seed: int) -> np.ndarray:
    """Unseen classes such that every attribute value keeps >= MIN_SEEN_CLASSES seen classes.

    When there are enough unseen classes, every value also occurs in some unseen class, so that
    the test exercises every value.

    Args:
        attributes: (C, A) 0/1 class attributes.
        groups: attribute columns of each group (shape, colour, pattern).
        num_unseen: how many classes to make unseen.
        seed: seed of the draw.

    Returns:
        Sorted class indices.
    """
    n_classes = len(attributes)
    if not 1 <= num_unseen < n_classes:
        raise DataError(f"config keys 'data.demo.num_unseen' + 'data.demo.num_withheld' must lie "
                        f"in 1..{n_classes - 1} ({n_classes} classes), got {num_unseen}")
    cover = num_unseen >= max(len(g) for g in groups)
    rng = np.random.default_rng([seed, 2])
    for _ in range(MAX_TRIES):
        unseen = np.sort(rng.choice(n_classes, num_unseen, replace=False))
        seen_counts = np.delete(attributes, unseen, axis=0).sum(axis=0)
        if seen_counts.min() < MIN_SEEN_CLASSES:
            continue
        if cover and attributes[unseen].sum(axis=0).min() < 1:
            continue
        return unseen
    raise DataError(f"cannot choose {num_unseen} unseen demo classes so that every attribute value "
                    f"occurs in {MIN_SEEN_CLASSES} seen classes; lower data.demo.num_unseen")


def demo_classes(cfg: DemoConfig) -> DemoClasses:
    """Classes, attributes and unseen split of a demo configuration."""
    shapes, colors, patterns = _values(cfg)
    combos = [(s, c, p) for s in shapes for c in colors for p in patterns]
    attribute_names = ([f"shape_{s}" for s in shapes] + [f"color_{c}" for c in colors]
                       + [f"pattern_{p}" for p in patterns])
    column = {name: i for i, name in enumerate(attribute_names)}
    attributes = np.zeros((len(combos), len(attribute_names)), dtype=np.float32)
    for i, (s, c, p) in enumerate(combos):
        attributes[i, [column[f"shape_{s}"], column[f"color_{c}"], column[f"pattern_{p}"]]] = 1
    bounds = np.cumsum([0, len(shapes), len(colors), len(patterns)])
    groups = [np.arange(bounds[i], bounds[i + 1]) for i in range(3)]
    if cfg.num_withheld < 0:
        raise DataError(f"config key 'data.demo.num_withheld' must be 0 or more, got "
                        f"{cfg.num_withheld}")
    # withheld classes are drawn with the unseen ones, so the seen classes still cover every value
    unseen = choose_unseen(attributes, groups, cfg.num_unseen + cfg.num_withheld, cfg.seed)
    withheld = np.sort(np.random.default_rng([cfg.seed, 3]).choice(unseen, cfg.num_withheld,
                                                                    replace=False))
    names = [f"{c}_{p}_{s}" for s, c, p in combos]
    return DemoClasses(combos, names, attribute_names, attributes,
                       np.setdiff1d(unseen, withheld), withheld)


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
    unseen = set(classes.unseen.tolist())
    withheld = set(classes.withheld.tolist())
    n_test = min(round(cfg.images_per_class * TEST_SEEN_FRACTION), cfg.images_per_class - 1)
    test_seen = []
    for c, (shape, color, pattern) in enumerate(classes.combos):
        class_dir = folder / ("withheld/images" if c in withheld else "images") / classes.names[c]
        class_dir.mkdir(parents=True)
        for i in range(cfg.images_per_class):
            rng = np.random.default_rng([cfg.seed, c, i])
            pixels = draw_image(rng, cfg.image_size, shape, color, pattern, shapes, colors)
            Image.fromarray(pixels).save(class_dir / f"{i:04d}.png", optimize=False)
            if c not in unseen | withheld and i >= cfg.images_per_class - n_test:
                test_seen.append(f"{classes.names[c]}/{i:04d}.png")
    with open(folder / "classes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "split", *classes.attribute_names])
        for c, name in enumerate(classes.names):
            if c not in withheld:
                split = "unseen" if c in unseen else "seen"
                writer.writerow([name, split, *(f"{v:g}" for v in classes.attributes[c])])
    if withheld:
        with open(folder / "withheld" / "classes.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["class", *classes.attribute_names])
            for c in sorted(withheld):
                writer.writerow([classes.names[c], *(f"{v:g}" for v in classes.attributes[c])])
    (folder / "test_seen.txt").write_text("\n".join(test_seen) + "\n")
    (folder / "demo.json").write_text(json.dumps(demo_params(cfg), indent=2) + "\n")


def _cached(root: Path, cfg: DemoConfig) -> bool:
    try:
        return json.loads((root / "demo.json").read_text()) == demo_params(cfg)
    except (OSError, ValueError):
        return False


def ensure_demo(root: str | Path, cfg: DemoConfig) -> Path:
    """Return ``root`` holding the demo set of ``cfg``, drawing it first if needed.

    Args:
        root: the cache folder (data.root).
        cfg: demo parameters.
    """
    root = Path(root)
    if _cached(root, cfg):
        return root
    if root.exists() and any(root.iterdir()) and not (root / "demo.json").is_file():
        raise DataError(f"{root} (data.root) is not empty and holds no demo.json: it is not a demo "
                        f"cache, and it will not be overwritten; point data.root elsewhere")
    root.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        write_demo(tmp, cfg)
        _swap_into_place(tmp, root, cfg)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("drew the demo set (%d images) into %s in %.1f s", cfg.images_per_class *
             len(demo_classes(cfg).names), root, time.perf_counter() - start)
    return root


def _swap_into_place(tmp: Path, root: Path, cfg: DemoConfig) -> None:
    """Rename ``tmp`` to ``root``, replacing an outdated cache; tolerate a concurrent winner."""
    old = None
    if _cached(root, cfg):  # a concurrent process finished first: keep its copy, in use already
        return
    if root.exists():
        old = root.parent / f".{root.name}-old-{os.getpid()}"
        try:
            os.rename(root, old)
        except FileNotFoundError:  # a concurrent process moved it first
            old = None
    try:
        os.rename(tmp, root)
    except OSError:
        if not _cached(root, cfg):  # another process put something else there meanwhile
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

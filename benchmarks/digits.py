"""A small real-image zero-shot set: handwritten digits described by their seven segments.

The 1,797 handwritten digits that ship inside scikit-learn (``sklearn.datasets.load_digits``,
8 x 8 grey levels 0-16, from the UCI "Optical Recognition of Handwritten Digits" set) are written
as a folder in mgmrn's custom format (``docs/data.md``): one class per digit, whose attributes are
the segments a seven-segment display lights to show it (a top, b upper right, c lower right,
d bottom, e lower left, f upper left, g middle). Three digits are unseen (``UNSEEN``), so CZSL's
chance is 33.3 %; every segment is lit in some seen digit. The images are real scans, not drawn
by this project: the set measures how a recipe starts on a user's own small real data.

    python benchmarks/digits.py --root .cache/mgmrn/digits          # write the folder
    python benchmarks/accuracy.py --sets digits --recipes pretrained scratch   # train on it

``write_digits_set`` never writes into a folder it did not make (a marker file says it did).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SEGMENTS = "abcdefg"
LIT = {0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg", 5: "acdfg", 6: "acdefg",
       7: "abc", 8: "abcdefg", 9: "abcdfg"}
UNSEEN = (2, 5, 9)
MARKER = ".mgmrn-digits.json"
# the recipes' episodes (16 ways x 4 shots) need 16 seen classes; 7 are seen here (5 with
# data.split=val, which holds out a fifth of them as unseen), so each batch takes 5 digits x 12
# images (60, near the recipes' 64); training images are not mirrored: a mirrored 2 lights a
# 5's segments (b <-> f, c <-> e), and 2 and 5 are both unseen
OVERRIDES = ("data.name=custom", "data.ways=5", "data.shots=12", "data.flip=false")


def segment_table() -> np.ndarray:
    """(10, 7) 0/1 attribute matrix: row d, column s is 1 where digit d lights segment s."""
    return np.array([[float(s in LIT[d]) for s in SEGMENTS] for d in range(10)], dtype=np.float32)


def write_digits_set(images: np.ndarray, labels: np.ndarray, root: Path,
                     unseen: tuple[int, ...] = UNSEEN) -> dict:
    """Write (N, H, W) grey images in 0-16 with digit labels as a custom-format folder.

    Returns a summary (images per class, unseen digits). Raises ``FileExistsError`` when ``root``
    holds files but no marker of this function.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"expected (N, H, W) images and N labels, got {images.shape} and "
                         f"{labels.shape}")
    if not set(unseen) <= set(range(10)) or len(set(unseen)) in (0, 10):
        raise ValueError(f"unseen digits must be some (not all) of 0-9, got {unseen}")
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise FileExistsError(f"{root} holds files this script did not write; give another --root")
    from PIL import Image

    table = segment_table()
    lines = ["class,split," + ",".join(f"segment_{s}" for s in SEGMENTS)]
    counts = {}
    for digit in range(10):
        split = "unseen" if digit in unseen else "seen"
        lines.append(f"digit_{digit},{split}," + ",".join(f"{v:g}" for v in table[digit]))
        folder = root / "images" / f"digit_{digit}"
        folder.mkdir(parents=True, exist_ok=True)
        index = np.flatnonzero(labels == digit)
        for i in index:
            grey = np.clip(np.rint(images[i] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
            Image.fromarray(grey).save(folder / f"{i:04d}.png")
        counts[f"digit_{digit}"] = int(len(index))
    (root / "classes.csv").write_text("\n".join(lines) + "\n")
    summary = {"source": "sklearn.datasets.load_digits", "images": int(len(labels)),
               "per_class": counts, "unseen": [f"digit_{d}" for d in unseen]}
    (root / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits scikit-learn ships; a clear error where it is not installed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise SystemExit("the digits set comes from scikit-learn: pip install scikit-learn "
                         "(or pip install -e '.[bench]')") from err
    digits = load_digits()
    return digits.images, digits.target


def ensure(root: Path) -> Path:
    """Write the set into ``root`` unless this script already did; returns ``root``."""
    if not (Path(root) / MARKER).is_file():
        write_digits_set(*load_sklearn_digits(), Path(root))
    return Path(root)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=".cache/mgmrn/digits", help="the folder to write")
    args = p.parse_args(argv)
    try:
        summary = write_digits_set(*load_sklearn_digits(), Path(args.root))
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

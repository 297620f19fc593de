"""Reader for the custom dataset format: a folder with a class table and one image folder per class.

Layout::

    classes.csv             header ``class,split,<attr 1>,...,<attr A>``; one row per class;
                            split is ``seen`` or ``unseen``; strengths are numbers
    images/<class>/<file>   jpg, jpeg, png, bmp or webp (any case)
    attribute_vectors.npy   optional (A, E); without it each attribute is a one-hot code (A x A)
    test_seen.txt           optional: paths relative to images/, held out as the seen test set;
                            without it 20% of each seen class's images are held out (seeded)
    val_classes.txt         optional, for data.split = "val": seen classes that play unseen

Every error names the file, and the line and field where there is one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mgmrn.data.datasets import IMAGE_SUFFIXES
from mgmrn.data.errors import DataError
from mgmrn.data.readers.class_table import read_class_table
from mgmrn.data.readers.records import (
    ZSLRecords,
    class_indices,
    holdout,
    load_attribute_vectors,
    read_name_list,
    validation_split,
)

log = logging.getLogger(__name__)

HOLDOUT_FRACTION = 0.2
SPLIT_WORDS = ("seen", "unseen")


def read_classes_csv(path: Path) -> tuple[list[str], list[str], list[str], np.ndarray, list[int]]:
    """Parse classes.csv: an attribute table (:mod:`.class_table`) with a ``split`` column.

    Returns:
        (class names, split words, attribute names, (C, A) float32 strengths, line of each class).
    """
    table = read_class_table(path, text_columns=("split",))
    splits = table.text["split"]
    for line, split in zip(table.lines, splits, strict=True):
        if split not in SPLIT_WORDS:
            raise DataError(f"{path} line {line}, field 'split': expected 'seen' or 'unseen', "
                            f"got '{split}'")
    for word in SPLIT_WORDS:
        if word not in splits:
            raise DataError(f"{path}: no class has split '{word}'; zero-shot learning needs both "
                            f"seen and unseen classes")
    return table.names, splits, table.attribute_names, table.values, table.lines


def list_images(images_dir: Path, class_names: list[str], lines: list[int],
                csv_path: Path) -> dict[str, list[str]]:
    """Sorted image files of every class folder; folders and rows must correspond one to one.

    Args:
        images_dir: the images/ folder.
        class_names: class names from classes.csv.
        lines: the classes.csv line of each class, for messages.
        csv_path: classes.csv, for messages.
    """
    if not images_dir.is_dir():
        raise DataError(f"{images_dir} not found; a custom dataset keeps images/<class>/<file>")
    # hidden entries (.ipynb_checkpoints, macOS ._ files) are tool litter, not data
    folders = {p.name for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    extra = sorted(folders - set(class_names))
    if extra:
        raise DataError(f"{images_dir / extra[0]}: image folder with no row in {csv_path} "
                        f"(add a row for class '{extra[0]}' or remove the folder)")
    found = {}
    for line, name in zip(lines, class_names, strict=True):
        folder = images_dir / name
        if name not in folders:
            raise DataError(f"{csv_path} line {line}, field 'class': class '{name}' has no image "
                            f"folder {folder}")
        files = sorted(str(p) for p in folder.iterdir() if p.is_file()
                       and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder}: no images (.jpg, .jpeg, .png, .bmp, .webp) for class "
                            f"'{name}' of {csv_path}")
        found[name] = files
    return found


def read_test_seen(path: Path, images_dir: Path, seen_names: set[str]) -> set[str]:
    """Paths listed in test_seen.txt, resolved under images/ and checked."""
    held = set()
    for line, rel in read_name_list(path):
        parts = Path(rel).parts
        full = images_dir / rel
        if len(parts) != 2:
            raise DataError(f"{path} line {line}: expected <class>/<file> relative to "
                            f"{images_dir}, got '{rel}'")
        if parts[0] not in seen_names:
            raise DataError(f"{path} line {line}: '{rel}' is not in a seen class's folder; only "
                            f"seen classes have a seen test set")
        if not full.is_file():
            raise DataError(f"{path} line {line}: image {full} not found")
        held.add(str(full))
    return held


def read_custom(root: str | Path, split: str = "trainval", val_fraction: float = 0.2,
                seed: int = 0, name: str = "custom",
                attribute_vectors: str | Path | None = None) -> ZSLRecords:
    """Read a custom-format dataset folder.

    Args:
        root: the dataset folder.
        split: "trainval", or "val" (some seen classes play unseen; the unseen ones are untouched).
        val_fraction: for "val": share of each training class's images held out as seen test set.
        seed: seed of the held-out draws (seen test set without test_seen.txt; validation split).
        name: dataset name recorded in the result.
        attribute_vectors: (A, E) file replacing ``attribute_vectors.npy``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root '{root}' is not a folder; give data.root=<your dataset folder>, "
                        f"which holds classes.csv and images/ (docs/data.md, your own data)")
    csv_path, images_dir = root / "classes.csv", root / "images"
    class_names, splits, attribute_names, strengths, lines = read_classes_csv(csv_path)
    images = list_images(images_dir, class_names, lines, csv_path)
    seen = np.array([i for i, s in enumerate(splits) if s == "seen"], dtype=np.int64)
    unseen = np.array([i for i, s in enumerate(splits) if s == "unseen"], dtype=np.int64)
    all_paths = [p for n in class_names for p in images[n]]
    all_labels = np.array([i for i, n in enumerate(class_names) for _ in images[n]], dtype=np.int64)
    test_seen_file = root / "test_seen.txt"
    if test_seen_file.is_file():
        held_set = read_test_seen(test_seen_file, images_dir, {class_names[i] for i in seen})
        held = np.array([i for i, p in enumerate(all_paths) if p in held_set], dtype=np.int64)
        kept = np.setdiff1d(np.flatnonzero(np.isin(all_labels, seen)), held)
        empty = np.setdiff1d(seen, all_labels[kept])
        if empty.size:
            raise DataError(f"{test_seen_file}: holds every image of seen class "
                            f"'{class_names[empty[0]]}', leaving none for training")
    else:
        kept, held = holdout(all_labels, seen, HOLDOUT_FRACTION, seed)
    unseen_items = np.flatnonzero(np.isin(all_labels, unseen))
    pick = {"train": kept, "test_seen": held, "test_unseen": unseen_items}
    vec_path = Path(attribute_vectors) if attribute_vectors else root / "attribute_vectors.npy"
    if attribute_vectors or vec_path.is_file():
        vectors = load_attribute_vectors(vec_path, len(attribute_names), csv_path)
    else:
        vectors = np.eye(len(attribute_names), dtype=np.float32)  # one query code per attribute
    records = ZSLRecords(
        name=name, class_names=class_names, attribute_names=attribute_names,
        class_attributes=strengths, attribute_vectors=vectors, seen=seen, unseen=unseen,
        paths={s: [all_paths[i] for i in idx] for s, idx in pick.items()},
        labels={s: all_labels[idx] for s, idx in pick.items()},
        files={"classes": str(csv_path), "images": str(images_dir), "image_root": str(images_dir),
               "attribute_vectors": str(vec_path) if vec_path.is_file() else "identity",
               "test_seen": str(test_seen_file) if test_seen_file.is_file() else None},
    )
    if split == "val":
        records = _validation(records, root / "val_classes.txt", val_fraction, seed)
    return records


def _validation(records: ZSLRecords, val_file: Path, fraction: float, seed: int) -> ZSLRecords:
    """Validation classes from val_classes.txt, else a seeded share of the seen classes.

    Without a list, the share of seen classes made validation classes equals the share of unseen
    classes among all classes, so the validation task has the proportions of the real one.
    """
    seen = records.seen
    if val_file.is_file():
        val = class_indices(read_name_list(val_file), records.class_names, val_file,
                            "classes of classes.csv")
        if np.setdiff1d(val, seen).size:
            raise DataError(f"{val_file}: validation classes must be seen classes")
        records.files["val_classes"] = str(val_file)
    else:
        if len(seen) < 2:
            raise DataError(f"{records.files['classes']}: the validation split needs at least 2 "
                            f"seen classes, found {len(seen)}")
        share = len(records.unseen) / len(records.class_names)
        n_val = min(max(1, round(len(seen) * share)), len(seen) - 1)
        val = np.sort(np.random.default_rng([seed, 1]).choice(seen, n_val, replace=False))
        records.files["val_classes"] = f"{n_val} seen classes drawn with seed {seed}"
    return validation_split(records, np.setdiff1d(seen, val), val, fraction, seed)

"""What every dataset reader returns: image paths, class labels, class semantics; no tensors yet.

Readers (xlsa17, custom, demo) produce :class:`ZSLRecords`; ``build_data`` checks the files and
turns the records into datasets. The split helpers here are shared so that every format gets the
same held-out rules.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgmrn.data.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test_seen", "test_unseen")


@dataclass
class ZSLRecords:
    """File-level description of one zero-shot split.

    Attributes:
        name: dataset name, e.g. ``"cub"``.
        class_names: C names, all classes.
        attribute_names: A names.
        class_attributes: (C, A) float32 strengths, as read.
        attribute_vectors: (A, E) float32 attribute embeddings.
        seen: (S,) sorted int64 indices into all classes.
        unseen: (U,) sorted int64 indices into all classes.
        paths: split name -> list of image paths.
        labels: split name -> (N,) int64 labels over all classes (0..C-1).
        files: which files were read, for messages.
    """

    name: str
    class_names: list[str]
    attribute_names: list[str]
    class_attributes: np.ndarray
    attribute_vectors: np.ndarray
    seen: np.ndarray
    unseen: np.ndarray
    paths: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    files: dict = field(default_factory=dict)

    def all_paths(self) -> list[str]:
        return [p for split in SPLITS for p in self.paths[split]]

    def drop_paths(self, bad: set[str]) -> None:
        """Leave the given image paths out of every split."""
        for split in SPLITS:
            keep = [i for i, p in enumerate(self.paths[split]) if p not in bad]
            self.paths[split] = [self.paths[split][i] for i in keep]
            self.labels[split] = self.labels[split][keep]


def holdout(labels: np.ndarray, classes: np.ndarray, fraction: float,
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices of ``classes`` into kept and held-out parts, class by class.

    Each class keeps at least one item, so a held-out split never empties a training class.

    Args:
        labels: (N,) class label of every item.
        classes: classes whose items take part; items of other classes are ignored.
        fraction: share of each class's items to hold out.
        seed: seed of the draw; the same seed gives the same split.

    Returns:
        (kept, held_out): sorted item indices.
    """
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.sort(classes):
        items = np.flatnonzero(labels == c)
        n_hold = min(int(round(len(items) * fraction)), max(len(items) - 1, 0))
        order = rng.permutation(items)
        held.append(order[:n_hold])
        kept.append(order[n_hold:])
    empty = np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate([empty, *kept])), np.sort(np.concatenate([empty, *held]))


def validation_split(records: ZSLRecords, train_classes: np.ndarray, val_classes: np.ndarray,
                     fraction: float, seed: int) -> ZSLRecords:
    """Turn a trainval split into a validation split; the real test images are never touched.

    Validation classes play the unseen role: all their training images become ``test_unseen``.
    ``fraction`` of each training class's images become ``test_seen``. Classes in neither list (the
    real unseen test classes) are dropped, and classes are re-indexed so that seen and unseen
    together are all classes again.

    Args:
        records: trainval records.
        train_classes: indices (into ``records.class_names``) of the validation-seen classes.
        val_classes: indices of the validation-unseen classes.
        fraction: share of each training class's images held out as ``test_seen``.
        seed: seed of the held-out draw.
    """
    train_classes, val_classes = np.unique(train_classes), np.unique(val_classes)
    if not train_classes.size or not val_classes.size:
        raise DataError(f"validation split: needs training and validation classes, got "
                        f"{train_classes.size} and {val_classes.size}; check "
                        f"{records.files.get('val_classes', 'the class lists')}")
    overlap = np.intersect1d(train_classes, val_classes)
    if overlap.size:
        names = [records.class_names[i] for i in overlap[:5]]
        raise DataError(f"validation split: classes {names} are both training and validation "
                        f"classes; check {records.files.get('val_classes', 'the class lists')}")
    pool_paths, pool_labels = records.paths["train"], records.labels["train"]
    outside = np.setdiff1d(np.concatenate([train_classes, val_classes]), np.unique(pool_labels))
    if outside.size:
        names = [records.class_names[i] for i in outside[:5]]
        raise DataError(f"validation split: classes {names} have no training images; the "
                        f"training and validation classes must both come from the seen classes")
    kept, held = holdout(pool_labels, train_classes, fraction, seed)
    unseen_items = np.flatnonzero(np.isin(pool_labels, val_classes))
    order = np.concatenate([train_classes, val_classes])
    old_to_new = np.full(len(records.class_names), -1, dtype=np.int64)
    old_to_new[np.sort(order)] = np.arange(len(order))
    pick = {"train": kept, "test_seen": held, "test_unseen": unseen_items}
    files = dict(records.files, val_original_class_indices=np.sort(order).tolist())
    return ZSLRecords(
        name=records.name,
        class_names=[records.class_names[i] for i in np.sort(order)],
        attribute_names=records.attribute_names,
        class_attributes=records.class_attributes[np.sort(order)],
        attribute_vectors=records.attribute_vectors,
        seen=old_to_new[train_classes],
        unseen=old_to_new[val_classes],
        paths={s: [pool_paths[i] for i in idx] for s, idx in pick.items()},
        labels={s: old_to_new[pool_labels[idx]] for s, idx in pick.items()},
        files=files,
    )


def load_attribute_vectors(path: str | Path, n_attributes: int,
                           attribute_file: str | Path) -> np.ndarray:
    """Read attribute word vectors, (A, E), from a pickled numpy array (``.pkl``) or ``.npy``.

    Args:
        path: the vector file.
        n_attributes: A, the attribute count of the class-attribute file.
        attribute_file: where A came from, named in the error message.

    Returns:
        (A, E) float32 array.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"attribute vector file {path} not found; set data.attribute_vectors to an "
                        f"(A, E) .pkl or .npy file")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            with open(path, "rb") as fh:
                array = pickle.load(fh)  # the published vectors are pickled numpy arrays
        array = np.asarray(array, dtype=np.float32)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise DataError(f"{path}: cannot read attribute vectors ({err}); expected a pickled numpy "
                        f"array (.pkl) or a .npy file of shape (A, E)") from err
    if array.ndim != 2:
        raise DataError(f"{path}: attribute vectors must be 2-D (A, E), got shape {array.shape}")
    if array.shape[0] != n_attributes:
        raise DataError(f"{path} has {array.shape[0]} attribute vectors but {attribute_file} has "
                        f"{n_attributes} attributes; the row counts must match")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: attribute vectors contain NaN or infinite values")
    zero = np.flatnonzero(~array.any(axis=1))
    if zero.size:
        # e.g. SUN's "man-made": no word2vec entry, so its query cannot tell it from others
        log.warning("%s: attribute vector row(s) %s are all zero", path, zero.tolist())
    return array


def class_indices(names: list[tuple[int, str]], known: list[str], source: str | Path,
                  what: str) -> np.ndarray:
    """Indices of ``names`` in ``known``; an unknown name is an error naming the file and line.

    Args:
        names: (line number, class name) pairs, as from :func:`read_name_list`.
        known: all class names.
        source: the file the names came from.
        what: where ``known`` came from, e.g. ``"allclasses_names of att_splits.mat"``.
    """
    lookup = {name: i for i, name in enumerate(known)}
    out = []
    for line, name in names:
        if name not in lookup:
            raise DataError(f"{source} line {line}: class '{name}' is not among the {what} "
                            f"(names must match exactly, e.g. '{known[0]}')")
        out.append(lookup[name])
    return np.asarray(out, dtype=np.int64)


def read_name_list(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of every non-empty line of a class-list file."""
    if not path.is_file():
        raise DataError(f"class list {path} not found")
    lines = read_text(path).splitlines()
    return [(i, line.strip()) for i, line in enumerate(lines, start=1) if line.strip()]


def read_text(path: Path) -> str:
    """A UTF-8 text file (a leading byte-order mark, as spreadsheet programs write, is dropped);
    a byte that is not UTF-8 is refused naming the file and its line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: byte 0x{raw[err.start]:02x} is not UTF-8 text; save "
                        f"the file as UTF-8") from None

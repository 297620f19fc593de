"""Reader for CUB, SUN and AWA2 in the xlsa17 layout ("proposed splits", Xian et al.).

Expected under ``data.root``::

    xlsa17/data/<NAME>/res101.mat        image_files (authors' absolute paths), labels (1-based)
    xlsa17/data/<NAME>/att_splits.mat    original_att / att (A x C), *_loc (1-based),
                                         allclasses_names
    xlsa17/data/<NAME>/trainclasses1.txt, valclasses1.txt   (for data.split = "val")
    xlsa17/data/<NAME>/attributes.txt | predicates.txt | attributes.mat   (optional names)
    w2v/<NAME>_attribute.pkl             (A, E) word vectors, unless data.attribute_vectors is set;
                                         without either, the copy packaged in mgmrn/data/w2v/
    <the image folders>                  e.g. CUB_200_2011/images/..., found from res101.mat paths

Labels follow ``allclasses_names`` order, which is not the folder numbering (CUB's
001.Black_footed_Albatross is class 151). AWA2's ``original_att`` marks missing values with -1;
negative strengths are clamped to 0 (and logged) so that every strength is a non-negative amount.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import scipy.io

from mgmrn.data.errors import DataError
from mgmrn.data.readers.records import (
    ZSLRecords,
    class_indices,
    load_attribute_vectors,
    read_name_list,
    validation_split,
)

log = logging.getLogger(__name__)

FOLDERS = {"cub": "CUB", "sun": "SUN", "awa2": "AWA2"}
PACKAGED_VECTORS = Path(__file__).parents[1] / "w2v"  # float32 copies of the published word vectors
PROBES = 10  # images tried when looking for the prefix to drop, in case the first few are missing


def load_mat(path: Path, keys: list[str]) -> dict:
    """Load ``keys`` of a MATLAB file (only those: res101.mat also holds a large feature matrix)."""
    if not path.is_file():
        raise DataError(f"{path} not found; data.root must hold xlsa17/data/<NAME>/ from the "
                        f"xlsa17 archive (mgmrn data download xlsa17 --root <data.root> fetches it)")
    try:
        mat = scipy.io.loadmat(path, variable_names=keys)
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
        raise DataError(f"{path}: MATLAB v7.3 files are not supported; save it as v7 or "
                        f"earlier") from err
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataError(f"{path}: missing variable(s) {missing}; found {sorted(mat)}")
    return mat


def mat_strings(cell: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings, as loaded by scipy, to a list of str."""
    out = []
    for item in np.asarray(cell, dtype=object).ravel():
        value = item
        while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
            value = value.ravel()[0]
        out.append(str(np.ravel(value)[0]) if isinstance(value, np.ndarray) else str(value))
    return out


def mat_indices(array: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    """1-based MATLAB indices to 0-based int64, checked against ``n`` items."""
    idx = np.asarray(array).astype(np.int64).ravel() - 1
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DataError(f"{path}: '{key}' holds indices outside 1..{n}")
    return idx


def _path_parts(path: str) -> list[str]:
    # AWA2 paths hold '//', and Windows copies may hold backslashes: empty parts are dropped
    return [part for part in path.replace("\\", "/").split("/") if part]


def find_prefix_length(paths: list[str], root: Path) -> int:
    """Number of leading path parts to drop so that the rest exists under ``root``.

    The longest trailing part that exists wins. Found once on the first images, not per image:
    a filesystem search per image would be slow on 37k files.

    Args:
        paths: the authors' absolute image paths.
        root: the user's image root.
    """
    step = max(1, len(paths) // PROBES)
    for path in paths[::step][:PROBES]:
        parts = _path_parts(path)
        for drop in range(len(parts)):
            if (root / Path(*parts[drop:])).is_file():
                return drop
    example = _path_parts(paths[0])
    tried = [str(root / Path(*example[d:])) for d in range(len(example))]
    raise DataError(f"no image of res101.mat found under the image root {root} (data.root); "
                    f"for the first image it tried:\n  " + "\n  ".join(tried) +
                    "\ndata.root must be the folder that holds the dataset's image folders")


def map_image_paths(paths: list[str], root: Path) -> tuple[list[str], str]:
    """Map the authors' absolute paths onto ``root``; existence is checked later, for all at once.

    Returns:
        (mapped paths, the prefix that was dropped).
    """
    drop = find_prefix_length(paths, root)
    mapped = []
    for path in paths:
        parts = _path_parts(path)
        mapped.append(os.path.join(root, *parts[min(drop, len(parts) - 1):]))
    return mapped, "/".join(_path_parts(paths[0])[:drop])


def read_attribute_names(folder: Path, n_attributes: int) -> tuple[list[str], str | None]:
    """Attribute names from CUB attributes.txt, AWA2 predicates.txt or SUN attributes.mat.

    Returns:
        (names, the file they came from); ``attr_<i>`` and None where no file fits.
    """
    for name in ("attributes.txt", "predicates.txt"):
        path = folder / name
        if path.is_file():
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            names = [ln.split(None, 1)[-1] for ln in lines]  # "<id> <name>" or "<id>\t<name>"
            break
    else:
        path = folder / "attributes.mat"
        names = mat_strings(load_mat(path, ["attributes"])["attributes"]) if path.is_file() else []
    if len(names) == n_attributes:
        return names, str(path)
    if names:
        log.warning("%s has %d names but there are %d attributes; using attr_<i>",
                    path, len(names), n_attributes)
    return [f"attr_{i}" for i in range(n_attributes)], None


def read_attributes(att_path: Path, semantic: str) -> tuple[np.ndarray, list[str]]:
    """Class attributes (C, A) and class names from att_splits.mat.

    Args:
        att_path: the att_splits.mat file.
        semantic: "original" (``original_att``) or "normalized" (``att``).
    """
    key = {"original": "original_att", "normalized": "att"}.get(semantic)
    if key is None:
        raise DataError(f"data.semantic must be 'original' or 'normalized', got {semantic!r}")
    mat = load_mat(att_path, [key, "allclasses_names"])
    class_names = mat_strings(mat["allclasses_names"])
    attributes = np.asarray(mat[key], dtype=np.float32).T.copy()  # stored A x C
    if attributes.shape[0] != len(class_names):
        raise DataError(f"{att_path}: '{key}' has {attributes.shape[0]} classes but "
                        f"allclasses_names has {len(class_names)}")
    negative = attributes < 0
    if negative.any():
        # AWA2 marks missing strengths with -1: read them as "absent" rather than as negative
        log.info("%s: clamped %d negative '%s' values (missing-value marks) to 0",
                 att_path, int(negative.sum()), key)
        attributes[negative] = 0.0
    return attributes, class_names


def attribute_vector_file(root: str | Path, name: str,
                          attribute_vectors: str | Path | None = None) -> Path:
    """The word-vector file used for ``name``: ``attribute_vectors`` when set, else
    ``<root>/w2v/<NAME>_attribute.pkl`` when present, else the copy packaged with mgmrn."""
    if attribute_vectors:
        return Path(attribute_vectors)
    in_root = Path(root) / "w2v" / f"{FOLDERS[name]}_attribute.pkl"
    return in_root if in_root.is_file() else PACKAGED_VECTORS / f"{FOLDERS[name]}_attribute.npy"


def read_xlsa17(root: str | Path, name: str, semantic: str = "original", split: str = "trainval",
                val_fraction: float = 0.2, seed: int = 0,
                attribute_vectors: str | Path | None = None,
                load_vectors: bool = True) -> ZSLRecords:
    """Read one xlsa17 benchmark; image files are mapped but checked for existence by the caller.

    Args:
        root: data.root, holding ``xlsa17/data/<NAME>/``, ``w2v/`` and the image folders.
        name: "cub", "sun" or "awa2".
        semantic: "original" or "normalized" attributes.
        split: "trainval" (the proposed test splits) or "val" (trainclasses1 / valclasses1).
        val_fraction: for "val": share of each training class's images held out as seen test set.
        seed: for "val": seed of that held-out draw.
        attribute_vectors: (A, E) file; default from :func:`attribute_vector_file`.
        load_vectors: False leaves the vectors unread, as an (A, 0) array (``mgmrn data check``
            checks them on their own, so that a bad vector file does not hide the splits).
    """
    root = Path(root)
    folder_name = FOLDERS[name]
    folder = root / "xlsa17" / "data" / folder_name
    res_path, att_path = folder / "res101.mat", folder / "att_splits.mat"
    res = load_mat(res_path, ["image_files", "labels"])
    image_files = mat_strings(res["image_files"])
    class_attributes, class_names = read_attributes(att_path, semantic)
    labels = mat_indices(res["labels"], len(class_names), res_path, "labels")
    if len(labels) != len(image_files):
        raise DataError(f"{res_path}: {len(image_files)} image_files but {len(labels)} labels")
    locs = load_mat(att_path, ["trainval_loc", "test_seen_loc", "test_unseen_loc"])
    idx = {split_name: mat_indices(locs[key], len(labels), att_path, key) for split_name, key in
           (("train", "trainval_loc"), ("test_seen", "test_seen_loc"),
            ("test_unseen", "test_unseen_loc"))}
    paths, dropped = map_image_paths(image_files, root)
    vec_path = attribute_vector_file(root, name, attribute_vectors)
    n_attributes = class_attributes.shape[1]
    attribute_names, names_file = read_attribute_names(folder, n_attributes)
    records = ZSLRecords(
        name=name,
        class_names=class_names,
        attribute_names=attribute_names,
        class_attributes=class_attributes,
        attribute_vectors=(load_attribute_vectors(vec_path, n_attributes, att_path) if load_vectors
                           else np.zeros((n_attributes, 0), dtype=np.float32)),
        seen=np.unique(labels[idx["train"]]),
        unseen=np.unique(labels[idx["test_unseen"]]),
        paths={s: [paths[i] for i in ix] for s, ix in idx.items()},
        labels={s: labels[ix] for s, ix in idx.items()},
        files={"res101": str(res_path), "att_splits": str(att_path), "image_root": str(root),
               "dropped_prefix": dropped, "attribute_vectors": str(vec_path),
               "attribute_names": names_file, "semantic": semantic},
    )
    _check_disjoint(records, idx, att_path)
    if split == "val":
        records = _validation(records, folder, val_fraction, seed)
    return records


def _check_disjoint(records: ZSLRecords, idx: dict[str, np.ndarray], att_path: Path) -> None:
    """No image in two splits, and no class both seen and unseen."""
    for a, b in (("train", "test_seen"), ("train", "test_unseen"), ("test_seen", "test_unseen")):
        shared = np.intersect1d(idx[a], idx[b])
        if shared.size:
            raise DataError(f"{att_path}: {shared.size} images are in both the {a} and {b} "
                            f"index lists (e.g. image {shared[0] + 1}); splits must be disjoint")
    overlap = np.intersect1d(records.seen, records.unseen)
    if overlap.size:
        raise DataError(f"{att_path}: classes {overlap[:5].tolist()} have images in both "
                        f"trainval_loc and test_unseen_loc")


def _validation(records: ZSLRecords, folder: Path, fraction: float, seed: int) -> ZSLRecords:
    """The validation split from trainclasses1.txt / valclasses1.txt (never from val_loc)."""
    what = "allclasses_names of att_splits.mat"
    lists = {}
    for key, file in (("train", "trainclasses1.txt"), ("val", "valclasses1.txt")):
        lists[key] = class_indices(read_name_list(folder / file), records.class_names,
                                   folder / file, what)
        outside = np.setdiff1d(lists[key], records.seen)
        if outside.size:
            raise DataError(f"{folder / file}: class '{records.class_names[outside[0]]}' is not a "
                            f"trainval (seen) class; validation classes must come from trainval")
    records.files.update(train_classes=str(folder / "trainclasses1.txt"),
                         val_classes=str(folder / "valclasses1.txt"))
    return validation_split(records, lists["train"], lists["val"], fraction, seed)

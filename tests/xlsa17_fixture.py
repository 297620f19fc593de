"""Tiny copies of the three benchmarks in their real layouts, and of their real archives.

Each tree has the real attribute counts (CUB 312, SUN 102, AWA2 85), so the word vectors packaged
with mgmrn fit it, but only four classes of three images each.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

AUTHOR_PREFIX = "/BS/xian/work/data/"
ATTRIBUTES = {"cub": 312, "sun": 102, "awa2": 85}
FOLDER = {"cub": "CUB", "sun": "SUN", "awa2": "AWA2"}
# where each benchmark's images live under data.root, and the class folder of a class name
IMAGES = {"cub": "CUB_200_2011/images", "sun": "SUN/images", "awa2": "Animals_with_Attributes2/JPEGImages"}
CLASSES = {
    "cub": ["003.Gamma", "001.Alpha", "004.Delta", "002.Beta"],
    "sun": ["abbey", "airport", "bakery", "canyon"],
    "awa2": ["antelope", "zebra", "otter", "mole"],
}
SEEN, UNSEEN = [0, 1, 3], [2]
PER_CLASS = 3  # per seen class: 2 training images, 1 seen test image
# (seen classes, unseen classes, train, test seen, test unseen) of every tiny tree
COUNTS = {"n_seen_classes": 3, "n_unseen_classes": 1, "n_train": 6, "n_test_seen": 3,
          "n_test_unseen": 3}


def jpeg(seed: int) -> bytes:
    """A small noisy JPEG: noise, so that cutting the file in half breaks it."""
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def cell(strings: list[str]) -> np.ndarray:
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = np.array([s])
    return out


def loc(indices: list[int]) -> np.ndarray:
    return (np.asarray(indices, dtype=np.uint16) + 1).reshape(-1, 1)  # MATLAB: 1-based column


def class_folder(name: str, cls: str) -> str:
    return f"{cls[0]}/{cls}" if name == "sun" else cls  # SUN: images/a/abbey/...


def split_name(c: int, i: int) -> str:
    """The split of image ``i`` of class ``c``: unseen classes test, else one test image each."""
    return "test_unseen" if c in UNSEEN else ("test_seen" if i == 0 else "train")


def write_mats(folder: Path, image_files: list[str], labels: list[int],
               split_of: dict[str, list[int]], att: np.ndarray, class_names: list[str]) -> None:
    """``res101.mat`` and ``att_splits.mat`` as xlsa17 has them (features left out: zeros)."""
    scipy.io.savemat(folder / "res101.mat", {
        "image_files": cell(image_files), "labels": np.array(labels, float).reshape(-1, 1),
        "features": np.zeros((2, len(labels)))})
    scipy.io.savemat(folder / "att_splits.mat", {
        "original_att": att, "att": att / np.linalg.norm(att, axis=0),
        "allclasses_names": cell(class_names), "trainval_loc": loc(split_of["train"]),
        "test_seen_loc": loc(split_of["test_seen"]),
        "test_unseen_loc": loc(split_of["test_unseen"])})


def write_tree(root: Path, name: str) -> list[Path]:
    """One benchmark in the layout ``data.root`` expects; returns the image files written."""
    folder = root / "xlsa17" / "data" / FOLDER[name]
    folder.mkdir(parents=True, exist_ok=True)
    authors, labels, split_of, images = [], [], {"train": [], "test_seen": [], "test_unseen": []}, []
    for c, cls in enumerate(CLASSES[name]):
        for i in range(PER_CLASS):
            rel = f"{IMAGES[name]}/{class_folder(name, cls)}/{cls}_{i}.jpg"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg(100 * c + i))
            images.append(path)
            # the authors' paths: AWA2's hold a double slash, as in the real res101.mat
            authors.append(AUTHOR_PREFIX + rel.replace("2/JPEG", "2//JPEG"))
            labels.append(c + 1)
            split_of[split_name(c, i)].append(len(authors) - 1)
    att = np.random.default_rng(1).uniform(0, 100, (ATTRIBUTES[name], len(CLASSES[name])))
    write_mats(folder, authors, labels, split_of, att, CLASSES[name])
    (folder / "trainclasses1.txt").write_text(f"{CLASSES[name][0]}\n{CLASSES[name][3]}\n")
    (folder / "valclasses1.txt").write_text(f"{CLASSES[name][1]}\n")
    return images


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _files(root: Path, under: str, prefix: str = "") -> dict[str, bytes]:
    base = root / under
    return {prefix + p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*")) if p.is_file()}


def write_archives(source: Path, out: Path) -> dict[str, bytes]:
    """The four archives of the download table, with the real archives' internal layouts.

    Args:
        source: a folder holding the three trees of :func:`write_tree`.
        out: where to write the archives.

    Returns:
        file name -> its bytes.
    """
    out.mkdir(parents=True, exist_ok=True)
    # CUB_200_2011.tgz: CUB_200_2011/images/<class>/..., and a stray top-level attributes.txt
    cub = _files(source, "CUB_200_2011", "CUB_200_2011/")
    cub["CUB_200_2011/README"] = b"readme"
    cub["attributes.txt"] = b"1 has_bill_shape::curved\n"
    _tar(out / "CUB_200_2011.tgz", cub)
    # SUNAttributeDB_Images.tar.gz: images/<letter>/<class>/...
    _tar(out / "SUNAttributeDB_Images.tar.gz", _files(source, "SUN/images", "images/"))
    # AwA2-data.zip: Animals_with_Attributes2/JPEGImages/<class>/..., classes.txt, ...
    awa = _files(source, "Animals_with_Attributes2", "Animals_with_Attributes2/")
    awa["Animals_with_Attributes2/classes.txt"] = b"1\tantelope\n"
    _zip(out / "AwA2-data.zip", awa)
    # xlsa17.zip: xlsa17/data/<NAME>/...
    _zip(out / "xlsa17.zip", _files(source, "xlsa17", "xlsa17/"))
    return {p.name: p.read_bytes() for p in out.iterdir()}

"""xlsa17 reader: tiny .mat files made here, and full-size splits from the real files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from mgmrn.config import DataConfig
from mgmrn.data import DataError, build_data
from mgmrn.data.readers.records import load_attribute_vectors
from mgmrn.data.readers.xlsa17 import (
    PACKAGED_VECTORS,
    find_prefix_length,
    read_attribute_names,
    read_xlsa17,
)

from ..helpers import make_full, shared_data, tiny_jpeg
from ..xlsa17_fixture import AUTHOR_PREFIX, loc, split_name, write_mats, write_tree

# all-class order differs from folder numbering, as in the real CUB files
CLASSES = ["003.Gamma", "001.Alpha", "004.Delta", "002.Beta"]
SEEN, UNSEEN = [0, 1, 3], [2]


def make_tiny(root: Path, n_per_class: int = 4, n_attr: int = 5, double_slash: bool = False):
    """A CUB-like xlsa17 tree: 4 classes, 3 seen (3 trainval + 1 test-seen image each), 1 unseen."""
    folder = root / "xlsa17" / "data" / "CUB"
    folder.mkdir(parents=True)
    image_files, labels, split_of = [], [], {"train": [], "test_seen": [], "test_unseen": []}
    for c, name in enumerate(CLASSES):
        for i in range(n_per_class):
            rel = f"Tiny/images/{name}/img_{i}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(tiny_jpeg())
            sep = "Tiny//images" if double_slash else "Tiny/images"
            image_files.append(AUTHOR_PREFIX + rel.replace("Tiny/images", sep))
            labels.append(c + 1)
            split_of[split_name(c, i)].append(len(image_files) - 1)
    att = np.arange(n_attr * len(CLASSES), dtype=float).reshape(n_attr, len(CLASSES))
    att[0, 2] = -1.0  # AWA2-style missing value
    write_mats(folder, image_files, labels, split_of, att, CLASSES)
    names = "".join(f"{i + 1} attr_name_{i}\n" for i in range(n_attr))
    (folder / "attributes.txt").write_text(names)
    (root / "w2v").mkdir()
    with open(root / "w2v" / "CUB_attribute.pkl", "wb") as fh:
        pickle.dump(np.random.default_rng(0).normal(size=(n_attr, 7)), fh)
    return folder, split_of


def test_reads_tiny_split(tmp_path):
    _, split_of = make_tiny(tmp_path)
    data = build_data(DataConfig(name="cub", root=str(tmp_path), image_size=32), seed=0)
    assert data.summary() == {"n_seen_classes": 3, "n_unseen_classes": 1, "n_train": 9,
                              "n_test_seen": 3, "n_test_unseen": 4}
    assert data.seen_classes.tolist() == SEEN and data.unseen_classes.tolist() == UNSEEN
    assert data.class_names == CLASSES
    # train labels are positions among seen classes; test labels are all-class indices
    assert sorted(set(data.train_labels.tolist())) == [0, 1, 2]
    assert data.train.paths[0].startswith(str(tmp_path / "Tiny" / "images"))
    assert set(data.test_unseen.labels.tolist()) == {2}
    image, label = data.test_seen[0]
    assert image.shape == (3, 32, 32) and isinstance(label, int)
    # (C, A) = transpose of the stored (A, C), with the -1 clamped to 0
    assert data.class_attributes.shape == (4, 5)
    assert data.class_attributes[1, 1].item() == 5.0 and data.class_attributes[2, 0].item() == 0.0
    assert data.attribute_names[2] == "attr_name_2"
    assert data.attribute_vectors.shape == (5, 7)
    assert data.files["dropped_prefix"] == "BS/xian/work/data"


def test_normalized_semantic_reads_att(tmp_path):
    make_tiny(tmp_path)
    data = build_data(DataConfig(name="cub", root=str(tmp_path), semantic="normalized"))
    norms = data.class_attributes.norm(dim=1)
    assert norms[[0, 1, 3]].allclose(torch.ones(3))  # columns L2-normalised


def test_double_slash_and_longest_suffix(tmp_path):
    make_tiny(tmp_path, double_slash=True)
    # a shorter suffix also exists: the longest one must win
    decoy = tmp_path / "images" / CLASSES[0] / "img_0.jpg"
    decoy.parent.mkdir(parents=True)
    decoy.write_bytes(tiny_jpeg())
    paths = [AUTHOR_PREFIX + f"Tiny//images/{CLASSES[0]}/img_0.jpg"]
    assert find_prefix_length(paths, tmp_path) == 4
    records = read_xlsa17(tmp_path, "cub")
    assert all("//" not in p and "/Tiny/images/" in p for p in records.paths["train"])


def test_missing_image_names_file_count_and_root(tmp_path):
    make_tiny(tmp_path)
    gone = tmp_path / "Tiny" / "images" / CLASSES[1] / "img_2.jpg"
    gone.unlink()
    with pytest.raises(DataError) as err:
        build_data(DataConfig(name="cub", root=str(tmp_path)))
    assert "1 of 16 image files are missing" in str(err.value)
    assert str(gone) in str(err.value) and str(tmp_path) in str(err.value)


def test_wrong_root_lists_tried_paths(tmp_path):
    make_tiny(tmp_path)
    for path in sorted((tmp_path / "Tiny").rglob("*.jpg")):
        path.unlink()
    with pytest.raises(DataError, match="no image of res101.mat found") as err:
        read_xlsa17(tmp_path, "cub")
    assert str(tmp_path / "Tiny" / "images" / CLASSES[0] / "img_0.jpg") in str(err.value)


def test_validation_split_from_class_lists(tmp_path):
    folder, _ = make_tiny(tmp_path, n_per_class=6)
    (folder / "trainclasses1.txt").write_text(f"{CLASSES[0]}\n\n{CLASSES[3]}\n")
    (folder / "valclasses1.txt").write_text(f"{CLASSES[1]}\n")
    cfg = DataConfig(name="cub", root=str(tmp_path), split="val", val_fraction=0.4)
    data = build_data(cfg, seed=3)
    # the real unseen class 004.Delta is dropped, the validation class plays unseen
    assert data.class_names == [CLASSES[0], CLASSES[1], CLASSES[3]]
    assert data.seen_classes.tolist() == [0, 2] and data.unseen_classes.tolist() == [1]
    # 5 trainval images per class: 2 of each training class held out, all 5 of the val class
    assert data.summary()["n_test_seen"] == 4 and data.summary()["n_train"] == 6
    assert data.summary()["n_test_unseen"] == 5
    assert not set(data.train.paths) & set(data.test_seen.paths)
    again = build_data(cfg, seed=3)
    assert again.test_seen.paths == data.test_seen.paths


def test_overlapping_split_indices_are_refused(tmp_path):
    folder, split_of = make_tiny(tmp_path)
    mat = scipy.io.loadmat(folder / "att_splits.mat")
    mat["test_seen_loc"] = loc(split_of["test_seen"] + split_of["train"][:2])
    scipy.io.savemat(folder / "att_splits.mat", {k: v for k, v in mat.items()
                                                 if not k.startswith("__")})
    with pytest.raises(DataError, match=r"2 images are in both the train and test_seen"):
        read_xlsa17(tmp_path, "cub")


def test_class_list_with_unknown_name(tmp_path):
    folder, _ = make_tiny(tmp_path)
    (folder / "trainclasses1.txt").write_text(f"{CLASSES[0]}\n001.alpha\n")
    (folder / "valclasses1.txt").write_text(f"{CLASSES[3]}\n")
    with pytest.raises(DataError) as err:
        read_xlsa17(tmp_path, "cub", split="val")
    message = str(err.value)
    assert "trainclasses1.txt line 2" in message and "'001.alpha'" in message
    assert "allclasses_names" in message


def test_word_vector_row_mismatch(tmp_path):
    make_tiny(tmp_path)
    bad = tmp_path / "vectors.npy"
    np.save(bad, np.zeros((4, 3)))
    with pytest.raises(DataError) as err:
        read_xlsa17(tmp_path, "cub", attribute_vectors=bad)
    message = str(err.value)
    assert "4 attribute vectors" in message and "5 attributes" in message
    assert str(bad) in message and "att_splits.mat" in message


@pytest.mark.parametrize("name,rows", [("CUB", 312), ("SUN", 102), ("AWA2", 85)])
def test_real_word_vectors_and_attribute_names(name, rows):
    vectors = load_attribute_vectors(shared_data("w2v", f"{name}_attribute.pkl"), rows, "test")
    assert vectors.shape == (rows, 300) and vectors.dtype == np.float32
    names, source = read_attribute_names(shared_data("xlsa17", name), rows)
    # sums of word vectors; SUN's "man-made" has no word2vec entry and is all zero
    zero = [names[i] for i in np.flatnonzero(~vectors.any(axis=1))]
    assert zero == (["man-made"] if name == "SUN" else [])
    assert source is not None and len(set(names)) == rows
    first = {"CUB": "has_bill_shape::curved_(up_or_down)", "SUN": "sailing/ boating",
             "AWA2": "black"}[name]
    assert names[0] == first


SIZES = {  # DESIGN.md section 2
    "CUB": (150, 50, 7057, 1764, 2967),
    "SUN": (645, 72, 10320, 2580, 1440),
    "AWA2": (40, 10, 23527, 5882, 7913),
}


def folder_class(name: str, path: str) -> str:
    """The class an image's folder says: CUB/AWA2 folder name; SUN a/abbey/... joined by '_'."""
    parts = Path(path).parts
    if name == "SUN":
        return "_".join(parts[parts.index("images") + 2:-1])
    return parts[-2]


# AWA2 writes 37k files: 6 s on an idle disk, near 20 s on a busy one
@pytest.mark.parametrize("name", ["CUB", "SUN", pytest.param("AWA2", marks=pytest.mark.slow)])
def test_full_size_splits(tmp_path, name):
    """Every split size of DESIGN.md section 2, with every image written (tiny) and verified."""
    make_full(tmp_path, name, create="all")
    data = build_data(DataConfig(name=name.lower(), root=str(tmp_path), image_size=32))
    s = data.summary()
    assert (s["n_seen_classes"], s["n_unseen_classes"], s["n_train"], s["n_test_seen"],
            s["n_test_unseen"]) == SIZES[name]
    n_attr = {"CUB": 312, "SUN": 102, "AWA2": 85}[name]
    assert data.attribute_vectors.shape == (n_attr, 300)
    assert data.class_attributes.shape == (len(data.class_names), n_attr)
    assert data.class_attributes.min() >= 0  # AWA2's -1 marks clamped
    # labels follow allclasses_names, not folder numbering (CUB's 001.Black_footed_Albatross is
    # class 151): every image must sit in its own class's folder
    if name == "CUB":
        assert data.class_names.index("001.Black_footed_Albatross") == 150
    paths = data.train.paths + data.test_seen.paths + data.test_unseen.paths
    labels = np.concatenate([data.seen_classes.numpy()[data.train_labels], data.test_seen.labels,
                             data.test_unseen.labels])
    assert all(folder_class(name, p) == data.class_names[y]
               for p, y in zip(paths, labels, strict=True))
    val = build_data(DataConfig(name=name.lower(), root=str(tmp_path), split="val",
                                verify_images=False))
    n_train, n_val = {"CUB": (100, 50), "SUN": (580, 65), "AWA2": (27, 13)}[name]
    assert (len(val.seen_classes), len(val.unseen_classes)) == (n_train, n_val)
    assert sum(val.summary()[k] for k in ("n_train", "n_test_seen", "n_test_unseen")) == \
        SIZES[name][2]  # the validation split uses the trainval images only


def test_awa2_paths_map_through_double_slash(tmp_path):
    make_full(tmp_path, "AWA2", create="first")
    records = read_xlsa17(tmp_path, "awa2")
    assert records.files["dropped_prefix"] == "BS/xian/work/data"
    assert records.paths["train"][0].startswith(str(tmp_path / "Animals_with_Attributes2") + "/")


@pytest.mark.parametrize("name,rows", [("CUB", 312), ("SUN", 102), ("AWA2", 85)])
def test_packaged_word_vectors_equal_the_published_ones(name, rows):
    with open(shared_data("w2v", f"{name}_attribute.pkl"), "rb") as fh:
        published = pickle.load(fh)
    packaged = np.load(PACKAGED_VECTORS / f"{name}_attribute.npy", allow_pickle=False)
    assert packaged.dtype == np.float32 and packaged.shape == (rows, 300)
    assert np.array_equal(packaged, published.astype(np.float32))  # float32 rounding only


def test_word_vector_file_precedence(tmp_path):
    """data.attribute_vectors, else <root>/w2v/, else the packaged copy."""
    write_tree(tmp_path, "cub")
    packaged = np.load(PACKAGED_VECTORS / "CUB_attribute.npy")
    records = read_xlsa17(tmp_path, "cub")
    assert records.files["attribute_vectors"] == str(PACKAGED_VECTORS / "CUB_attribute.npy")
    assert np.array_equal(records.attribute_vectors, packaged)
    in_root = np.random.default_rng(0).normal(size=(312, 4))
    (tmp_path / "w2v").mkdir()
    with open(tmp_path / "w2v" / "CUB_attribute.pkl", "wb") as fh:
        pickle.dump(in_root, fh)
    records = read_xlsa17(tmp_path, "cub")
    assert np.allclose(records.attribute_vectors, in_root)
    chosen = tmp_path / "chosen.npy"
    np.save(chosen, np.ones((312, 6)))
    records = read_xlsa17(tmp_path, "cub", attribute_vectors=chosen)
    assert records.attribute_vectors.shape == (312, 6)
    assert records.files["attribute_vectors"] == str(chosen)

"""Custom dataset format: a good folder, and every error naming its file, line and field."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgmrn.config import DataConfig
from mgmrn.data import DataError, build_data, build_train_loader, check_sampler_fits
from mgmrn.data.readers.custom import read_custom

from ..helpers import CUSTOM_ATTRIBUTES as ATTRS
from ..helpers import CUSTOM_CLASSES as CLASSES
from ..helpers import write_custom


def test_good_folder(tmp_path):
    root = write_custom(tmp_path / "set")
    data = build_data(DataConfig(name="custom", root=str(root), image_size=32), seed=1)
    assert data.class_names == [c[0] for c in CLASSES]
    assert data.attribute_names == ATTRS
    assert data.class_attributes[1].tolist() == [1, 0, 0.5, 0]
    # no attribute_vectors.npy: one one-hot query code per attribute
    assert torch.equal(data.attribute_vectors, torch.eye(4))
    assert data.seen_classes.tolist() == [0, 1, 2] and data.unseen_classes.tolist() == [3, 4]
    # 20% of each seen class's 5 images held out; notes.txt and hidden entries are ignored
    assert data.summary() == {"n_seen_classes": 3, "n_unseen_classes": 2, "n_train": 12,
                              "n_test_seen": 3, "n_test_unseen": 10}
    assert not set(data.train.paths) & set(data.test_seen.paths)
    assert sorted(set(data.test_unseen.labels.tolist())) == [3, 4]
    image, label = data.train[0]
    assert image.shape == (3, 32, 32) and label == 0
    other = build_data(DataConfig(name="custom", root=str(root), image_size=32), seed=2)
    assert build_data(DataConfig(name="custom", root=str(root)), seed=1).test_seen.paths == \
        data.test_seen.paths
    assert other.test_seen.paths != data.test_seen.paths


@pytest.mark.parametrize("flip", [True, False])
def test_data_flip_decides_whether_training_images_are_mirrored(tmp_path, flip):
    root = write_custom(tmp_path / "set", n_images=5, suffixes=(".png",))
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[:, 8:] = 255  # left half black, right half white
    for path in (root / "images").glob("*/*.png"):
        if not path.name.startswith("."):
            Image.fromarray(pixels).save(path)
    data = build_data(DataConfig(name="custom", root=str(root), image_size=16, flip=flip))
    torch.manual_seed(0)
    mirrored = [data.train[0][0][:, :, 0].float().mean() > 128 for _ in range(30)]
    assert (5 < sum(mirrored) < 25) if flip else not any(mirrored)
    test_image = data.test_seen[0][0]  # test images are never mirrored
    assert test_image[:, :, 0].float().mean() < 128


def test_test_seen_list_and_vectors(tmp_path):
    root = write_custom(tmp_path / "set")
    (root / "test_seen.txt").write_text("apple/0.png\nzebra/1.JPG\nzebra/2.jpeg\n")
    np.save(root / "attribute_vectors.npy", np.arange(12, dtype=np.float64).reshape(4, 3))
    data = build_data(DataConfig(name="custom", root=str(root)))
    assert sorted(Path(p).name for p in data.test_seen.paths) == ["0.png", "1.JPG", "2.jpeg"]
    assert data.summary()["n_train"] == 12
    assert data.attribute_vectors.shape == (4, 3) and data.attribute_vectors[3, 2].item() == 11.0


def test_test_seen_list_errors(tmp_path):
    root = write_custom(tmp_path / "set")
    (root / "test_seen.txt").write_text("apple/0.png\ntiger/1.JPG\n")
    with pytest.raises(DataError, match=r"test_seen.txt line 2: 'tiger/1.JPG' is not in a seen"):
        read_custom(root)
    (root / "test_seen.txt").write_text("apple/9.png\n")
    with pytest.raises(DataError, match=r"test_seen.txt line 1: image .*9.png not found"):
        read_custom(root)


def test_vector_rows_must_match(tmp_path):
    root = write_custom(tmp_path / "set")
    np.save(root / "attribute_vectors.npy", np.zeros((3, 8)))
    with pytest.raises(DataError) as err:
        read_custom(root)
    assert "has 3 attribute vectors" in str(err.value) and "4 attributes" in str(err.value)
    assert "attribute_vectors.npy" in str(err.value) and "classes.csv" in str(err.value)


GOOD = [f"{n},{s}," + ",".join(str(v) for v in a) for n, s, a in CLASSES]


@pytest.mark.parametrize("rows,expected", [
    (GOOD[:2] + ["zebra,sene,0,0,1,1"] + GOOD[3:],
     r"classes.csv line 4, field 'split': expected 'seen' or 'unseen', got 'sene'"),
    (GOOD[:1] + ["brick,seen,1,0,high,0"] + GOOD[2:],
     r"classes.csv line 3, field 'big': expected a number, got 'high'"),
    (GOOD[:1] + ["brick,seen,1,0,0"] + GOOD[2:], r"classes.csv line 3: 5 fields, expected 6"),
    (GOOD + ["apple,unseen,0,0,0,0"], r"classes.csv line 7, field 'class': class 'apple' already"),
    (GOOD + ["pear,unseen,0,1,0,0"], r"classes.csv line 7, field 'class': class 'pear' has no "
                                     r"image folder .*images/pear"),
    (GOOD[:4], r"images/tiger: image folder with no row in .*classes.csv"),
    ([r for r in GOOD if "unseen" not in r], r"classes.csv: no class has split 'unseen'"),
    (GOOD[:2] + ["zebra,seen,0,0,0,0"] + GOOD[3:],
     r"classes.csv line 4: class 'zebra' has every attribute 0; the cosine classifier needs"),
])
def test_classes_csv_errors(tmp_path, rows, expected):
    root = write_custom(tmp_path / "set", rows=rows)
    with pytest.raises(DataError, match=expected):
        read_custom(root)


def test_byte_order_mark_is_accepted_and_bad_bytes_and_repeated_columns_are_named(tmp_path):
    root = write_custom(tmp_path / "set")
    csv_path = root / "classes.csv"
    text = csv_path.read_text()
    csv_path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())  # as Excel saves
    assert read_custom(root).attribute_names == ATTRS
    csv_path.write_bytes(text.replace("tomato", "tomat\xf6").encode("latin-1"))
    with pytest.raises(DataError, match=r"classes.csv line 5: byte 0xf6 is not UTF-8 text; save "
                                        r"the file as UTF-8"):
        read_custom(root)
    csv_path.write_text(text.replace("big,striped", "big,red", 1))
    with pytest.raises(DataError, match=r"classes.csv line 1: column\(s\) given twice: red"):
        read_custom(root)


def test_a_missing_folder_names_data_root(tmp_path):
    with pytest.raises(DataError, match="data.root '.*nowhere' is not a folder; give data.root="):
        build_data(DataConfig(name="custom", root=str(tmp_path / "nowhere")))


def test_bad_header_and_empty_folder(tmp_path):
    root = write_custom(tmp_path / "set")
    text = (root / "classes.csv").read_text().replace("class,split", "name,split", 1)
    (root / "classes.csv").write_text(text)
    with pytest.raises(DataError, match=r"classes.csv line 1: header must be class,split"):
        read_custom(root)
    root = write_custom(tmp_path / "other")
    for path in (root / "images" / "brick").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"images/brick: no images .* class 'brick'"):
        read_custom(root)


def test_sampler_fit_errors_name_the_fix(tmp_path):
    root = write_custom(tmp_path / "set", n_images=2)
    cfg = DataConfig(name="custom", root=str(root), ways=3, shots=2)
    data = build_data(cfg)
    # 2 images, none held out (a class always keeps one): the smallest class has 2
    check_sampler_fits(data, cfg)
    (root / "images" / "zebra" / "1.JPG").unlink()
    data = build_data(cfg)
    with pytest.raises(ValueError) as err:
        check_sampler_fits(data, cfg)
    message = str(err.value)
    assert "\n" not in message and "data.shots=2" in message and "'zebra'" in message
    assert "at most 1" in message and str(root / "images" / "zebra") in message
    with pytest.raises(ValueError, match=r"data.ways=4 exceeds the 3 seen classes.*at most 3"):
        check_sampler_fits(data, DataConfig(ways=4, shots=1))
    with pytest.raises(ValueError, match=r"data.ways\*data.shots = 20 images exceeds the 5"):
        check_sampler_fits(data, DataConfig(ways=4, shots=5, sampler="random"))


def test_validation_split_keeps_unseen_untouched(tmp_path):
    root = write_custom(tmp_path / "set", n_images=6)
    (root / "val_classes.txt").write_text("brick\n")
    data = build_data(DataConfig(name="custom", root=str(root), split="val", val_fraction=0.5))
    assert data.class_names == ["apple", "brick", "zebra"]
    assert data.unseen_classes.tolist() == [1] and data.seen_classes.tolist() == [0, 2]
    # 5 training images per class remain after the 20% seen-test holdout
    assert data.summary()["n_test_unseen"] == 5
    assert data.summary()["n_test_seen"] + data.summary()["n_train"] == 10
    assert not any("tiger" in p or "tomato" in p for p in data.test_unseen.paths)
    (root / "val_classes.txt").unlink()
    drawn = build_data(DataConfig(name="custom", root=str(root), split="val"))
    assert len(drawn.unseen_classes) == 1 and len(drawn.seen_classes) == 2  # 2/5 of 3 seen


def test_corrupt_image_is_caught_and_can_be_skipped(tmp_path, caplog):
    root = write_custom(tmp_path / "set")
    good = (root / "images" / "apple" / "1.JPG").read_bytes()
    bad = root / "images" / "apple" / "4.JPG"
    bad.write_bytes(good[: len(good) // 2])  # truncated JPEG: header intact, data cut
    cfg = DataConfig(name="custom", root=str(root), image_size=32)
    with pytest.raises(DataError) as err:
        build_data(cfg)
    assert str(bad) in str(err.value) and "skip_bad_images" in str(err.value)
    cfg.skip_bad_images = True
    with caplog.at_level(logging.WARNING):
        data = build_data(cfg)
    assert str(bad) in caplog.text
    all_paths = data.train.paths + data.test_seen.paths + data.test_unseen.paths
    assert str(bad) not in all_paths and len(all_paths) == 24
    assert data.files["left_out_images"] == [str(bad)]


def test_loader_batches_hold_seen_classes_only(tmp_path):
    root = write_custom(tmp_path / "set", n_images=6)
    cfg = DataConfig(name="custom", root=str(root), image_size=32, ways=2, shots=2, num_workers=0)
    data = build_data(cfg)
    loader = build_train_loader(data, cfg, batches_per_epoch=20, seed=0)
    unseen = set(data.unseen_classes.tolist())
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        for images, labels in loader:
            assert images.shape == (4, 3, 32, 32)
            classes = set(data.seen_classes[labels].tolist())
            assert len(classes) == 2 and not classes & unseen

"""Image checks before training, and the dataset's handling of images that break mid-run."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mgmrn.data import DataError, ImageDataset
from mgmrn.data.transforms import test_transform as eval_transform
from mgmrn.data.verify import check_files_exist, find_bad_images, verify_images


@pytest.fixture
def images(tmp_path):
    """Six JPEGs of two classes (colour = class); file 4 is truncated, file 5 is not an image."""
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (40, 30), (250, 0, 0) if i % 2 else (0, 0, 250)).save(path, "JPEG")
        paths.append(str(path))
    data = open(paths[4], "rb").read()
    open(paths[4], "wb").write(data[: len(data) // 2])
    open(paths[5], "wb").write(b"this is text")
    return paths


def test_missing_files_are_listed_with_count_and_root(tmp_path):
    present = tmp_path / "a.jpg"
    present.write_bytes(b"x")
    missing = [str(tmp_path / f"gone_{i}.jpg") for i in range(7)]
    with pytest.raises(DataError) as err:
        check_files_exist([str(present), *missing], root=tmp_path)
    message = str(err.value)
    assert "7 of 8 image files are missing" in message and str(tmp_path) in message
    assert missing[0] in message and missing[4] in message and missing[6] not in message
    assert "and 2 more" in message
    check_files_exist([str(present)], root=tmp_path)


def test_verify_finds_truncated_jpeg_and_non_image(images):
    bad = find_bad_images(images, threads=2)
    assert set(bad) == {images[4], images[5]}
    assert "truncated" in bad[images[4]].lower()
    with pytest.raises(DataError) as err:
        verify_images(images, skip_bad_images=False)
    assert images[4] in str(err.value) and images[5] in str(err.value)


def test_verify_with_skip_warns_per_file(images, caplog):
    with caplog.at_level(logging.WARNING):
        left_out = verify_images(images, skip_bad_images=True)
    assert left_out == {images[4], images[5]}
    assert images[4] in caplog.text and images[5] in caplog.text


def test_decode_failure_substitutes_same_class(images, caplog):
    labels = np.array([0, 1, 0, 1, 0, 1])
    dataset = ImageDataset(images, labels, eval_transform(32), skip_bad_images=True)
    with caplog.at_level(logging.WARNING):
        image, label = dataset[4]
    assert label == 0 and images[4] in caplog.text
    assert torch.equal(image, dataset[0][0])  # the next readable class-0 image, cyclically
    # class 1: file 5 is broken, so its substitute is file 1 (wrapping around)
    assert torch.equal(dataset[5][0], dataset[1][0])


def test_decode_failure_without_skip_names_the_file(images):
    dataset = ImageDataset(images, np.zeros(6, dtype=int), eval_transform(32))
    with pytest.raises(DataError, match=r"cannot read image .*4\.jpg.*skip_bad_images"):
        dataset[4]


def test_loader_workers_survive_bad_images(images):
    labels = np.array([0, 1, 0, 1, 0, 1])
    dataset = ImageDataset(images, labels, eval_transform(32), skip_bad_images=True)
    loader = DataLoader(dataset, batch_size=3, num_workers=2)
    batches = list(loader)
    assert [b[1].tolist() for b in batches] == [[0, 1, 0], [1, 0, 1]]
    blue = batches[1][0][1]  # item 4 of class 0 (blue) is drawn from a blue image
    assert blue[2].mean() > blue[0].mean()

"""benchmarks/digits.py: handwritten digits described by their seven segments, as a custom-format
folder that mgmrn reads, and the accuracy guard's runs on it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mgmrn.config import DataConfig
from mgmrn.data.build import build_data

from ..helpers import load_script


@pytest.fixture(scope="module")
def digits():
    return load_script("benchmarks/digits.py")


def fake_digits(per_class: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Stand-ins for sklearn's digits: 8 x 8 grey levels 0-16, image i filled with i % 17."""
    labels = np.repeat(np.arange(10), per_class)
    images = np.stack([np.full((8, 8), i % 17, dtype=float) for i in range(len(labels))])
    return images, labels


def test_the_segments_are_those_a_seven_segment_display_lights(digits):
    table = digits.segment_table()
    assert table.shape == (10, 7)
    # lit segments per digit, as on any display: 8 lights all seven, 1 two, 7 three
    assert table.sum(1).tolist() == [6, 2, 5, 5, 4, 5, 6, 3, 7, 6]
    a, b, c, d, e, f, g = table.T
    assert g.tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 1, 1]  # the middle bar: not in 0, 1, 7
    assert e.tolist() == [1, 0, 1, 0, 0, 0, 1, 0, 1, 0]  # lower left: 0, 2, 6, 8
    seen = [d for d in range(10) if d not in digits.UNSEEN]
    assert table[seen].max(0).min() == 1  # every segment is lit in some seen digit
    assert len({tuple(row) for row in table}) == 10  # every digit its own code


def test_the_folder_is_read_by_the_custom_reader_with_its_classes_and_pixels(digits, tmp_path):
    images, labels = fake_digits()
    summary = digits.write_digits_set(images, labels, tmp_path / "d")
    assert summary["unseen"] == ["digit_2", "digit_5", "digit_9"]
    assert summary["per_class"]["digit_4"] == 12
    data = build_data(DataConfig(name="custom", root=str(tmp_path / "d"), image_size=32))
    assert data.summary()["n_seen_classes"] == 7 and data.summary()["n_unseen_classes"] == 3
    assert data.attribute_names == [f"segment_{s}" for s in "abcdefg"]
    for c, name in enumerate(data.class_names):
        digit = int(name.split("_")[1])
        assert data.class_attributes[c].tolist() == digits.segment_table()[digit].tolist()
        assert (c in data.unseen_classes.tolist()) == (digit in digits.UNSEEN)
    # grey level 16 is white; image 16 (a 1) was filled with 16, image 20 with 3
    white = np.asarray(Image.open(tmp_path / "d" / "images" / "digit_1" / "0016.png"))
    grey = np.asarray(Image.open(tmp_path / "d" / "images" / "digit_1" / "0020.png"))
    assert white.shape == (8, 8) and white.min() == 255 and grey.max() == round(3 * 255 / 16)


def test_it_writes_again_only_into_its_own_folder(digits, tmp_path):
    images, labels = fake_digits(per_class=2)
    digits.write_digits_set(images, labels, tmp_path / "d")
    digits.write_digits_set(images, labels, tmp_path / "d")  # its own: written again
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="did not write"):
        digits.write_digits_set(images, labels, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="some \\(not all\\) of 0-9"):
        digits.write_digits_set(images, labels, tmp_path / "e", unseen=tuple(range(10)))


def test_the_accuracy_guard_trains_the_parts_recipes_on_the_folder(tmp_path):
    bench = load_script("benchmarks/accuracy.py")
    cell = bench.Cell("digits", "pretrained", "val", 1, data_root="/data/digits")
    cmd = cell.command(tmp_path, [])
    assert cmd[5] == "custom"  # what a user's own folder gets without --config
    scratch = bench.Cell("digits", "scratch", "trainval", 0, data_root="/d").command(tmp_path, [])
    assert scratch[5] == "parts" and "model.finetune=true" in scratch
    assert {"data.name=custom", "data.root=/data/digits", "data.ways=5", "data.shots=12",
            "data.flip=false", "seed=1", "data.split=val"} <= set(cmd)
    scratch = bench.Cell("digits", "scratch", "trainval", 0, data_root="/d").command(tmp_path, [])
    assert scratch[5] == "parts" and "model.finetune=true" in scratch

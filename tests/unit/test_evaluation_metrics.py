"""Tests of mgmrn.evaluation.metrics: per-class accuracy and the harmonic mean, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgmrn.evaluation import (
    confused_pairs,
    harmonic_mean,
    named_confused_pairs,
    per_class_accuracy,
)


def test_per_class_accuracy_differs_from_overall_on_imbalanced_classes():
    # class 0: 4 images, all right -> 4/4 = 1
    # class 1: 1 image, wrong      -> 0/1 = 0
    # class 2: 1 image, right      -> 1/1 = 1
    # per-class mean = (1 + 0 + 1) / 3 = 2/3; overall accuracy = 5/6.
    labels = [0, 0, 0, 0, 1, 2]
    predictions = [0, 0, 0, 0, 0, 2]
    assert per_class_accuracy(predictions, labels) == pytest.approx(2 / 3)
    overall = np.mean(np.array(predictions) == np.array(labels))
    assert overall == pytest.approx(5 / 6)


def test_per_class_accuracy_mixed_fractions():
    # class 1: images 0, 1, 2 -> predictions 1, 2, 1 -> 2/3
    # class 2: images 3, 4    -> predictions 2, 0    -> 1/2
    # mean = (2/3 + 1/2) / 2 = 7/12
    acc = per_class_accuracy([1, 2, 1, 2, 0], [1, 1, 1, 2, 2])
    assert acc == pytest.approx(7 / 12)


def test_per_class_accuracy_accepts_tensors():
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    predictions = torch.tensor([0, 0, 0, 0, 0, 2])
    assert per_class_accuracy(predictions, labels) == pytest.approx(2 / 3)


def test_per_class_accuracy_over_given_classes_ignores_other_images():
    # Only classes 1 and 2 count: (0/1 + 1/1) / 2 = 1/2; class 0's images are ignored.
    labels = [0, 0, 0, 0, 1, 2]
    predictions = [0, 0, 0, 0, 0, 2]
    assert per_class_accuracy(predictions, labels, classes=[1, 2]) == pytest.approx(0.5)


def test_per_class_accuracy_rejects_a_class_without_images():
    with pytest.raises(ValueError, match="without any image"):
        per_class_accuracy([0, 1], [0, 1], classes=[0, 1, 2])


def test_per_class_accuracy_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError):
        per_class_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError):
        per_class_accuracy([], [])


def test_harmonic_mean_by_hand():
    # 2 * 0.5 * 0.25 / (0.5 + 0.25) = 0.25 / 0.75 = 1/3
    assert harmonic_mean(0.5, 0.25) == pytest.approx(1 / 3)
    assert harmonic_mean(0.25, 0.5) == pytest.approx(1 / 3)
    # 2 * 0.6 * 0.6 / 1.2 = 0.6: equal accuracies are their own harmonic mean
    assert harmonic_mean(0.6, 0.6) == pytest.approx(0.6)


def test_harmonic_mean_zero_cases():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.0, 0.7) == 0.0
    assert isinstance(harmonic_mean(0.0, 0.0), float)


def test_harmonic_mean_on_arrays():
    # [2*.5*.25/.75, 0 (both 0), 2*.8*.2/1.0] = [1/3, 0, 0.32]
    h = harmonic_mean(np.array([0.5, 0.0, 0.8]), np.array([0.25, 0.0, 0.2]))
    np.testing.assert_allclose(h, [1 / 3, 0.0, 0.32])


def test_class_accuracies_by_hand():
    from mgmrn.evaluation import class_accuracies

    # class 0: 1/1 right; class 1: one of two right; class 2: 2/2 right
    got = class_accuracies([0, 0, 1, 2, 2], [0, 1, 1, 2, 2], [0, 1, 2])
    assert list(got) == [1.0, 0.5, 1.0]


def test_confused_pairs_by_hand():
    # class 7: 4 images, 2 taken for 9 (positions 1, 3), 1 for 8 (position 2)
    # class 8: 2 images, both taken for 7 (positions 4, 5); class 9: 1 image, right
    labels = [7, 7, 7, 7, 8, 8, 9]
    predictions = [7, 9, 8, 9, 7, 7, 9]
    pairs = confused_pairs(predictions, labels, top=2, examples=1)
    # two pairs of count 2: 8->7 goes first, its share (2/2) beats 7->9 (2/4)
    assert pairs == [{"true": 8, "predicted": 7, "count": 2, "share": 1.0, "examples": [4]},
                     {"true": 7, "predicted": 9, "count": 2, "share": 0.5, "examples": [1]}]
    assert confused_pairs(labels, labels) == []
    assert len(confused_pairs(predictions, labels)) == 3


def test_named_confused_pairs_name_classes_and_example_files():
    # as above: 7 -> 9 twice (positions 1, 3), 7 -> 8 once (2), 8 -> 7 twice (4, 5)
    labels = [7, 7, 7, 7, 8, 8, 9]
    predictions = [7, 9, 8, 9, 7, 7, 9]
    names = [f"class{i}" for i in range(10)]
    paths = [f"img{i}.png" for i in range(7)]
    assert named_confused_pairs(predictions, labels, names, paths) == [
        {"true": "class8", "predicted": "class7", "count": 2, "share": 1.0,
         "examples": ["img4.png", "img5.png"]},
        {"true": "class7", "predicted": "class9", "count": 2, "share": 0.5,
         "examples": ["img1.png", "img3.png"]},
        {"true": "class7", "predicted": "class8", "count": 1, "share": 0.25,
         "examples": ["img2.png"]}]
    assert [p["examples"] for p in named_confused_pairs(predictions, labels, names)] == [[]] * 3

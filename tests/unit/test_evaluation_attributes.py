"""Attribute-group accuracy and attention mass on a region, on cases with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgmrn.evaluation.attributes import (
    attention_mass_share,
    attribute_group_accuracy,
    one_hot_groups,
)

NAMES = ["body_color_red", "body_color_blue", "beak_color_red", "beak_color_blue",
         "beak_color_green", "size"]
# three classes: (red body, green beak), (blue body, red beak), (red body, blue beak); size free
TABLE = np.array([[1, 0, 0, 0, 1, 0.3],
                  [0, 1, 1, 0, 0, 0.7],
                  [1, 0, 0, 1, 0, 1.0]])


def test_one_hot_groups_keep_only_groups_one_hot_for_every_class():
    assert one_hot_groups(NAMES, TABLE) == {"body_color": [0, 1], "beak_color": [2, 3, 4]}
    broken = TABLE.copy()
    broken[1, 2] = 0.5  # a class with a half-red beak: the beak group is no longer one-hot
    assert one_hot_groups(NAMES, broken) == {"body_color": [0, 1]}
    with pytest.raises(ValueError, match=r"\(C, 6\)"):
        one_hot_groups(NAMES, TABLE[:, :5])


def test_attribute_group_accuracy_by_hand():
    groups = one_hot_groups(NAMES, TABLE)
    labels = np.array([0, 1, 2, 2])
    scores = np.array([
        [0.9, 0.1, 0.0, 0.2, 0.8, 5.0],  # body red (right), beak green (right)
        [0.2, 0.7, 0.1, 0.6, 0.0, 5.0],  # body blue (right), beak blue (wrong: red)
        [0.4, 0.6, 0.0, 0.9, 0.1, 5.0],  # body blue (wrong), beak blue (right)
        [0.8, 0.3, 0.5, 0.2, 0.1, 5.0],  # body red (right), beak red (wrong: blue)
    ])
    accuracy = attribute_group_accuracy(torch.tensor(scores), torch.tensor(labels), TABLE, groups)
    assert accuracy == {"body_color": pytest.approx(0.75), "beak_color": pytest.approx(0.5)}


def test_attention_mass_share_by_hand():
    maps = np.zeros((2, 3, 4, 4))  # two images, three levels
    maps[0, 0, 0, 0] = 1.0  # all on the region's pixel
    maps[0, 1] = 1.0  # uniform: the region's area share
    maps[0, 2, 3, 3] = 2.0  # all off the region (and not normalised)
    maps[1, 0, 1, 1], maps[1, 0, 2, 2] = 3.0, 1.0  # 3/4 on a fully covered pixel
    maps[1, 1, 1, 1] = 1.0  # all on the covered pixel
    masks = np.zeros((2, 4, 4))
    masks[0, 0, 0] = 1.0
    masks[0, 0, 1] = 0.5  # half a pixel more: area 1.5 of 16
    masks[1, 1, 1] = 1.0
    shares = attention_mass_share(maps, masks)
    assert shares.shape == (2, 3)
    np.testing.assert_allclose(shares[0], [1.0, 1.5 / 16, 0.0])
    np.testing.assert_allclose(shares[1, :2], [0.75, 1.0])
    assert np.isnan(shares[1, 2])  # an all-zero map has no share


def test_attention_mass_share_refuses_what_is_not_a_map_and_mask():
    with pytest.raises(ValueError, match="must agree"):
        attention_mass_share(np.ones((2, 3, 4, 4)), np.ones((2, 5, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        attention_mass_share(-np.ones((1, 4, 4)), np.ones((1, 4, 4)))

"""The generic drawn set the demo backbone is pretrained on (mgmrn.data.synthetic.generic): not
the task's classes, deterministic, labelled by what shows, objects from a few pixels to half the
image."""

from __future__ import annotations

import numpy as np
import pytest

from mgmrn.data.synthetic.demo_draw import SHAPES
from mgmrn.data.synthetic.generic import (
    CATEGORIES,
    GENERIC_COLORS,
    TEXTURES,
    category_mask,
    draw_generic,
    draw_generic_batch,
    label_names,
)
from mgmrn.data.synthetic.parts_draw import LAYERS


def test_categories_are_disjoint_from_the_shapes_and_parts_sets():
    assert not set(CATEGORIES) & set(SHAPES)
    assert not set(CATEGORIES) & set(LAYERS)  # no body, wing, beak, hood, eye
    words = {w for name in label_names() for w in name.replace(":", "_").split("_")}
    assert not words & {"body", "wing", "beak", *SHAPES}


def test_labels_are_category_colour_texture_and_pairs():
    names = label_names()
    assert len(names) == len(set(names)) == (len(CATEGORIES) + len(GENERIC_COLORS) + len(TEXTURES)
                                              + len(CATEGORIES) * len(GENERIC_COLORS))


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_fills_a_fair_share_of_its_disc(category):
    v, u = np.mgrid[-1.2:1.2:121j, -1.2:1.2:121j]
    share = category_mask(category, u, v).mean() / (np.pi / (2.4 ** 2))
    assert 0.15 < share < 1.05, share


def test_an_image_is_a_function_of_its_seed_and_its_labels_are_consistent():
    a, la = draw_generic_batch(3, 10, 20, 64)
    b, lb = draw_generic_batch(3, 10, 20, 64)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert a.shape == (20, 64, 64, 3) and a.dtype == np.uint8
    names = label_names()
    for labels in la:
        shown = {names[i] for i in np.flatnonzero(labels)}
        pairs = [n for n in shown if ":" not in n]
        assert pairs, "every image shows at least one object"
        for pair in pairs:  # a category x colour pair implies both alone
            colour, category = pair.split("_")
            assert {f"color:{colour}", f"category:{category}"} <= shown


def test_objects_range_from_a_few_pixels_to_half_the_image(monkeypatch):
    import mgmrn.data.synthetic.generic as generic

    diameters = []

    def place(rng, side, size_range):
        diameters.append(size_range[0] * 96)  # the object's diameter in output pixels
        return generic_place(rng, side, size_range)

    generic_place = generic.place
    monkeypatch.setattr(generic, "place", place)
    for i in range(40):
        draw_generic(np.random.default_rng([7, i]), 96)
    assert min(diameters) < 6 and max(diameters) > 40
    assert len(diameters) > 40  # several objects per image

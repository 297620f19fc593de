"""Parts set: determinism, a compositional split, parts at three scales, attributes that live in them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mgmrn.config import CONFIG_DIR, DataConfig, PartsConfig, load_config
from mgmrn.data import DataError, build_data
from mgmrn.data.synthetic.demo_draw import COLORS
from mgmrn.data.synthetic.parts import MIN_SEEN_CLASSES, ensure_parts, parts_classes
from mgmrn.data.synthetic.parts_draw import PARTS, draw_creature, part_masks

from ..helpers import folder_bytes

TINY = PartsConfig(image_size=32, num_body_colors=3, num_wing_colors=3, num_beak_colors=3,
                   num_unseen=5, images_per_class=2)
PALETTE = tuple(COLORS)[:5]


def test_same_seed_same_pixels_other_seed_other_images(tmp_path):
    a = folder_bytes(ensure_parts(tmp_path / "a", TINY))
    b = folder_bytes(ensure_parts(tmp_path / "b", TINY))
    assert a == b and len([k for k in a if k.endswith(".png")]) == 27 * 2
    other = PartsConfig(**{**TINY.__dict__, "seed": 1})
    c = folder_bytes(ensure_parts(tmp_path / "c", other))
    images = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c[k] for k in images) == len(images)
    assert json.loads(a["parts.json"])["seed"] == 0 and json.loads(c["parts.json"])["seed"] == 1


@pytest.mark.parametrize("seed", range(4))
def test_one_hot_per_part_and_unseen_are_new_combinations(seed):
    classes = parts_classes(PartsConfig(seed=seed))
    attrs = classes.attributes
    assert attrs.shape == (80, 13) and len(classes.unseen) == 16
    groups = [[i for i, n in enumerate(classes.attribute_names) if n.startswith(f"{p}_color_")]
              for p in PARTS]
    assert [len(g) for g in groups] == [4, 4, 5] and sum(map(len, groups)) == attrs.shape[1]
    for g in groups:  # exactly one value of each part per class
        assert (attrs[:, g].sum(axis=1) == 1).all()
    seen = np.delete(attrs, classes.unseen, axis=0)
    assert seen.sum(axis=0).min() >= MIN_SEEN_CLASSES
    seen_rows = {tuple(r) for r in seen}
    assert not any(tuple(r) in seen_rows for r in attrs[classes.unseen])
    assert attrs[classes.unseen].sum(axis=0).min() >= 1  # every value is tested somewhere
    assert len(set(classes.names)) == 80


def test_bad_counts_name_the_key():
    with pytest.raises(DataError, match="data.parts.num_beak_colors"):
        parts_classes(PartsConfig(num_beak_colors=len(COLORS) + 1))
    with pytest.raises(DataError, match="data.parts.num_unseen"):
        parts_classes(PartsConfig(num_body_colors=2, num_wing_colors=2, num_beak_colors=2,
                                  num_unseen=8))


def test_loads_through_build_data_and_keeps_foreign_folders(tmp_path):
    five = PartsConfig(**{**TINY.__dict__, "images_per_class": 5})  # one seen test image each
    data = build_data(DataConfig(name="parts", root=str(tmp_path / "parts"), image_size=32,
                                 parts=five))
    assert data.summary() == {"n_seen_classes": 22, "n_unseen_classes": 5, "n_train": 88,
                              "n_test_seen": 22, "n_test_unseen": 25}
    c = int(data.unseen_classes[0])
    on = [data.attribute_names[i] for i in np.flatnonzero(data.class_attributes[c].numpy())]
    body, wing, beak = on  # the name lists the part colours in attribute order
    assert data.class_names[c] == (f"{body.split('_')[-1]}_body_{wing.split('_')[-1]}_wing_"
                                   f"{beak.split('_')[-1]}_beak")
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a parts cache"):
        ensure_parts(stranger, TINY)
    assert (stranger / "notes.txt").read_text() == "keep me"


def test_recipe_is_the_shapes_recipe_on_the_parts_set_with_a_frozen_backbone():
    demo = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    parts = yaml.safe_load((CONFIG_DIR / "parts.yaml").read_text())
    assert (parts["data"].pop("name"), parts["data"].pop("root"), parts.pop("output_dir")) == \
        ("parts", ".cache/mgmrn/parts", "runs/parts")
    assert parts["model"].pop("finetune") is False and "finetune" not in demo["model"]
    assert parts["data"].pop("parts") == demo["data"].pop("demo")
    for key in ("name", "root"):
        demo["data"].pop(key)
    demo.pop("output_dir")
    assert parts == demo
    assert load_config("parts").data.parts == PartsConfig()


def draw(n: int, colors: dict[str, str], size: int = 96):
    image, labels = draw_creature(np.random.default_rng([5, n]), size, colors, PALETTE)
    return image, part_masks(labels, size)


def test_parts_come_at_three_scales():
    shares = {p: [] for p in PARTS}
    for n in range(40):
        _, masks = draw(n, {"body": "red", "wing": "green", "beak": "blue"})
        for p in PARTS:
            shares[p].append(masks[p].sum() / masks[p].size)
    body, wing, beak = (np.array(shares[p]) for p in PARTS)
    assert body.min() > 0.05 and wing.min() > 0.015 and beak.min() > 0.002
    assert beak.max() < 0.01 and wing.max() < 0.05  # the beak is a few pixels wide at 96 px
    assert (body > 2 * wing).all() and (wing > 4 * beak).all()


@pytest.mark.parametrize("part", PARTS)
def test_a_part_attribute_changes_pixels_only_inside_that_part(part):
    base = {"body": "red", "wing": "green", "beak": "blue"}
    for n in range(6):
        before, masks = draw(n, base)
        after, masks_after = draw(n, {**base, part: "yellow"})
        assert all((masks[p] == masks_after[p]).all() for p in PARTS)
        changed = (before != after).any(axis=2)
        inside = masks[part] > 0
        assert not (changed & ~inside).any()
        assert changed[masks[part] == 1].mean() > 0.95  # and the part really shows its colour


def test_a_global_colour_histogram_finds_the_body_colour_but_not_the_beak_colour():
    """A linear read-out of how much of the image lies near each palette colour, trained on 200
    images and tested on 100, should name the body colour (the largest area) but not the beak
    colour: seeds of every colour hide it, so the beak must be found where it is."""
    rng = np.random.default_rng(0)
    truth = {p: rng.integers(0, len(PALETTE), 300) for p in PARTS}
    ref = np.array([COLORS[c] for c in PALETTE], dtype=np.float32)
    features = []
    for n in range(300):
        image, _ = draw(n, {p: PALETTE[truth[p][n]] for p in PARTS}, size=64)
        near = np.linalg.norm(image.reshape(-1, 1, 3) - ref, axis=2) < 60
        features.append(near.mean(axis=0))
    x = np.hstack([np.array(features), np.array(features) ** 2, np.ones((300, 1))])
    accuracy = {}
    for p in PARTS:
        weights = np.linalg.lstsq(x[:200], np.eye(len(PALETTE))[truth[p][:200]], rcond=None)[0]
        accuracy[p] = ((x[200:] @ weights).argmax(axis=1) == truth[p][200:]).mean()
    assert accuracy["body"] > 0.9
    assert accuracy["wing"] < 0.6 and accuracy["beak"] < 0.4  # chance: 0.2

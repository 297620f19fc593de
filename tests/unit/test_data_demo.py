"""Demo set: determinism, a genuine compositional split, caching, drawings that show the class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mgmrn.config import DataConfig, DemoConfig
from mgmrn.data import DataError, build_data
from mgmrn.data.synthetic.demo import MIN_SEEN_CLASSES, demo_classes, ensure_demo
from mgmrn.data.synthetic.demo_draw import COLORS, PATTERNS, SHAPES, draw_image, pattern_mask

from ..helpers import folder_bytes

SMALL = DemoConfig(image_size=32, images_per_class=3)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = folder_bytes(ensure_demo(tmp_path / "a", SMALL))
    b = folder_bytes(ensure_demo(tmp_path / "b", SMALL))
    assert a == b and len([k for k in a if k.endswith(".png")]) == 75 * 3
    other = DemoConfig(image_size=32, images_per_class=3, seed=1)
    c = folder_bytes(ensure_demo(tmp_path / "c", other))
    images = [k for k in a if k.endswith(".png") and k in c]
    assert sum(a[k] != c[k] for k in images) == len(images)
    assert a["classes.csv"] != c["classes.csv"]  # another unseen choice too


@pytest.mark.parametrize("seed", range(5))
def test_unseen_are_new_combinations_of_seen_values(seed):
    classes = demo_classes(DemoConfig(seed=seed))
    assert len(classes.names) == 75 and len(classes.unseen) == 15
    attrs = classes.attributes
    assert attrs.shape == (75, 13) and (attrs.sum(axis=1) == 3).all()
    seen = np.delete(attrs, classes.unseen, axis=0)
    # every value of every unseen class occurs in at least 3 seen classes ...
    for row in attrs[classes.unseen]:
        assert seen[:, row > 0].sum(axis=0).min() >= MIN_SEEN_CLASSES
    # ... but no unseen combination is a seen one, and every value is tested somewhere
    seen_rows = {tuple(r) for r in seen}
    assert not any(tuple(r) in seen_rows for r in attrs[classes.unseen])
    assert attrs[classes.unseen].sum(axis=0).min() >= 1


def test_impossible_unseen_count_is_refused():
    with pytest.raises(DataError, match="data.demo.num_unseen"):
        demo_classes(DemoConfig(num_shapes=2, num_colors=2, num_patterns=2, num_unseen=6))
    with pytest.raises(DataError, match="data.demo.num_shapes"):
        demo_classes(DemoConfig(num_shapes=len(SHAPES) + 1))


def test_loads_through_the_custom_reader(tmp_path):
    cfg = DataConfig(name="demo", root=str(tmp_path / "demo"), image_size=32,
                     demo=DemoConfig(image_size=32, images_per_class=5))
    data = build_data(cfg)
    assert data.summary() == {"n_seen_classes": 60, "n_unseen_classes": 15, "n_train": 240,
                              "n_test_seen": 60, "n_test_unseen": 75}
    assert data.attribute_names[:2] == ["shape_circle", "shape_square"]
    assert "color_red" in data.attribute_names and data.attribute_names[-1] == "pattern_dots"
    name = data.class_names[int(data.unseen_classes[0])]
    row = data.class_attributes[int(data.unseen_classes[0])]
    on = {data.attribute_names[i] for i in np.flatnonzero(row.numpy())}
    assert {a.split("_", 1)[1] for a in on} == set(name.split("_"))  # name matches attributes
    params = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert params["images_per_class"] == 5 and params["seed"] == 0


def test_cache_is_reused_and_regenerated_when_params_change(tmp_path):
    root = ensure_demo(tmp_path / "cache", SMALL)
    stamp = (root / "classes.csv").stat().st_mtime_ns
    ensure_demo(root, SMALL)
    assert (root / "classes.csv").stat().st_mtime_ns == stamp
    ensure_demo(root, DemoConfig(image_size=32, images_per_class=2))
    assert len(list((root / "images").rglob("*.png"))) == 75 * 2
    # no temporary folders left behind (the locks of the set stay beside it)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["cache"]
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("keep me")
    with pytest.raises(DataError, match="not a demo cache"):
        ensure_demo(stranger, SMALL)
    assert (stranger / "thesis.tex").read_text() == "keep me"


def closest_palette_color(image: np.ndarray, colors: list[str]) -> str:
    """The palette colour that most pixels lie close to."""
    pixels = image.reshape(-1, 3).astype(float)
    counts = [(np.linalg.norm(pixels - COLORS[c], axis=1) < 60).sum() for c in colors]
    return colors[int(np.argmax(counts))]


def test_object_colour_dominates_despite_distractors():
    colors = list(COLORS)[:5]
    hits = 0
    for n in range(100):
        color = colors[n % 5]
        image = draw_image(np.random.default_rng(n), 64, SHAPES[n % 5], color, "solid",
                           SHAPES[:5], tuple(colors))
        hits += closest_palette_color(image, colors) == color
    assert hits >= 95


def test_patterns_cover_distinct_shares():
    yy, xx = np.mgrid[0:70:0.1, 0:70:0.1]  # ten periods, finely sampled
    shares = {p: pattern_mask(p, xx, yy, period=7.0).mean() for p in PATTERNS}
    assert shares["solid"] == 0
    assert 0.4 < shares["stripes"] < 0.5 and 0.15 < shares["dots"] < 0.35
    assert 0.4 < shares["checker"] < 0.6


def test_withheld_classes_are_left_out_of_the_run_and_written_for_adding(tmp_path):
    from mgmrn.inference.classes import read_class_table

    cfg = DemoConfig(image_size=32, images_per_class=3, num_withheld=3)
    classes = demo_classes(cfg)
    withheld = set(classes.withheld.tolist())
    assert len(withheld) == 3 and not withheld & set(classes.unseen.tolist())
    seen = np.setdiff1d(np.arange(75), np.concatenate([classes.unseen, classes.withheld]))
    assert len(classes.unseen) == 15 and len(seen) == 57
    # the seen classes alone still show every attribute value often enough
    assert classes.attributes[seen].sum(axis=0).min() >= MIN_SEEN_CLASSES
    root = ensure_demo(tmp_path / "demo", cfg)
    data = build_data(DataConfig(name="demo", root=str(root), image_size=32, demo=cfg))
    assert len(data.class_names) == 72 and not withheld & {
        classes.names.index(n) for n in data.class_names}
    names, rows = read_class_table(root / "withheld" / "classes.csv", data.attribute_names)
    assert names == [classes.names[c] for c in sorted(withheld)]
    np.testing.assert_array_equal(rows, classes.attributes[sorted(withheld)])
    for name in names:
        assert len(list((root / "withheld" / "images" / name).glob("*.png"))) == 3
    # without withheld classes the cache record is that of earlier versions: no redraw
    assert "num_withheld" not in json.loads((ensure_demo(tmp_path / "d0", SMALL) / "demo.json")
                                            .read_text())

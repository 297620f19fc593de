"""Figures: attention maps folded onto the image, the seen-unseen curve, per-class accuracy."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgmrn.data import transforms
from mgmrn.evaluation import zsl_figures
from mgmrn.models import Backbone, GlobalBaseline
from mgmrn.viz import (
    level_attention_maps,
    plot_attention,
    plot_per_class_accuracy,
    plot_seen_unseen_curve,
    plot_training_curves,
    read_metrics,
    write_eval_figures,
)
from mgmrn.viz.curves import per_class_figure_size

from ..helpers import tiny_net

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the IHDR chunk, after checking the PNG signature."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR", f"{path}: the first chunk is not IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def results() -> dict:
    """zsl_figures on random scores: 4 seen and 3 unseen classes."""
    g = torch.Generator().manual_seed(0)
    seen_labels = torch.arange(40) % 4
    unseen_labels = 4 + torch.arange(30) % 3
    seen_scores = torch.randn(40, 7, generator=g)
    unseen_scores = torch.randn(30, 7, generator=g)
    seen_scores[torch.arange(40), seen_labels] += 1.5
    unseen_scores[torch.arange(30), unseen_labels] += 1.0
    return zsl_figures(seen_scores, seen_labels, unseen_scores, unseen_labels,
                        [0, 1, 2, 3], [4, 5, 6], step=0.05).to_json()


# --- attention maps -------------------------------------------------------------------------

def test_level_attention_maps_are_distributions_at_image_resolution():
    with torch.no_grad():
        net = tiny_net(5, word_dim=8).eval()
        out = net(torch.randn(2, 3, 64, 96), torch.rand(4, 5), return_attention=True)
    maps = level_attention_maps(out, (64, 96))
    assert maps.shape == (2, 3, 5, 64, 96)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(2, 3, 5))


def test_level_attention_maps_of_chosen_attributes_are_those_of_all(tmp_path):
    with torch.no_grad():
        net = tiny_net(5, word_dim=8).eval()
        out = net(torch.randn(2, 3, 64, 64), torch.rand(4, 5), return_attention=True)
    torch.testing.assert_close(level_attention_maps(out, (64, 64), [3, 1]),
                               level_attention_maps(out, (64, 64))[:, :, [3, 1]])


def test_level_attention_maps_refuse_outputs_without_attention():
    with torch.no_grad():
        out = tiny_net(5, word_dim=8).eval()(torch.randn(1, 3, 64, 64), torch.rand(4, 5))
        baseline = GlobalBaseline(Backbone("test_resnet", pretrained=False), 5).eval()
        base_out = baseline(torch.randn(1, 3, 64, 64), torch.rand(4, 5), return_attention=True)
    for output in (out, base_out):
        with pytest.raises(ValueError, match="no attention"):
            level_attention_maps(output, (64, 64))


def test_attention_figure_is_a_png_of_the_expected_size(tmp_path):
    maps = torch.rand(3, 2, 64, 64)
    path = plot_attention(torch.rand(3, 64, 64), maps, ["color_red", "shape_circle"],
                          ["fine", "middle", "coarse"], tmp_path / "a" / "explain.png",
                          attribute_values=[1.5, 0.25], title="test image")
    assert png_size(path) == ((1 + 3) * 170, 2 * 170 + 40)


def test_attention_figure_checks_the_names_match_the_maps(tmp_path):
    with pytest.raises(ValueError, match="level names"):
        plot_attention(torch.rand(3, 8, 8), torch.rand(3, 2, 8, 8), ["a"], ["fine"],
                       tmp_path / "x.png")


# --- evaluation figures ---------------------------------------------------------------------

def test_seen_unseen_curve_is_a_png_of_the_expected_size(tmp_path, results):
    path = plot_seen_unseen_curve(results, tmp_path / "curve.png")
    assert png_size(path) == (640, 520)


def test_seen_unseen_curve_draws_older_results_without_the_gamma_zero_entry(tmp_path, results):
    older = {k: v for k, v in results.items() if k != "gzsl_uncalibrated"}
    older["fixed_gamma"] = {"gamma": 0.5, "seen": 40.0, "unseen": 30.0, "h": 34.3}
    assert png_size(plot_seen_unseen_curve(older, tmp_path / "curve.png")) == (640, 520)


@pytest.mark.parametrize("n_classes", [3, 50])
def test_per_class_accuracy_is_a_png_sized_by_the_class_count(tmp_path, n_classes):
    per_class = {f"class_{i:03d}": float(100 * i / n_classes) for i in range(n_classes)}
    path = plot_per_class_accuracy(per_class, tmp_path / "per_class.png")
    assert png_size(path) == per_class_figure_size(n_classes)
    assert per_class_figure_size(50)[1] > per_class_figure_size(3)[1]


def test_per_class_accuracy_refuses_an_empty_dict(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_per_class_accuracy({}, tmp_path / "x.png")


def test_write_eval_figures_writes_what_the_inputs_allow(tmp_path, results):
    per_class = {"red_solid_circle": 80.0, "blue_dots_star": 35.5, "green_stripes_ring": 60.0}
    written = write_eval_figures(results, tmp_path, per_class=per_class)
    assert {p.name for p in written} == {"seen_unseen_curve.png", "per_class_accuracy.png"}
    for path in written:
        png_size(path)
    assert write_eval_figures(results, tmp_path / "curve_only") == [
        tmp_path / "curve_only" / "seen_unseen_curve.png"]


def test_write_eval_figures_logs_a_failing_figure_and_goes_on(tmp_path, results, caplog):
    broken = dict(results, curve={"gamma": [0.0], "seen": [1.0]})  # no "unseen" list
    written = write_eval_figures(broken, tmp_path, per_class={"a": 50.0})
    assert [p.name for p in written] == ["per_class_accuracy.png"]
    assert "could not draw" in caplog.text and "seen_unseen_curve.png" in caplog.text


# --- a trained demo model: does the overlay point at the object? (slow) --------------------

CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column) of the quadrant holding the object


@pytest.fixture(scope="module")
def corner_shares(tmp_path_factory) -> dict:
    """Train the shapes demo model, then measure, for every demo colour and every corner, the share
    of the colour attribute's overlay mass that falls in the quadrant holding a lone object.

    Six of the recipe's 20 epochs (the step after the fourth) suffice: the smallest shares were
    0.88 (fine level) and 0.81 (level mean) at one and two threads, against the tests' 0.5.

    Returns:
        {"colors": names, "shares": (colours, corners, levels) array, "levels": level names}.
    """
    from mgmrn.config import load_config
    from mgmrn.inference.predictor import load
    from mgmrn.training.runner import train

    folder = tmp_path_factory.mktemp("demo")
    train(load_config("demo", [f"output_dir={folder / 'run'}", f"data.root={folder / 'data'}",
                               "train.epochs=6", "train.lr_step=4"]))
    predictor = load(folder / "run" / "checkpoints" / "last.pt")
    colors = [n.removeprefix("color_") for n in predictor.attribute_names if n.startswith("color_")]
    shares = np.array([[_corner_share(predictor, color, corner) for corner in CORNERS]
                       for color in colors])
    levels = ["fine", "middle", "coarse"]
    for color, row in zip(colors, shares, strict=True):
        print(f"{color:>7}: " + "  ".join(
            "/".join(f"{s:.2f}" for s in corner) for corner in row) + "  (fine/middle/coarse "
            "per corner)")
    return {"colors": colors, "shares": shares, "levels": levels}


def corner_image(color: str, corner: tuple[int, int], size: int = 96) -> Image.Image:
    """A lone solid demo-coloured circle in one corner of a plain grey image.

    The circle (diameter 0.45 of the side, 2 px from the edges) stays inside its quadrant after
    the test transform's resize to 8/7 and centre crop.
    """
    from mgmrn.data.synthetic.demo_draw import COLORS, shape_mask

    radius, margin = 0.225 * size, 2
    cy, cx = ((margin + radius) if c == 0 else (size - margin - radius) for c in corner)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    pixels = np.full((size, size, 3), 128, dtype=np.uint8)
    pixels[shape_mask("circle", (xx - cx) / radius, (yy - cy) / radius)] = COLORS[color]
    return Image.fromarray(pixels)


def _corner_share(predictor, color: str, corner: tuple[int, int]) -> list[float]:
    """Per level, the share of ``color_<color>``'s overlay mass in the quadrant ``corner``."""
    cfg = predictor.run.config.data
    normalized = transforms.test_transform(cfg.image_size, cfg.test_resize, inputs=predictor.run.inputs)
    image = normalized(corner_image(color, corner))[None]
    with torch.no_grad():
        out = predictor.run.model(image, predictor.classes.attributes, return_attention=True)
    attribute = predictor.attribute_names.index(f"color_{color}")
    maps = level_attention_maps(out, tuple(image.shape[-2:]))[0, :, attribute]  # (L, H, W)
    h, w = maps.shape[-2:]
    rows = slice(corner[0] * h // 2, (corner[0] + 1) * h // 2)
    cols = slice(corner[1] * w // 2, (corner[1] + 1) * w // 2)
    return maps[:, rows, cols].sum(dim=(-2, -1)).tolist()


@pytest.mark.slow
def test_fine_level_colour_attention_sits_in_the_object_quadrant(corner_shares):
    fine = corner_shares["shares"][..., 0]
    assert (fine > 0.5).all(), f"fine-level shares (colours x corners):\n{fine}"


@pytest.mark.slow
def test_colour_attention_summed_over_levels_sits_in_the_object_quadrant(corner_shares):
    summed = corner_shares["shares"].mean(axis=-1)  # the levels' maps each sum to one
    assert (summed > 0.5).all(), f"level-mean shares (colours x corners):\n{summed}"


# --- training curves ------------------------------------------------------------------------

def test_training_curves_from_metrics_jsonl_with_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "loss": 3.0, "loss_fine": 1.2}\n'
                    '{"epoch": 1, "loss": 2.0, "loss_fine": 0.9, "czsl_acc": 40.0, "gzsl_h": 30.0}\n'
                    '{"epoch": 2, "lo')
    records = read_metrics(path)
    assert [r["epoch"] for r in records] == [0, 1] and records[1]["czsl_acc"] == 40.0
    assert png_size(plot_training_curves(records, tmp_path / "t.png")) == (900, 360)


def test_metrics_with_a_broken_middle_line_name_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "loss": 3.0}\nnot json\n{"epoch": 2, "loss": 1.0}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2"):
        read_metrics(path)
    with pytest.raises(ValueError, match="no metrics records"):
        plot_training_curves([], tmp_path / "t.png")

"""mgmrn compare: redrawn part masks line up with the test images; the comparison end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mgmrn.cli import main
from mgmrn.config import DataConfig, PartsConfig
from mgmrn.data import transforms
from mgmrn.data.synthetic.demo_draw import COLORS
from mgmrn.data.synthetic.parts import ensure_parts, parts_classes, redraw_parts_image
from mgmrn.inference.comparison import RunModel, load_run, part_masks

SMALL = PartsConfig(image_size=64, num_body_colors=3, num_wing_colors=3, num_beak_colors=3,
                    num_unseen=5, images_per_class=3)


def _nearest_colour(pixels: np.ndarray) -> list[str]:
    names = list(COLORS)
    palette = np.array([COLORS[n] for n in names], dtype=float)
    distance = ((pixels[:, None, :].astype(float) - palette[None]) ** 2).sum(-1)
    return [names[i] for i in distance.argmin(1)]


@pytest.fixture(scope="module")
def small_parts(tmp_path_factory) -> Path:
    return ensure_parts(tmp_path_factory.mktemp("parts"), SMALL)


def test_redrawn_images_are_the_written_ones_and_their_masks_cover_each_part(small_parts):
    classes = parts_classes(SMALL)
    for c in (0, 7, 20):
        name = classes.names[c]
        for index in range(SMALL.images_per_class):
            pixels, masks = redraw_parts_image(SMALL, name, index, classes)
            written = np.asarray(Image.open(small_parts / "images" / name / f"{index:04d}.png"))
            np.testing.assert_array_equal(pixels, written)
            for part, colour in zip(("body", "wing", "beak"), classes.combos[c]):
                inside = masks[part] == 1.0  # pixels the part covers wholly
                assert inside.any(), (name, index, part)
                named = _nearest_colour(pixels[inside])
                # tones are jittered and edges blend; most covered pixels read as the colour
                assert named.count(colour) >= 0.8 * len(named), (name, index, part, named)


def test_masks_follow_the_test_transform_of_the_images(small_parts):
    """After the test resize and crop, the beak mask still lies on beak-coloured pixels."""
    data = DataConfig(name="parts", root=str(small_parts), image_size=64, parts=SMALL)
    classes = parts_classes(SMALL)
    paths = [str(small_parts / "images" / classes.names[c] / f"{i:04d}.png")
             for c in (3, 11) for i in range(SMALL.images_per_class)]
    for resize in ("ratio", "crop"):
        data.test_resize = resize
        masks = part_masks(SimpleNamespace(cfg=SimpleNamespace(data=data)), paths)
        transform = transforms.test_transform(64, resize, normalize=False)
        for k, path in enumerate(paths):
            image = transform(torch.from_numpy(np.asarray(Image.open(path)).copy())
                              .permute(2, 0, 1)).permute(1, 2, 0).numpy()
            beak = classes.combos[classes.names.index(Path(path).parent.name)][2]
            inside = masks["beak"][k].numpy() > 0.9
            assert inside.sum() >= 2
            named = _nearest_colour(image[inside])
            assert named.count(beak) >= 0.7 * len(named), (resize, path, named)
            assert 0.0 <= float(masks["beak"][k].min()) and float(masks["beak"][k].max()) <= 1.0


def test_compare_reports_a_trained_mgmrn_and_baseline_side_by_side(tmp_path, small_parts, capsys):
    tiny = [f"data.root={small_parts}", "data.name=parts", "data.image_size=64",
            *(f"data.parts.{k}={v}" for k, v in SMALL.__dict__.items()),
            "data.ways=4", "data.shots=2", "data.num_workers=0", "data.test_batch_size=16",
            "model.backbone=test_resnet", "model.dim=32", "model.attn_dim=16",
            "model.num_parts=2", "train.epochs=1", "train.batches_per_epoch=2",
            "data.verify_images=false", "eval.gamma=0.5"]
    for name in ("mgmrn", "baseline"):
        assert main(["train", "--config", "parts", *tiny, f"model.name={name}",
                     f"output_dir={tmp_path / name}"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "mgmrn"), str(tmp_path / "baseline"),
                 "--out", str(tmp_path / "cmp"), "--figures", "2"]) == 0
    printed = capsys.readouterr().out
    assert "mgmrn (mgmrn)" in printed and "baseline (baseline)" in printed
    assert "beak_color accuracy (unseen)" in printed and "share of attention" in printed
    report = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    mg, bl = report["runs"]
    for entry, folder in ((mg, "mgmrn"), (bl, "baseline")):
        results = json.loads((tmp_path / folder / "results.json").read_text())
        assert entry["czsl_acc"] == results["czsl_acc"]
        assert entry["fixed_gamma"]["gamma"] == 0.5
        assert set(entry["attribute_accuracy"]) == {"body_color", "wing_color", "beak_color"}
        # 5 unseen classes x 3 images: every accuracy is a multiple of 1/15
        for value in entry["attribute_accuracy"].values():
            assert value * 15 / 100 == pytest.approx(round(value * 15 / 100))
    assert "part_attention" not in bl  # the baseline has no attention
    shares = mg["part_attention"]
    assert set(shares) == {"beak", "wing", "body"}
    for row in shares.values():
        assert set(row) == {"fine", "middle", "coarse", "area"}
        assert all(0.0 <= v <= 100.0 for v in row.values())
    # the parts' areas in the drawn scale order
    assert shares["beak"]["area"] < shares["wing"]["area"] < shares["body"]["area"]
    figures = sorted((tmp_path / "cmp" / "attention_mgmrn").glob("*.png"))
    assert len(figures) == 2
    with Image.open(tmp_path / "cmp" / "comparison.png") as png:
        assert png.size == (1200, 500)
    # a run trained on other input statistics is scored with them, not with ImageNet's
    last = tmp_path / "mgmrn" / "checkpoints" / "last.pt"
    saved = torch.load(last, weights_only=True)
    saved["input"] = {**saved["input"], "mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.2]}
    torch.save(saved, last)
    loaded = RunModel(load_run(tmp_path / "mgmrn"))
    assert loaded.inference.precision.inputs["mean"] == [0.25, 0.5, 0.75]

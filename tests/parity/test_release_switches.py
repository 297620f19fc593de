"""Each switch between mgmrn's choice and the published behaviour, checked on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mgmrn.config import ConfigError, load_config
from mgmrn.data import transforms
from mgmrn.data.transforms import denormalize
from mgmrn.evaluation import ausuc
from mgmrn.evaluation.selection import update_selection
from mgmrn.models.decoder import AttributeDecoder
from mgmrn.models.granularity import GranularityModule


def test_published_grouping_is_x_over_k_with_zero_gradient_and_no_region_tokens():
    torch.manual_seed(0)
    level = GranularityModule(6, 8, num_parts=4, grouping="identity")
    x = torch.rand(2, 6, 5, 5)
    grouped = level.grouping.published(x)
    assert torch.equal(grouped, x / 4)
    grouped.sum().backward()
    # in the graph (so SGD's weight decay moves them, as published) with an exactly zero gradient
    assert torch.equal(level.grouping.centres.grad, torch.zeros_like(level.grouping.centres))
    assert torch.equal(level.grouping.smoothing.grad, torch.zeros(4))
    y, regions, assignments = level(x)
    assert regions.shape == (2, 0, 8) and assignments.shape == (2, 0, 5, 5)
    assert level.project_regions is None
    torch.testing.assert_close(y, level.project(x / 4))


def test_published_halving_keeps_the_corners():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    mean = GranularityModule(1, 1, downsample=True, halving="mean").halve(x)
    corners = GranularityModule(1, 1, downsample=True, halving="align_corners").halve(x)
    # 2x2 means of a 4x4 ramp (row step 4, column step 1) against the published samples at
    # positions 0 and 3 of each axis
    assert torch.equal(mean, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert torch.equal(corners, torch.tensor([[[[0.0, 3.0], [12.0, 15.0]]]]))
    assert torch.equal(corners, F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True))


@pytest.mark.parametrize("init, std", [("normal", 1.0), ("scaled", 256 ** -0.5)])
def test_prototype_initialisation(init, std):
    torch.manual_seed(0)
    decoder = AttributeDecoder(400, 10, 256, 32, prototype_init=init)
    assert decoder.prototypes.std().item() == pytest.approx(std, rel=0.02)


def test_published_test_resize_crops_the_crop_size_from_the_shorter_side():
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, 180:] = 255  # a white band at the right edge
    image = Image.fromarray(pixels)
    # crop: resized to 64 x 128, the centre 64 x 64 keeps columns 32-95 of 128, all black
    assert denormalize(transforms.test_transform(64, "crop")(image)).max() < 0.05
    # ratio: resized to 73 x 146 and cropped alike; the band (columns 131-145) stays outside too,
    # so compare the scale instead: a 20-px-wide bar in the middle
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, 90:110] = 255
    bar = Image.fromarray(pixels)
    widths = [(denormalize(transforms.test_transform(64, mode)(bar))[0, 32] > 0.5).sum().item()
              for mode in ("crop", "ratio")]
    assert widths == [pytest.approx(20 * 64 / 100, abs=1), pytest.approx(20 * 73 / 100, abs=1)]


def test_published_ausuc_order_on_ties():
    # sweep order 0, -step, +step: U ties at 0.5 between the first two points
    seen, unseen = np.array([0.6, 0.8, 0.2]), np.array([0.5, 0.5, 0.9])
    # curve order: (0.5, 0.8), (0.5, 0.6), (0.9, 0.2): area (0.6 + 0.2) / 2 * 0.4 = 0.16
    assert ausuc(seen, unseen) == pytest.approx(0.16)
    # published: stable by U keeps (0.5, 0.6), (0.5, 0.8), (0.9, 0.2): (0.8 + 0.2) / 2 * 0.4 = 0.2
    assert ausuc(seen, unseen, order="release") == pytest.approx(0.2)


def test_best_over_epochs_each_figure_on_its_own_first_best_wins():
    epochs = [dict(czsl_acc=50.0, gzsl_h=30.0, gzsl_seen=40.0, gzsl_unseen=24.0, gamma=0.1, ausuc=20.0),
              dict(czsl_acc=55.0, gzsl_h=29.0, gzsl_seen=60.0, gzsl_unseen=19.0, gamma=0.2, ausuc=25.0),
              dict(czsl_acc=55.0, gzsl_h=30.0, gzsl_seen=50.0, gzsl_unseen=21.4, gamma=0.3, ausuc=22.0)]
    selection = None
    for epoch, results in enumerate(epochs):
        selection = update_selection(selection, results, epoch)
    assert selection == dict(czsl_acc=55.0, czsl_epoch=1, gzsl_h=30.0, gzsl_seen=40.0,
                             gzsl_unseen=24.0, gamma=0.1, gzsl_epoch=0, ausuc=25.0, ausuc_epoch=1)


def test_recipes_build_on_a_base(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: cub-release\ntrain:\n  epochs: 3\n")
    cfg = load_config(tmp_path / "mine.yaml")
    assert (cfg.train.epochs, cfg.train.schedule, cfg.train.lr, cfg.data.name) == (
        3, "alternating", 5e-4, "cub")
    assert cfg.model.grouping == "identity" and cfg.output_dir == "runs/cub-release"
    plain = load_config("cub")
    assert (plain.model.grouping, plain.train.schedule) == ("regions", "fused")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="refers back to itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere\n")
    with pytest.raises(ConfigError, match="'nowhere' not found"):
        load_config(tmp_path / "c.yaml")

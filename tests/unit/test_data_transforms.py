"""Train and test transforms: sizes, crops, flips and ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mgmrn.data import transforms
from mgmrn.data.datasets import decode_rgb, load_rgb, to_rgb
from mgmrn.data.transforms import IMAGENET_MEAN, denormalize, resize_size, train_transform
from mgmrn.data.verify import image_error


def halves(width: int = 200, height: int = 100) -> Image.Image:
    """Left half black, right half white."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, width // 2:] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("size,resized", [(448, 512), (64, 73), (224, 256)])
def test_resize_is_eight_sevenths(size, resized):
    assert resize_size(size) == resized


def test_mean_colour_normalises_to_zero():
    mean = tuple(round(255 * m) for m in IMAGENET_MEAN)
    out = transforms.test_transform(32)(Image.new("RGB", (50, 40), mean))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.abs().max() < 0.02


def test_test_transform_is_a_centre_crop():
    out = transforms.test_transform(64)(halves())  # resized to 73 x 146, centre 64 x 64 kept
    image = denormalize(out)
    assert image[:, :, :30].max() < 0.05 and image[:, :, 34:].min() > 0.95
    assert torch.equal(out, transforms.test_transform(64)(halves()))


def test_train_transform_crops_and_flips_at_random():
    torch.manual_seed(0)
    transform = train_transform(32)
    left_dark = []
    for _ in range(40):
        image = denormalize(transform(halves(40, 40)))  # 37 x 37 after resize: small shifts
        assert image.shape == (3, 32, 32)
        left_dark.append(image[:, :, 0].mean().item() < 0.5)
    assert 5 < sum(left_dark) < 35  # flipped about half the time
    torch.manual_seed(0)
    again = [denormalize(transform(halves(40, 40)))[:, :, 0].mean().item() < 0.5
             for _ in range(40)]
    assert again == left_dark


def test_train_transform_without_flip_keeps_left_and_right():
    torch.manual_seed(0)
    transform = train_transform(32, flip=False)
    for _ in range(40):  # the random crop still shifts the image, never mirrors it
        image = denormalize(transform(halves(40, 40)))
        assert image[:, :, 0].mean() < 0.05 and image[:, :, -1].mean() > 0.95


def test_grey_and_alpha_images_become_rgb(tmp_path):
    Image.new("L", (20, 20), 128).save(tmp_path / "g.png")
    Image.new("RGBA", (20, 20), (10, 20, 30, 0)).save(tmp_path / "a.png")
    for name in ("g.png", "a.png"):
        assert train_transform(32)(load_rgb(str(tmp_path / name))).shape == (3, 32, 32)


def test_high_depth_images_are_scaled_not_clipped(tmp_path):
    """A 16-bit grey PNG is read as its 8-bit equivalent by training, data check and predict
    (the one conversion, to_rgb), not clipped to white."""
    grey8 = np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # PIL's 16-bit grey
    expected = np.repeat(grey8[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(np.asarray(load_rgb(str(tmp_path / "deep.png"))), expected)
    np.testing.assert_array_equal(decode_rgb(str(tmp_path / "deep.png")).permute(1, 2, 0).numpy(),
                                  expected)
    assert image_error(str(tmp_path / "deep.png")) is None
    # 32-bit integer and float images: 16-bit range, 0..1
    as_int = Image.fromarray(grey8.astype(np.int32) * 257)
    as_float = Image.fromarray(grey8.astype(np.float32) / 255)
    assert (as_int.mode, as_float.mode) == ("I", "F")
    for image in (as_int, as_float):
        np.testing.assert_array_equal(np.asarray(to_rgb(image)), expected)

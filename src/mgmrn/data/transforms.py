"""Train and test image transforms: resize the shorter side, then crop.

Training resizes to 8/7 of the crop (512 for the paper's 448) and crops at random, as published.
The published test transform resizes the shorter side to the crop size itself and takes the centre
crop (``test_resize="crop"``); by default the test images are resized like the training images,
to 8/7 of the crop, before the centre crop (``test_resize="ratio"``), so that objects have the same
scale in training and testing.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_size(size: int) -> int:
    """Shorter side before cropping: round(size * 8 / 7), e.g. 448 -> 512."""
    return round(size * 8 / 7)


def _to_normalized() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(size: int) -> v2.Compose:
    """PIL image -> (3, size, size) float tensor: resize, random crop, random flip, normalise.

    Args:
        size: output side in pixels.
    """
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize_size(size), antialias=True),
        v2.RandomCrop(size),
        v2.RandomHorizontalFlip(),
        *_to_normalized(),
    ])


TEST_RESIZES = ("ratio", "crop")


def test_transform(size: int, resize: str = "ratio") -> v2.Compose:
    """PIL image -> (3, size, size) float tensor: resize, centre crop, normalise.

    Args:
        size: output side in pixels.
        resize: ``ratio`` (shorter side to ``resize_size(size)``) or ``crop`` (to ``size``, as
            published).
    """
    if resize not in TEST_RESIZES:
        raise ValueError(f"resize must be one of {TEST_RESIZES}, got {resize!r}")
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize_size(size) if resize == "ratio" else size, antialias=True),
        v2.CenterCrop(size),
        *_to_normalized(),
    ])


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation, for display.

    Args:
        images: (..., 3, H, W) normalised images.

    Returns:
        (..., 3, H, W) images in [0, 1].
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * std + mean).clamp(0, 1)

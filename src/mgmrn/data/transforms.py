"""Train and test image transforms: resize the shorter side, then crop.

Training resizes to 8/7 of the crop (512 for the paper's 448) and crops at random, as published.
The published test transform resizes the shorter side to the crop size itself and takes the centre
crop (``test_resize="crop"``); by default the test images are resized like the training images,
to 8/7 of the crop, before the centre crop (``test_resize="ratio"``), so that objects have the same
scale in training and testing.

With ``normalize=False`` the transforms stop at the cropped uint8 image: the DataLoader then moves
a quarter of the bytes, and :func:`normalize_images` does the float conversion and the
normalisation on the device, with the same operations, so the network's inputs are unchanged.

The statistics and the resize interpolation are those of the backbone's pretrained weights (an
``inputs`` dict: ``mean``, ``std``, ``interpolation``, saved in every checkpoint); without one,
ImageNet's statistics and bilinear resizing, what the published ResNet-101 was trained with.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from mgmrn.choices import TestResize, check_choice

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_INPUTS = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                   "interpolation": "bilinear"}


def input_stats(inputs: dict | None) -> tuple[list[float], list[float]]:
    """(mean, std) of an ``inputs`` dict; ImageNet's for None."""
    inputs = inputs or IMAGENET_INPUTS
    return [float(v) for v in inputs["mean"]], [float(v) for v in inputs["std"]]


def _interpolation(inputs: dict | None) -> v2.InterpolationMode:
    name = (inputs or IMAGENET_INPUTS).get("interpolation", "bilinear")
    try:
        return v2.InterpolationMode(name)
    except ValueError:  # a timm name torchvision does not have (e.g. "random"): the default
        return v2.InterpolationMode.BILINEAR


def resize_size(size: int) -> int:
    """Shorter side before cropping: round(size * 8 / 7), e.g. 448 -> 512."""
    return round(size * 8 / 7)


def _to_normalized(normalize: bool = True, inputs: dict | None = None) -> list:
    if not normalize:
        return []
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(*input_stats(inputs))]


def normalize_images(images: torch.Tensor, inputs: dict | None = None) -> torch.Tensor:
    """The float conversion and normalisation that ``normalize=False`` leaves out, for a batch.

    Args:
        images: (..., 3, H, W) uint8 images, on any device.
        inputs: the backbone's ``mean`` and ``std``; None: ImageNet's.

    Returns:
        (..., 3, H, W) float32, equal to what the transforms with ``normalize=True`` give.
    """
    floats = v2.functional.to_dtype(images, torch.float32, scale=True)
    return v2.functional.normalize(floats, *input_stats(inputs))


def train_transform(size: int, normalize: bool = True, inputs: dict | None = None,
                    flip: bool = True) -> v2.Compose:
    """Image -> (3, size, size) tensor: resize, random crop, random flip, normalise.

    Args:
        size: output side in pixels.
        normalize: float32 normalised output; False stops at uint8 (see
            :func:`normalize_images`).
        inputs: the backbone's ``mean``, ``std`` and ``interpolation``; None: ImageNet's,
            bilinear.
        flip: mirror half the images left to right, as published; False where the attributes
            tell left from right (a digit's segments, "left wing"): a mirrored 2 lights a 5's
            segments.

    The input is a PIL image or a (3, H, W) uint8 tensor.
    """
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize_size(size), interpolation=_interpolation(inputs), antialias=True),
        v2.RandomCrop(size),
        *([v2.RandomHorizontalFlip()] if flip else []),
        *_to_normalized(normalize, inputs),
    ])


def test_transform(size: int, resize: TestResize = "ratio", normalize: bool = True,
                   inputs: dict | None = None) -> v2.Compose:
    """Image -> (3, size, size) tensor: resize, centre crop, normalise.

    Args:
        size: output side in pixels.
        resize: ``ratio`` (shorter side to ``resize_size(size)``) or ``crop`` (to ``size``, as
            published).
        normalize, inputs: as for :func:`train_transform`.
    """
    check_choice("resize", resize, TestResize)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize_size(size) if resize == "ratio" else size,
                  interpolation=_interpolation(inputs), antialias=True),
        v2.CenterCrop(size),
        *_to_normalized(normalize, inputs),
    ])


def denormalize(images: torch.Tensor, inputs: dict | None = None) -> torch.Tensor:
    """Undo the normalisation, for display.

    Args:
        images: (..., 3, H, W) normalised images.
        inputs: the ``mean`` and ``std`` they were normalised with; None: ImageNet's.

    Returns:
        (..., 3, H, W) images in [0, 1].
    """
    mean, std = (torch.tensor(v, dtype=images.dtype, device=images.device).view(3, 1, 1)
                 for v in input_stats(inputs))
    return (images * std + mean).clamp(0, 1)

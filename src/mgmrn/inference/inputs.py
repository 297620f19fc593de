"""Inputs of prediction: image files, folders, PIL images and tensors, read batch by batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from mgmrn.data.datasets import IMAGE_SUFFIXES, check_image_size, to_rgb
from mgmrn.data.errors import DataError
from mgmrn.errors import UsageError

ImageInput = str | Path | Image.Image


def image_batches(images, transform, batch_size: int) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """(B, 3, H, W) network inputs and image names, ``batch_size`` at a time.

    Files, PIL images and uint8 tensors go through ``transform`` (the test transform, to uint8:
    they are normalised on the device, see :class:`~mgmrn.inference.scoring.Inference`); a float tensor
    is taken as transformed and normalised already. Files are read batch by batch, so a long
    list of images never sits in memory at once.
    """
    if isinstance(images, torch.Tensor):
        tensor = images.unsqueeze(0) if images.dim() == 3 else images
        if tensor.dim() != 4 or tensor.shape[1] != 3:
            raise UsageError(f"an image tensor must be (B, 3, H, W) or (3, H, W), got "
                             f"{tuple(images.shape)}")
        for start in range(0, len(tensor), batch_size):
            chunk = tensor[start:start + batch_size]
            if chunk.dtype == torch.uint8:  # raw pixels: resize and crop first
                chunk = torch.stack([transform(image) for image in chunk])
            else:
                chunk = chunk.float()
            yield chunk, [f"image_{start + i}" for i in range(len(chunk))]
        return
    items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        pictures, names = zip(*(read_image(item, start + i) for i, item in enumerate(chunk)),
                                strict=True)
        yield torch.stack([transform(p) for p in pictures]), list(names)


def read_image(item: ImageInput, position: int) -> tuple[Image.Image, str]:
    """An RGB image and its name (the path, the PIL file name, or ``image_<position>``)."""
    if isinstance(item, Image.Image):
        name = getattr(item, "filename", "") or f"image_{position}"
        check_image_size(item, name)
        return to_rgb(item), name
    path = Path(item)
    if not path.is_file():
        raise FileNotFoundError(f"image '{path}' does not exist")
    try:
        with Image.open(path) as image:
            check_image_size(image, str(path))  # from the header, before the pixels are decoded
            return to_rgb(image), str(path)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
        raise DataError(f"cannot read image '{path}' ({type(err).__name__}: {err})") from err


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from files and folders; a folder gives its image files, sorted by name.

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no image file.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"folder '{path}' holds no image files "
                                        f"({', '.join(s[1:] for s in IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"image or folder '{path}' does not exist")
    return paths

"""Image dataset over a list of files, with a policy for images that fail to decode mid-run."""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from mgmrn.data.errors import DataError

try:  # deprecated in torchvision 0.29 in favour of TorchCodec; PIL decodes where it is gone
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - a torchvision without image decoders
    decode_jpeg = None
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of "
                        "TorchVision are deprecated", category=DeprecationWarning)

log = logging.getLogger(__name__)

# image files read everywhere: custom datasets, prediction inputs, the explorer page
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# Images are refused by their header's size, before any decoding, when a side is longer than
# MAX_IMAGE_SIDE pixels or the long side more than MAX_ASPECT_RATIO times the short one: the
# test transform scales the short side up to about the network's input, so a 40,000 x 1 strip
# would become a 20-million-pixel-wide picture, and a 1 MB PNG can hold gigapixels. No photo of
# the benchmarks comes near either limit (WebP's own limit is 16,383 px).
MAX_IMAGE_SIDE = 16384
MAX_ASPECT_RATIO = 20


def check_image_size(image: Image.Image, name: str) -> None:
    """Refuse ``image`` (opened, not decoded: PIL reads only the header then) when a side or the
    aspect ratio is over :data:`MAX_IMAGE_SIDE` or :data:`MAX_ASPECT_RATIO`.

    Raises:
        DataError: one line naming the image, its size and the limit it breaks.
    """
    width, height = image.size
    long, short = max(width, height), min(width, height)
    if long > MAX_IMAGE_SIDE:
        limit = f"sides of at most {MAX_IMAGE_SIDE} pixels are read"
    elif long > MAX_ASPECT_RATIO * max(short, 1):
        limit = f"images at most {MAX_ASPECT_RATIO} times longer than wide are read"
    else:
        return
    raise DataError(f"image '{name}' is {width} x {height} pixels; {limit} (checked before "
                    f"decoding); resize or crop it")


# PIL modes of more than 8 bits per sample, which ``convert("RGB")`` clips instead of scaling: a
# 16-bit PNG would turn white
HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of ``image``: grey and palette images expanded, alpha dropped, and 16-bit,
    32-bit and float images scaled to 8 bits (16-bit range; for float, 0..1, or 0..255 or
    0..65535 when its values exceed the smaller range) rather than clipped. The one conversion
    of training, ``data check``, ``predict`` and ``serve``."""
    if image.mode in HIGH_DEPTH:
        pixels = np.asarray(image, dtype=np.float64)
        peak = float(pixels.max(initial=0.0))
        # the range a float image was written in: 0..1, else 0..255 or 0..65535 (a float TIFF
        # holding 8-bit values must not be stretched to its brightest pixel)
        ranges = (1.0, 255.0, 65535.0) if image.mode == "F" else (65535.0,)
        top = next((r for r in ranges if peak <= r), peak)  # wider than any: scale to its peak
        image = Image.fromarray(np.rint(np.clip(pixels / top, 0.0, 1.0) * 255).astype(np.uint8))
    return image.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """Decode an image file to RGB with :func:`to_rgb`, refusing first an image of a size
    :func:`check_image_size` refuses."""
    with Image.open(path) as im:
        check_image_size(im, path)
        return to_rgb(im)


JPEG_MAGIC = b"\xff\xd8\xff"


def decode_rgb(path: str) -> torch.Tensor:
    """Decode an image file to a (3, H, W) uint8 RGB tensor: the pixels of :func:`load_rgb`.

    JPEG files go through torchvision's libjpeg-turbo decoder straight into a tensor, which gives
    the same pixels as PIL (grey and CMYK files too; tested) without the PIL image and its copy;
    other formats go through PIL.
    """
    with open(path, "rb") as file:
        data = file.read()
    if decode_jpeg is None or not data.startswith(JPEG_MAGIC):
        return pil_to_tensor(load_rgb(path))
    with Image.open(io.BytesIO(data)) as header:  # reads the header alone
        check_image_size(header, path)
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                           mode=ImageReadMode.RGB)
    except RuntimeError as err:
        # "decode_jpeg, <source file>:<line>, <reason>": keep the reason
        raise OSError(re.sub(r"^\w+, \S+:\d+, ", "", str(err))) from err


class ImageDataset(Dataset):
    """Items ``(image, label)``: a transformed image tensor (3, H, W) and a plain int label.

    An image that fails to decode raises a :class:`DataError` naming the file; with
    ``skip_bad_images`` it is replaced, with a warning, by the next readable image of the same
    class, so one broken file cannot stop a run from inside a DataLoader worker.

    Args:
        paths: N image files.
        labels: (N,) int labels.
        transform: decoded image -> (3, H, W) tensor (uint8, or float32 normalised).
        skip_bad_images: substitute instead of raising.
        decode: file -> image: :func:`decode_rgb` ((3, H, W) uint8 tensor) or :func:`load_rgb`
            (PIL image); the transforms take either.
    """

    def __init__(self, paths: list[str], labels: np.ndarray, transform: Callable,
                 skip_bad_images: bool = False, decode: Callable = decode_rgb):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.decode = decode
        self._bad: set[int] = set()  # per process: each worker learns on its own

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self._load(index)
        return self.transform(image), int(self.labels[index])

    def _load(self, index: int):
        try:
            return self.decode(self.paths[index])
        except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
            reason = f"{type(err).__name__}: {err}"
            if not self.skip_bad_images:
                raise DataError(f"cannot read image {self.paths[index]} ({reason}); replace it, "
                                f"or set data.skip_bad_images=true to substitute another "
                                f"image") from err
            self._bad.add(index)
            return self._substitute(index, reason)

    def _substitute(self, index: int, reason: str):
        """The next readable image of the same class after ``index``, in file order, cyclically."""
        same = np.flatnonzero(self.labels == self.labels[index])
        start = int(np.searchsorted(same, index))
        for other in np.roll(same, -start - 1):
            if int(other) in self._bad:
                continue
            try:
                image = self.decode(self.paths[other])
            except Exception:  # noqa: BLE001
                self._bad.add(int(other))
                continue
            log.warning("cannot read image %s (%s); using %s of the same class instead",
                        self.paths[index], reason, self.paths[other])
            return image
        raise DataError(f"no image of class {int(self.labels[index])} can be read (last tried "
                        f"{self.paths[index]}: {reason})")

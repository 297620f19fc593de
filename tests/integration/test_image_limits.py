"""Images too long or too narrow are refused from their header, before their pixels are decoded."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFile

from mgmrn.cli import main
from mgmrn.data.datasets import MAX_ASPECT_RATIO, MAX_IMAGE_SIDE, decode_rgb, load_rgb
from mgmrn.data.errors import DataError
from mgmrn.data.verify import find_bad_images
from mgmrn.serve.app import MAX_PIXELS, ApiError, Explorer

from ..helpers import write_checkpoint

# (width, height, format, the limit broken)
REFUSED = {
    "strip": (40_000, 1, "PNG", f"sides of at most {MAX_IMAGE_SIDE} pixels are read"),
    "tall": (1, MAX_IMAGE_SIDE + 1, "PNG", f"sides of at most {MAX_IMAGE_SIDE} pixels are read"),
    "narrow": (50 * MAX_ASPECT_RATIO + 1, 50, "PNG",
               f"images at most {MAX_ASPECT_RATIO} times longer than wide are read"),
    "narrow-jpeg": (40, 40 * MAX_ASPECT_RATIO + 8, "JPEG",
                    f"images at most {MAX_ASPECT_RATIO} times longer than wide are read"),
}


def encoded(width: int, height: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("L" if fmt == "PNG" else "RGB", (width, height), 90).save(buffer, fmt)
    return buffer.getvalue()


def expected(name: str, path) -> str:
    width, height, _, limit = REFUSED[name]
    return (f"image '{path}' is {width} x {height} pixels; {limit} (checked before decoding); "
            f"resize or crop it")


@pytest.fixture
def never_decoded(monkeypatch):
    """Decoding pixels fails the test: the refusal must come from the header alone."""
    def decode(self, *args, **kwargs):
        raise AssertionError(f"decoded the pixels of a {self.size} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    monkeypatch.setattr(Image.Image, "load", decode)


@pytest.fixture
def images(tmp_path):
    paths = {}
    for name, (width, height, fmt, _) in REFUSED.items():
        paths[name] = tmp_path / f"{name}.{fmt.lower()}"
        paths[name].write_bytes(encoded(width, height, fmt))
    return paths


def test_predict_refuses_them_in_one_line(tmp_path, images, never_decoded, capsys):
    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    for name, path in images.items():
        assert main(["predict", "--checkpoint", str(checkpoint), str(path)]) == 2
        assert capsys.readouterr().err.strip() == f"mgmrn predict: error: {expected(name, path)}"


def test_the_explorer_refuses_them_with_413(images, never_decoded):
    explorer = object.__new__(Explorer)  # the upload's checks come before the network is used
    explorer.max_pixels = MAX_PIXELS
    for name, path in images.items():
        with pytest.raises(ApiError) as err:
            explorer.upload(path.read_bytes(), path.name)
        assert err.value.status == 413 and str(err.value) == expected(name, path.name)


def test_training_and_data_check_refuse_them(images, never_decoded):
    for name, path in images.items():
        for decode in (load_rgb, decode_rgb):
            with pytest.raises(DataError) as err:
                decode(str(path))
            assert str(err.value) == expected(name, path)
    bad = find_bad_images([str(p) for p in images.values()], threads=2)
    assert bad == {str(path): f"DataError: {expected(name, path)}"
                   for name, path in images.items()}


def test_ordinary_shapes_at_the_limits_are_read(tmp_path):
    for width, height in ((MAX_ASPECT_RATIO * 10, 10), (12, 12 * MAX_ASPECT_RATIO)):
        path = tmp_path / f"{width}x{height}.png"
        path.write_bytes(encoded(width, height, "PNG"))
        assert load_rgb(str(path)).size == (width, height)
        assert tuple(decode_rgb(str(path)).shape) == (3, height, width)

"""The uint8 input path: JPEG decoding to tensors, uint8 transforms, normalisation on the device,
and the loader's worker defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import pil_to_tensor

from mgmrn.config import ConfigError, load_config
from mgmrn.data import DataError, ImageDataset, transforms
from mgmrn.data.datasets import decode_rgb, load_rgb
from mgmrn.data.loaders import AUTO_WORKERS_MAX, resolve_num_workers
from mgmrn.data.transforms import normalize_images, train_transform
from mgmrn.precision import Precision


def photo(height: int = 75, width: int = 100, seed: int = 0) -> Image.Image:
    """Smooth colours plus noise: a JPEG of it has real chroma and texture to decode."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / width
    base = np.stack([np.sin(4 * x + c) * np.cos(3 * y - c) for c in range(3)], -1) * 90 + 128
    return Image.fromarray((base + rng.normal(0, 20, base.shape)).clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("mode,subsampling", [("RGB", 0), ("RGB", 2), ("L", 0), ("CMYK", 2)])
def test_jpeg_decodes_to_the_pixels_of_pil(tmp_path, mode, subsampling):
    path = tmp_path / "a.jpg"
    photo().convert(mode).save(path, quality=90, subsampling=subsampling)
    decoded = decode_rgb(str(path))
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 75, 100)
    assert torch.equal(decoded, pil_to_tensor(load_rgb(str(path))))


def test_other_formats_go_through_pil(tmp_path):
    photo().save(tmp_path / "a.png")
    Image.new("RGBA", (20, 10), (10, 20, 30, 0)).save(tmp_path / "b.webp")
    for name in ("a.png", "b.webp"):
        assert torch.equal(decode_rgb(str(tmp_path / name)),
                           pil_to_tensor(load_rgb(str(tmp_path / name))))


def test_truncated_jpeg_is_refused_with_the_file_named(tmp_path):
    path = tmp_path / "cut.jpg"
    photo(300, 400).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(OSError, match="truncated") as err:
        decode_rgb(str(path))
    assert "decode_jpeg.cpp" not in str(err.value)
    dataset = ImageDataset([str(path)], np.zeros(1, dtype=np.int64),
                           transforms.test_transform(32, "ratio", False))
    with pytest.raises(DataError, match="cut.jpg"):
        dataset[0]


def write_photos(folder, n: int = 6) -> list[str]:
    paths = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        photo(60 + 7 * i, 90 - 5 * i, seed=i).save(path, quality=85)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("kind", ["train", "test_ratio", "test_crop"])
def test_uint8_path_gives_the_network_the_inputs_of_the_float_path(tmp_path, kind):
    """Old path: PIL decode, float transform per image. New: tensor decode, uint8 transform,
    batch normalised afterwards. Resizing ran on uint8 tensors in both, so they agree exactly."""
    def make(normalize):
        if kind == "train":
            return train_transform(48, normalize)
        return transforms.test_transform(48, kind.split("_")[1], normalize)

    paths = write_photos(tmp_path)
    labels = np.arange(len(paths))
    old = ImageDataset(paths, labels, make(True), decode=load_rgb)
    new = ImageDataset(paths, labels, make(False))
    torch.manual_seed(3)
    old_batch, old_labels = next(iter(DataLoader(old, batch_size=len(paths))))
    torch.manual_seed(3)
    new_batch, new_labels = next(iter(DataLoader(new, batch_size=len(paths))))
    assert new_batch.dtype == torch.uint8 and old_batch.dtype == torch.float32
    assert torch.equal(new_labels, old_labels)
    assert torch.equal(normalize_images(new_batch), old_batch)
    assert torch.equal(Precision().prepare(new_batch, torch.device("cpu")), old_batch)


def test_normalize_images_is_the_imagenet_normalisation():
    images = torch.tensor([0, 124, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = ((torch.tensor([0.0, 124.0, 255.0]) / 255 - mean) / std).view(1, 3, 1, 1)
    out = normalize_images(images)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected.expand(2, 3, 2, 2), atol=1e-6)


def test_prepare_leaves_float_batches_alone_and_lays_out_channels_last():
    floats = torch.randn(2, 3, 4, 4)
    assert torch.equal(Precision().prepare(floats, torch.device("cpu")), floats)
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = Precision(channels_last=True).prepare(images, torch.device("cpu"))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, normalize_images(images))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_uint8_batch_normalised_on_the_gpu_equals_the_cpu():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8).pin_memory()
    out = Precision().prepare(images, torch.device("cuda"))
    assert out.is_cuda
    assert torch.allclose(out.cpu(), normalize_images(images), atol=1e-6)


@pytest.mark.parametrize("cores,local,expected", [
    (1, 1, 0), (2, 1, 1), (16, 1, 15), (64, 1, AUTO_WORKERS_MAX), (16, 4, 3), (3, 4, 0),
])
def test_auto_workers_share_the_cores_among_local_processes(cores, local, expected):
    assert resolve_num_workers("auto", cores=cores, local_processes=local) == expected


def test_auto_workers_read_torchrun_local_world_size(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_num_workers("auto", cores=16) == 7
    assert resolve_num_workers(5, cores=16) == 5


def test_num_workers_config_takes_auto_or_a_count():
    assert load_config("cub").data.num_workers == "auto"
    assert load_config("demo", ["data.num_workers=3"]).data.num_workers == 3
    for bad in ("many", "-1"):
        with pytest.raises(ConfigError, match="data.num_workers.*auto or a count"):
            load_config("demo", [f"data.num_workers={bad}"])

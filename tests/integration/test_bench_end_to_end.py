"""benchmarks/end_to_end.py on a handful of small images: the JPEG tree, each measurement, the
summary's arithmetic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from mgmrn.config import DataConfig
from mgmrn.data import build_data

from ..helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/end_to_end.py")


@pytest.fixture(scope="module")
def tree(bench, tmp_path_factory):
    return bench.ensure_jpeg_tree(tmp_path_factory.mktemp("jpegs"), classes=5, per_class=4,
                                  long_side=96)


def test_jpeg_tree_is_a_custom_dataset_written_once(bench, tree):
    files = bench.image_files(tree)
    assert len(files) == 20
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and max(im.size) == 96 and 53 <= min(im.size) <= 96
    data = build_data(DataConfig(name="custom", root=str(tree), image_size=32, num_workers=0))
    assert len(data.seen_classes) == 4 and len(data.unseen_classes) == 1
    stamp = [Path(f).stat().st_mtime_ns for f in files]
    assert bench.ensure_jpeg_tree(tree.parent, classes=5, per_class=4, long_side=96) == tree
    assert [Path(f).stat().st_mtime_ns for f in files] == stamp


def test_photos_compress_like_photographs(bench):
    """Noise and texture make JPEG sizes realistic: a flat image would be a few KB."""
    import io

    import numpy as np
    buffer = io.BytesIO()
    bench.draw_photo(np.random.default_rng(0), 500, 375).save(buffer, "JPEG", quality=90)
    assert 40_000 < len(buffer.getvalue()) < 200_000


def test_loader_and_component_measurements(bench, tree):
    files = bench.image_files(tree)
    rows = bench.measure_components(files[:2], 32)
    assert {(r["stage"], r["path"]) for r in rows} >= {("decode", "pil_float"),
                                                       ("train_transform", "tensor_uint8")}
    assert all(r["ms_per_image"] > 0 for r in rows)
    old = bench.measure_loader(files, "pil_float", "train", 32, 0, batch_size=2, batches=2)
    new = bench.measure_loader(files, "tensor_uint8", "test", 32, 0, batch_size=2, batches=2)
    assert old["batch_dtype"] == "torch.float32" and new["batch_dtype"] == "torch.uint8"
    assert new["batch_bytes"] * 4 == old["batch_bytes"] == 2 * 3 * 32 * 32 * 4
    assert old["images_per_s"] > 0 and new["images_per_s"] > 0


def test_main_runs_every_measurement(bench, tree, capsys):
    rows = bench.main(["--device", "cpu", "--cache", str(tree.parent), "--classes", "5",
                       "--per-class", "4", "--long-side", "96", "--image-size", "32",
                       "--workers", "0", "--batch-size", "2", "--loader-batches", "1",
                       "--component-images", "2", "--backbone", "test_resnet",
                       "--train-size", "32", "--train-steps", "1"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == json.loads(json.dumps(rows))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("loader") == 4 and kinds.count("train") == 2 and kinds[-1] == "summary"
    for row in rows:
        if row["kind"] == "train":
            assert row["steps"] == 1 and row["batch_size"] == 8  # 4 seen classes x 2 shots
            assert 0 <= row["data_wait_fraction"] <= 1 and row["images_per_s"] > 0
    assert rows[0]["folder"] == str(tree)  # the cached tree was used


def test_summary_counts_workers_from_the_one_worker_rates(bench):
    args = bench.parse_args(["--device", "cpu", "--target-rate", "100",
                             "--target-eval-rate", "250"])
    loaders = [{"kind": "loader", "workers": 1, "transform": "train", "path": "tensor_uint8",
                "images_per_s": 30.0},
               {"kind": "loader", "workers": 1, "transform": "test", "path": "tensor_uint8",
                "images_per_s": 100.0},
               {"kind": "loader", "workers": 2, "transform": "train", "path": "pil_float",
                "images_per_s": 55.0}]
    summary = bench.summary(loaders, args)
    assert summary["workers_needed_train_tensor_uint8"] == math.ceil(100 / 30) == 4
    assert summary["workers_needed_test_tensor_uint8"] == 3
    assert "workers_needed_train_pil_float" not in summary  # no one-worker figure for it

"""Helpers shared by the test files: paths, tiny networks and checkpoints, data folders.

Test files import from here (never from one another); ``conftest.py`` re-exports the path helpers.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from mgmrn.config import Config
from mgmrn.models import Backbone, MgMRN, build_model
from mgmrn.models.granularity import GroupNorm

from .xlsa17_fixture import AUTHOR_PREFIX, cell

# --- paths and markers ---------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]

SHARED_DATA = REPO.parent / "shared" / "data"

# torch.compile generates C++ on the CPU
needs_cxx = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on the CPU needs a C++ compiler (apt-get install g++)")


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the real data files of ../shared/data are needed")
    return path


def load_script(relative: str):
    """A script of the repository (``benchmarks/x.py``, ``scripts/y.py``) imported by its path."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their defining module up
    spec.loader.exec_module(module)
    return module


# --- tiny networks -------------------------------------------------------------------------

def tiny_net(num_attributes: int = 6, word_dim: int = 10, **kwargs) -> MgMRN:
    """An untrained MgMRN on timm's tiny test ResNet, seeded."""
    torch.manual_seed(0)
    backbone = Backbone("test_resnet", pretrained=False)
    return MgMRN(backbone, torch.randn(num_attributes, word_dim), dim=32, attn_dim=16,
                 num_parts=3, **kwargs)


def affine_group_norm(groups: int = 4, channels: int = 16,
                      seed: int = 0) -> tuple[GroupNorm, torch.nn.GroupNorm]:
    """Our GroupNorm and torch's, with the same random affine parameters."""
    torch.manual_seed(seed)
    ours, reference = GroupNorm(groups, channels), torch.nn.GroupNorm(groups, channels)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0)
        ours.bias.uniform_(-1.0, 1.0)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


# --- the main job --------------------------------------------------------------------------

def tiny(tmp_path, run: str, *extra: str) -> list[str]:
    """Overrides of a two-epoch run on a tiny demo set drawn under ``tmp_path``."""
    return [
        # without --config, data.name=demo runs demo-pretrained (the shipped backbone at the
        # heads' rate), made tiny here: the set, the network and the budget
        f"output_dir={tmp_path / run}", "data.name=demo", "model.finetune=true",
        f"data.root={tmp_path / 'demo'}",
        "data.demo.image_size=32", "data.image_size=32", "data.demo.num_shapes=3",
        "data.demo.num_colors=3", "data.demo.num_patterns=2", "data.demo.num_unseen=4",
        "data.demo.images_per_class=6", "data.ways=4", "data.shots=2", "data.num_workers=0",
        "data.test_batch_size=16", "model.backbone=test_resnet", "model.dim=32",
        "model.attn_dim=16", "model.num_parts=2", "train.epochs=2", "train.batches_per_epoch=3",
        "train.eval_every=1", "train.lr=0.01", "data.verify_images=false", *extra,
    ]


def first_to_exit(procs: list[subprocess.Popen], seconds: float = 120.0) -> subprocess.Popen:
    """The first of ``procs`` to end, waiting up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                return proc
        time.sleep(0.05)
    raise AssertionError(f"none of {len(procs)} processes ended within {seconds:g} s")


# --- data folders --------------------------------------------------------------------------

def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root``: relative path -> bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


CUSTOM_ATTRIBUTES = ["red", "round", "big", "striped"]

CUSTOM_CLASSES = [  # name, split, strengths
    ("apple", "seen", [1, 1, 0, 0]),
    ("brick", "seen", [1, 0, 0.5, 0]),
    ("zebra", "seen", [0, 0, 1, 1]),
    ("tomato", "unseen", [1, 1, 0, 0.2]),
    ("tiger", "unseen", [0.5, 0, 1, 1]),
]


def write_custom(root: Path, n_images: int = 5, rows: list[str] | None = None,
                 suffixes: tuple[str, ...] = (".png", ".JPG", ".jpeg")) -> Path:
    """A custom-format folder; ``rows`` replaces the class rows of classes.csv."""
    root.mkdir(parents=True, exist_ok=True)
    header = "class,split," + ",".join(CUSTOM_ATTRIBUTES)
    rows = rows if rows is not None else [
        f"{n},{s}," + ",".join(str(v) for v in a) for n, s, a in CUSTOM_CLASSES]
    (root / "classes.csv").write_text("\n".join([header, *rows]) + "\n")
    for c, (name, _, _) in enumerate(CUSTOM_CLASSES):
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_images):
            suffix = suffixes[i % len(suffixes)]
            fmt = "PNG" if suffix.lower() == ".png" else "JPEG"
            Image.new("RGB", (12, 10), (40 * c, 10 * i, 100)).save(folder / f"{i}{suffix}", fmt)
        (folder / "notes.txt").write_text("not an image")
        (folder / "._0.png").write_bytes(b"macOS resource fork")
    (root / "images" / ".ipynb_checkpoints").mkdir()
    return root


def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


def make_full(root: Path, name: str, create: str) -> None:
    """res101.mat from the real image_list.txt, with the real split files linked in.

    Args:
        create: "all" image files, or only the "first" one (enough to find the path prefix).
    """
    src = shared_data("xlsa17", name)
    folder = root / "xlsa17" / "data" / name
    folder.mkdir(parents=True)
    for path in src.iterdir():
        if path.name != "image_list.txt":
            (folder / path.name).symlink_to(path)
    (root / "w2v").mkdir()
    (root / "w2v" / f"{name}_attribute.pkl").symlink_to(shared_data("w2v", f"{name}_attribute.pkl"))
    rels, labels = zip(*(line.rsplit(" ", 1) for line in
                         (src / "image_list.txt").read_text().splitlines() if line), strict=True)
    authors = [AUTHOR_PREFIX + {"SUN": "SUN/" + r, "CUB": r,
                                "AWA2": r.replace("2/JPEG", "2//JPEG")}[name] for r in rels]
    scipy.io.savemat(folder / "res101.mat", {
        "image_files": cell(authors), "labels": np.array(labels, float).reshape(-1, 1)})
    data = tiny_jpeg()
    for rel in rels if create == "all" else rels[:1]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# --- a tiny checkpoint and what serves it --------------------------------------------------

CLASS_NAMES = ["red_circle", "red_square", "blue_circle", "blue_square", "green_circle",
               "green_square"]

ATTRIBUTE_NAMES = ["shape_circle", "shape_square", "color_red", "color_blue", "color_green"]

SEEN, UNSEEN = [0, 1, 2, 3], [4, 5]

CLASS_ATTRIBUTES = [[1, 0, 1, 0, 0], [0, 1, 1, 0, 0], [1, 0, 0, 1, 0], [0, 1, 0, 1, 0],
                    [1, 0, 0, 0, 1], [0, 1, 0, 0, 1]]


def tiny_config(name: str = "mgmrn") -> Config:
    """The config of the tiny network of :func:`write_checkpoint`."""
    cfg = Config()
    cfg.model.name = name
    cfg.model.backbone = "test_resnet"
    cfg.model.pretrained = False
    cfg.model.dim, cfg.model.attn_dim, cfg.model.num_parts = 32, 16, 3
    cfg.data.image_size = 64
    cfg.data.test_batch_size = 2  # several batches for the five test images
    return cfg


def write_checkpoint(path: Path, name: str = "mgmrn") -> Path:
    """A checkpoint in the format of ``mgmrn train``, of an untrained tiny network."""
    torch.manual_seed(0)
    cfg = tiny_config(name)
    vectors = torch.randn(len(ATTRIBUTE_NAMES), 8)
    attributes = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 0, 0], [1, 0, 0, 1, 0],
                               [0, 1, 0, 1, 0], [1, 0, 0, 0, 1], [0, 1, 0, 0, 1]],
                              dtype=torch.float32)
    model = build_model(cfg.model, vectors)
    torch.save({
        "model": model.state_dict(),
        "config": cfg.to_dict(),
        "data": {"name": "tiny", "class_names": CLASS_NAMES, "attribute_names": ATTRIBUTE_NAMES,
                 "class_attributes": attributes, "attribute_vectors": vectors,
                 "seen_classes": torch.tensor(SEEN), "unseen_classes": torch.tensor(UNSEEN)},
        "epoch": 3,
    }, path)
    return path


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) read from a PNG file's header."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def png_bytes(size=(80, 80), seed=0) -> bytes:
    """A PNG of seeded random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def make_dataset(root: Path) -> Path:
    """A custom dataset with the checkpoint's classes: 3 images per class."""
    rows = ["class,split," + ",".join(ATTRIBUTE_NAMES)]
    for c, name in enumerate(CLASS_NAMES):
        rows.append(f"{name},{'seen' if c in SEEN else 'unseen'}," + ",".join(map(str, CLASS_ATTRIBUTES[c])))
        (root / "images" / name).mkdir(parents=True)
        for i in range(3):
            (root / "images" / name / f"{i}.png").write_bytes(png_bytes((40, 40), seed=10 * c + i))
    (root / "classes.csv").write_text("\n".join(rows) + "\n")
    return root


def make_run(folder: Path, with_confusions: bool, example: Path) -> Path:
    """A run folder with metrics.jsonl and a results.json of the checkpoint's classes."""
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(
        '{"epoch": 0, "loss": 3.0, "loss_fine": 1.0}\n'
        '{"epoch": 1, "loss": 2.0, "loss_fine": 0.8, "czsl_acc": 50.0, "gzsl_h": 20.0}\n')
    results = {"czsl_acc": 50.0, "gzsl_seen": 30.0, "gzsl_unseen": 20.0, "gzsl_h": 24.0,
               "gamma": 0.5, "ausuc": 10.0, "calibration": "gamma chosen on the test set (oracle)",
               "curve": {"gamma": [0.0, 0.5, 1.0], "seen": [40.0, 30.0, 0.0],
                         "unseen": [10.0, 20.0, 50.0], "h": [16.0, 24.0, 0.0]},
               "czsl_per_class": {"green_circle": 100.0, "green_square": 0.0}}
    if with_confusions:
        results["unseen_confusions"] = [{"true": "green_square", "predicted": "green_circle",
                                         "count": 3, "share": 1.0, "examples": [str(example)]}]
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def checkpoint_with_data(root: Path, calibration: dict | None = None) -> tuple[Path, Path]:
    """A tiny checkpoint whose run data is a custom dataset written under ``root``."""
    data = make_dataset(root / "data")
    checkpoint = write_checkpoint(root / "tiny.pt")
    saved = torch.load(checkpoint, weights_only=True)
    saved["config"]["data"].update(name="custom", root=str(data), verify_images=False)
    if calibration is not None:
        saved["calibration"] = calibration
    torch.save(saved, checkpoint)
    return checkpoint, data

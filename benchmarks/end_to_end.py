"""End-to-end input speed: JPEG files on disk -> DataLoader -> training steps.

Writes once (cached under ``.cache/mgmrn/e2e-jpegs``) a dataset in the custom format whose images
are photograph-like JPEGs of CUB's sizes (long side 500, short side 280-500, quality 90: smooth
colour fields, shapes, fine texture and sensor-like noise; about 100 KiB a file, as CUB's
archive holds 95 KiB per image), then measures and prints as JSON lines:

- ``component``: milliseconds per image of each stage in this process: decoding (PIL, or
  torchvision's decoder into a tensor) and the train and test transforms, with the float
  conversion and normalisation in the worker (``pil_float``, the input path before this
  benchmark) or stopping at uint8 and normalising the batch later (``tensor_uint8``, the default);
- ``loader``: images per second of the DataLoader alone, per path, transform and worker count
  (``workers=0`` loads in the main process, with its torch threads; workers use one each);
- ``train``: ``mgmrn train``-equivalent steps fed by the real training loader (the custom reader,
  the episodic sampler, ``Precision.prepare``, ``train_one_epoch``): images per second and the
  fraction of the time the host spent waiting for the next batch. On the CPU a small model (as in
  ``throughput.py``); on CUDA the full network at 448 px with bf16, channels_last and CUDA graphs;
- ``summary``: the loading processes needed to feed ``--target-rate`` training images and
  ``--target-eval-rate`` test images per second, from the one-worker rates.

    python benchmarks/end_to_end.py                       # CPU, about a minute on 2 cores
    python benchmarks/end_to_end.py --device cuda --workers 0,1,4,8
    python benchmarks/end_to_end.py --skip-train --workers 0,1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, RandomSampler

from mgmrn.config import Config
from mgmrn.data import build_data, build_train_loader
from mgmrn.data.datasets import ImageDataset, decode_rgb, load_rgb
from mgmrn.data.loaders import available_cores, resolve_num_workers
from mgmrn.data.transforms import normalize_images, test_transform, train_transform
from mgmrn.distributed import DistEnv
from mgmrn.models import build_model
from mgmrn.precision import resolve_cuda_graphs, resolve_precision
from mgmrn.training.engine import GraphedStep, train_one_epoch
from mgmrn.training.losses import ZSLCriterion

PATHS = {  # name -> (decoder, normalise in the worker)
    "pil_float": (load_rgb, True),
    "tensor_uint8": (decode_rgb, False),
}
CACHE = Path(".cache/mgmrn/e2e-jpegs")
DRAWING = 2  # version of draw_photo, part of the cache's name


def draw_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photograph-like RGB image: smooth colour fields, shapes, fine texture and noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(width, height)
    phase = rng.uniform(0, 2 * np.pi, (3, 3))
    freq = rng.uniform(1, 6, (3, 2))
    fields = [np.sin(freq[c, 0] * x * 2 + phase[c, 0]) * np.cos(freq[c, 1] * y * 2 + phase[c, 1])
              for c in range(3)]
    pixels = (np.stack(fields, -1) * 0.35 + 0.5) * 255
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(4, 12)):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(width // 25 + 1, width // 2 + 2), rng.integers(height // 25 + 1, height // 2 + 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    pixels = np.asarray(image, dtype=np.float32)
    # fine texture (feathers, leaves) varies over the image; noise everywhere, as a sensor's
    strength = 24 + 18 * np.sin(6 * x + phase[0, 2])
    texture = rng.normal(0, 1, (height, width, 1)) * strength[..., None]
    pixels = pixels + texture + rng.normal(0, 4, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def unseen_count(classes: int) -> int:
    return max(1, classes // 5)


def ensure_jpeg_tree(root: Path, classes: int = 10, per_class: int = 12, quality: int = 90,
                     seed: int = 0, long_side: int = 500) -> Path:
    """A custom-format dataset of JPEGs under ``root``, written once per set of parameters.

    Images have the long side ``long_side`` and the short side 56-100% of it, landscape 70% of
    the time. The last :func:`unseen_count` classes are unseen; each class has 4 random binary
    attributes of 8. Returns the dataset folder.
    """
    folder = root / f"v{DRAWING}-c{classes}-n{per_class}-q{quality}-s{seed}-l{long_side}"
    if (folder / "classes.csv").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".e2e-", dir=root))
    try:
        rng = np.random.default_rng(seed)
        rows = ["class,split," + ",".join(f"a{i}" for i in range(8))]
        for c in range(classes):
            name = f"class_{c:03d}"
            (tmp / "images" / name).mkdir(parents=True)
            for i in range(per_class):
                short = int(rng.integers(round(0.56 * long_side), long_side + 1))
                size = (long_side, short) if rng.random() < 0.7 else (short, long_side)
                draw_photo(rng, *size).save(tmp / "images" / name / f"{i:04d}.jpg",
                                             quality=quality)
            split = "unseen" if c >= classes - unseen_count(classes) else "seen"
            strengths = (rng.permutation(8) < 4).astype(int)
            rows.append(f"{name},{split}," + ",".join(map(str, strengths)))
        (tmp / "classes.csv").write_text("\n".join(rows) + "\n")  # written last: marks complete
        tmp.chmod(0o755)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def image_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in (folder / "images").rglob("*.jpg"))


def make_transform(kind: str, size: int, normalize: bool):
    return train_transform(size, normalize) if kind == "train" else test_transform(size, "ratio",
                                                                                 normalize)


def per_image_ms(fn, items: list, repeat: int = 1) -> float:
    """Mean milliseconds of ``fn(item)`` over ``items`` (after one untimed call)."""
    fn(items[0])
    start = time.perf_counter()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return 1000 * (time.perf_counter() - start) / (repeat * len(items))


def measure_components(files: list[str], size: int) -> list[dict]:
    """Milliseconds per image of decoding and of each transform, on one thread as in a worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _components(files, size)
    finally:
        torch.set_num_threads(threads)


def _components(files: list[str], size: int) -> list[dict]:
    pils = [load_rgb(f) for f in files]
    tensors = [decode_rgb(f) for f in files]
    out = [{"kind": "component", "stage": "decode", "path": "pil_float",
            "ms_per_image": per_image_ms(load_rgb, files)},
           {"kind": "component", "stage": "decode", "path": "tensor_uint8",
            "ms_per_image": per_image_ms(decode_rgb, files)}]
    for transform in ("train", "test"):
        for path, images in (("pil_float", pils), ("tensor_uint8", tensors)):
            tf = make_transform(transform, size, normalize=path == "pil_float")
            out.append({"kind": "component", "stage": f"{transform}_transform", "path": path,
                        "ms_per_image": per_image_ms(tf, images)})
    batch = torch.stack([make_transform("test", size, False)(t) for t in tensors])
    out.append({"kind": "component", "stage": "normalize_batch_cpu", "path": "tensor_uint8",
                "ms_per_image": per_image_ms(normalize_images, [batch]) / len(batch)})
    for row in out:
        row["ms_per_image"] = round(row["ms_per_image"], 3)
        row["image_size"] = size
    return out


def measure_loader(files: list[str], path: str, transform: str, size: int, workers: int,
                   batch_size: int, batches: int) -> dict:
    """Images per second of a DataLoader over ``files`` (random order, with replacement).

    The first round (one batch per worker, at least one) is warm-up: it holds the workers'
    start. The rate counts the batches after it.
    """
    decode, normalize = PATHS[path]
    dataset = ImageDataset(files, np.zeros(len(files), dtype=np.int64),
                           make_transform(transform, size, normalize), decode=decode)
    warm = max(1, workers)
    sampler = RandomSampler(dataset, replacement=True, num_samples=(batches + warm) * batch_size,
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=torch.cuda.is_available())
    start = time.perf_counter()
    for i, (images, _) in enumerate(loader):
        if i == warm - 1:
            warm_end = time.perf_counter()
        last = images
    end = time.perf_counter()
    rate = batches * batch_size / (end - warm_end)
    return {"kind": "loader", "path": path, "transform": transform, "image_size": size,
            "workers": workers, "batch_size": batch_size, "images_per_s": round(rate, 2),
            "images_per_s_per_worker": round(rate / max(1, workers), 2),
            "first_round_s": round(warm_end - start, 3), "batch_dtype": str(last.dtype),
            "batch_bytes": last.numel() * last.element_size()}


class TimedLoader:
    """Wraps a loader; ``wait_s`` adds up the time spent getting each next batch."""

    def __init__(self, loader):
        self.loader, self.wait_s, self.first_s = loader, 0.0, None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            self.wait_s += time.perf_counter() - start
            if self.first_s is None:
                self.first_s = self.wait_s
            yield item


def train_config(args, folder: Path, workers: int) -> Config:
    cfg = Config(device=args.device)
    cfg.model.backbone, cfg.model.pretrained = args.backbone, False
    cfg.model.dim, cfg.model.attn_dim = args.dim, args.attn_dim
    cfg.data.name, cfg.data.root, cfg.data.image_size = "custom", str(folder), args.train_size
    cfg.data.num_workers, cfg.data.verify_images = workers, False
    cfg.data.ways = min(8, args.classes - unseen_count(args.classes))  # batches of ways x 2
    cfg.train.batches_per_epoch = args.train_steps
    return cfg


def measure_training(args, folder: Path, workers: int, path: str) -> dict:
    """One warm-up epoch, then one timed epoch of ``mgmrn train``-equivalent steps."""
    cfg = train_config(args, folder, workers)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    data = build_data(cfg.data, cfg.seed)
    data.train.decode, normalize = PATHS[path]
    data.train.transform = train_transform(cfg.data.image_size, normalize)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.attribute_vectors, image_size=cfg.data.image_size).to(device)
    precision = resolve_precision(cfg, device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = ZSLCriterion(data.class_attributes[data.seen_classes], cfg.train.lam).to(device)
    graphed = (GraphedStep(model, criterion, precision, device)
               if resolve_cuda_graphs(cfg, device, DistEnv(), precision) else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=0.9,
                                fused=True if device.type == "cuda" else None)
    loader = build_train_loader(data, cfg.data, cfg.train.batches_per_epoch, cfg.seed)
    for epoch in range(2):  # epoch 0 warms up (and captures the CUDA graph)
        loader.batch_sampler.set_epoch(epoch)
        timed = TimedLoader(loader)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_one_epoch(model, timed, optimizer, criterion, device, epoch, precision=precision,
                        show_progress=False, graphed=graphed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
    images = cfg.train.batches_per_epoch * cfg.data.ways * cfg.data.shots
    return {"kind": "train", "path": path, "device": args.device, "backbone": args.backbone,
            "image_size": args.train_size, "batch_size": cfg.data.ways * cfg.data.shots,
            "workers": workers, "amp": str(precision.dtype), "cuda_graphs": graphed is not None,
            "steps": cfg.train.batches_per_epoch, "images_per_s": round(images / elapsed, 2),
            # without the wait for the first batch: the workers' start at each epoch
            "images_per_s_after_first_batch": round(images / (elapsed - timed.first_s), 2),
            "data_wait_fraction": round(timed.wait_s / elapsed, 3),
            "first_batch_s": round(timed.first_s, 3)}


def summary(rows: list[dict], args) -> dict:
    """Loading processes needed for the target rates, from the one-worker loader rates."""
    out = {"kind": "summary", "target_rate": args.target_rate,
           "target_eval_rate": args.target_eval_rate, "cores_available": available_cores(),
           "auto_workers_here": resolve_num_workers("auto")}
    for row in rows:
        if row["kind"] == "loader" and row["workers"] == 1:
            target = args.target_rate if row["transform"] == "train" else args.target_eval_rate
            key = f"workers_needed_{row['transform']}_{row['path']}"
            out[key] = math.ceil(target / row["images_per_s"])
    return out


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--cache", default=str(CACHE), help="where the JPEG tree is written once")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=12)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--long-side", type=int, default=500)
    p.add_argument("--image-size", type=int, default=448, help="loader measurements")
    p.add_argument("--workers", default=None,
                   help="comma-separated worker counts; default 0,1,auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--loader-batches", type=int, default=6, help="timed batches per measurement")
    p.add_argument("--paths", default="pil_float,tensor_uint8")
    p.add_argument("--component-images", type=int, default=16)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--train-size", type=int, default=None, help="default 448 (CUDA), 128 (CPU)")
    p.add_argument("--train-steps", type=int, default=None, help="default 40 (CUDA), 4 (CPU)")
    p.add_argument("--train-workers", default="auto", help="data.num_workers of the training run")
    p.add_argument("--backbone", default=None, help="default resnet101 (CUDA), resnet18 (CPU)")
    p.add_argument("--dim", type=int, default=None, help="D; default 2048 (CUDA), 64 (CPU)")
    p.add_argument("--attn-dim", type=int, default=None, help="M; default 1024 (CUDA), 32 (CPU)")
    p.add_argument("--target-rate", type=float, default=308.0,
                   help="training images/s to feed (docs/performance.md: H100, fused default)")
    p.add_argument("--target-eval-rate", type=float, default=873.0,
                   help="test images/s to feed (docs/performance.md: H100 inference, run A)")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.train_size = args.train_size or (448 if gpu else 128)
    args.train_steps = args.train_steps or (40 if gpu else 4)
    args.backbone = args.backbone or ("resnet101" if gpu else "resnet18")
    args.dim = args.dim or (2048 if gpu else 64)
    args.attn_dim = args.attn_dim or (1024 if gpu else 32)
    counts = (args.workers or "0,1,auto").split(",")
    args.workers = sorted({resolve_num_workers(c if c == "auto" else int(c)) for c in counts})
    if args.train_workers != "auto":
        args.train_workers = int(args.train_workers)
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    start = time.perf_counter()
    folder = ensure_jpeg_tree(Path(args.cache), args.classes, args.per_class, args.quality,
                              long_side=args.long_side)
    files = image_files(folder)
    sizes = [os.path.getsize(f) for f in files]
    emit({"kind": "dataset", "folder": str(folder), "images": len(files),
          "mean_kb": round(sum(sizes) / len(sizes) / 1024, 1), "ready_s":
          round(time.perf_counter() - start, 2), "loadavg": os.getloadavg()})
    for row in measure_components(files[:args.component_images], args.image_size):
        emit(row)
    for transform in ("train", "test"):
        for path in args.paths.split(","):
            for workers in args.workers:
                emit(measure_loader(files, path, transform, args.image_size, workers,
                                    args.batch_size, args.loader_batches))
    if not args.skip_train:
        for path in args.paths.split(","):
            emit(measure_training(args, folder, resolve_num_workers(args.train_workers), path))
    emit({**summary(rows, args), "loadavg": os.getloadavg(),
          "seconds": round(time.perf_counter() - start, 1)})
    return rows


if __name__ == "__main__":
    main()

"""A trained network's features of every image of its dataset, for other zero-shot methods.

Per image: the pooled visual features of each level (the level's own map after its granularity
module, averaged over locations; the baseline's pooled backbone features), the attribute scores
of each level, the label and the split. Written as ``features.npz`` and in the xlsa17 layout
(``res101.mat`` + ``att_splits.mat``, the same field names and 1-based indices), so that methods
that read xlsa17 features (f-CLSWGAN, tfvaegan, ...) run on them unchanged.

Images are processed in chunks saved as they finish (``<out>/partial/``), so that a stopped
extraction continues where it stopped; the chunks are bound to the checkpoint and the image list.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import scipy.io
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from mgmrn.data.datasets import ImageDataset
from mgmrn.errors import UsageError
from mgmrn.inference.loaded import LoadedRun
from mgmrn.inference.scoring import forward_scores
from mgmrn.io.atomic import write_atomic

log = logging.getLogger(__name__)

# split -> its location field in att_splits.mat
SPLITS = {"trainval": "trainval_loc", "test_seen": "test_seen_loc", "test_unseen": "test_unseen_loc"}
# what res101.mat's ``features`` holds: the levels' pooled features concatenated, or the
# attribute scores (mean over levels)
MAT_FEATURES = ("levels", "attributes")
CHUNK = 256


def split_images(run: LoadedRun, data, splits: list[str]) -> tuple[list[str], np.ndarray, dict]:
    """The image files of ``splits`` in order, their labels over all classes (0..C-1), and
    split -> positions in that order."""
    parts = {"trainval": (data.train.paths, data.seen_classes.numpy()[data.train.labels]),
             "test_seen": (data.test_seen.paths, data.test_seen.labels),
             "test_unseen": (data.test_unseen.paths, data.test_unseen.labels)}
    paths, labels, where = [], [], {}
    for split in splits:
        files, split_labels = parts[split]
        where[split] = np.arange(len(paths), len(paths) + len(files))
        paths += list(files)
        labels += [int(v) for v in split_labels]
    return paths, np.asarray(labels, dtype=np.int64), where


def level_feature_hooks(model: nn.Module, sink: list) -> list:
    """Forward hooks appending each level's pooled features (B, D) to ``sink``, in level
    order; returns the handles to remove."""
    def pooled(_module, _inputs, output):
        level_map = output[0] if isinstance(output, tuple) else output[-1]
        sink.append(level_map.float().mean(dim=(2, 3)))

    modules = list(model.granularity) if hasattr(model, "granularity") else [model.backbone]
    return [m.register_forward_hook(pooled) for m in modules]


@torch.no_grad()
def extract_chunk(run: LoadedRun, dataset, class_attributes: torch.Tensor) -> dict[str, np.ndarray]:
    """Features of every image of ``dataset``: ``level<i>`` (N, D_i), ``attributes`` (N, L, A)."""
    cfg = run.config.data
    loader = DataLoader(dataset, batch_size=cfg.test_batch_size, num_workers=cfg.num_workers)
    levels, attributes = [], []
    sink: list[torch.Tensor] = []
    handles = level_feature_hooks(run.model, sink)
    try:
        for images, _ in loader:
            sink.clear()
            _, _, out = forward_scores(run.model, images, class_attributes, run.precision, run.device)
            levels.append([t.cpu() for t in sink])
            attributes.append(torch.stack(out.attribute_scores, 1).float().cpu())
    finally:
        for handle in handles:
            handle.remove()
    chunk = {f"level{i}": torch.cat([b[i] for b in levels]).numpy()
             for i in range(len(levels[0]))}
    chunk["attributes"] = torch.cat(attributes).numpy()
    return chunk


def extract(run: LoadedRun, data, out: Path, splits: list[str], chunk: int = CHUNK,
            show_progress: bool = True) -> dict[str, np.ndarray]:
    """Features of the images of ``splits``, chunk by chunk, resuming from the chunks of
    ``out/partial`` made for the same checkpoint and images."""
    paths, labels, where = split_images(run, data, splits)
    dataset = ImageDataset(paths, labels, run.transform, run.config.data.skip_bad_images)
    partial = out / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    key = _fingerprint(run, paths)
    stamp = partial / "fingerprint.txt"
    if stamp.is_file() and stamp.read_text() != key:
        for old in partial.glob("chunk-*.npz"):  # another checkpoint's or image list's
            old.unlink()
    write_atomic(stamp, key)
    attributes = run.description["class_attributes"].float()
    chunks = []
    starts = range(0, len(paths), chunk)
    for start in tqdm(starts, desc="features", unit="chunk", disable=not show_progress,
                      dynamic_ncols=True):
        path = partial / f"chunk-{start // chunk:05d}.npz"
        if path.is_file():  # made by a run that stopped
            with np.load(path) as saved:
                chunks.append({name: saved[name] for name in saved.files})
            continue
        values = extract_chunk(run, Subset(dataset, range(start, min(start + chunk, len(paths)))),
                               attributes)
        write_atomic(path, lambda f, v=values: np.savez(f, **v))
        chunks.append(values)
    result = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    result.update(labels=labels, image_files=np.asarray(paths),
                  **{f"{split}_loc": where[split] for split in splits})
    return result


def _fingerprint(run: LoadedRun, paths: list[str]) -> str:
    """What the chunks depend on: every weight (two runs may share a frozen backbone), the image
    list and the input transform; about a second per GB of weights."""
    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(run.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    digest.update("\n".join(paths).encode())
    cfg = run.config.data
    digest.update(json.dumps([cfg.image_size, cfg.test_resize, run.inputs]).encode())
    return digest.hexdigest()


def write_features(result: dict[str, np.ndarray], run: LoadedRun, out: Path,
                   mat_features: str = "levels") -> list[Path]:
    """``features.npz``, ``res101.mat`` and ``att_splits.mat`` into ``out``; returns them."""
    if mat_features not in MAT_FEATURES:
        raise UsageError(f"--mat-features must be one of {', '.join(MAT_FEATURES)}, got "
                         f"'{mat_features}'")
    meta, levels = run.description, list(run.model.levels)
    level_features = [result[f"level{i}"] for i in range(len(levels))]
    attributes = result["attributes"]  # (N, L, A)
    locations = {key: value for key, value in result.items() if key.endswith("_loc")}
    class_attributes = meta["class_attributes"].float().numpy()
    npz = {f"features_{name}": f for name, f in zip(levels, level_features, strict=True)}
    npz.update(attribute_scores=attributes, labels=result["labels"],
               image_files=result["image_files"], class_names=np.asarray(meta["class_names"]),
               attribute_names=np.asarray(meta["attribute_names"]), levels=np.asarray(levels),
               class_attributes=class_attributes, **locations)
    files = [out / "features.npz", out / "res101.mat", out / "att_splits.mat"]
    write_atomic(files[0], lambda f: np.savez(f, **npz))
    features = (np.concatenate(level_features, axis=1) if mat_features == "levels"
                else attributes.mean(1))
    res101 = {"features": features.T.astype(np.float32),  # (D, N), as xlsa17
              "labels": (result["labels"] + 1).reshape(-1, 1).astype(np.float64),
              "image_files": _cell(result["image_files"]),
              "attribute_scores": attributes.mean(1).T.astype(np.float32)}
    for name, level_features_i in zip(levels, level_features, strict=True):
        res101[f"features_{name}"] = level_features_i.T.astype(np.float32)
        res101[f"attribute_scores_{name}"] = attributes[:, levels.index(name)].T.astype(np.float32)
    write_atomic(files[1], lambda f: scipy.io.savemat(f, res101))
    norms = np.linalg.norm(class_attributes, axis=1, keepdims=True)
    splits = {"att": (class_attributes / np.where(norms > 0, norms, 1)).T,  # (A, C), L2 columns
              "original_att": class_attributes.T,
              "allclasses_names": _cell(meta["class_names"]),
              "attribute_names": _cell(meta["attribute_names"])}
    # unsigned 16-bit, as xlsa17 stores them, while the image count fits
    index_type = np.uint16 if len(result["labels"]) < 2**16 else np.uint32
    for field in ("trainval_loc", "test_seen_loc", "test_unseen_loc", "train_loc", "val_loc"):
        # 1-based columns; train_loc and val_loc are empty: a run knows one split of its classes
        splits[field] = (locations.get(field, np.zeros(0, np.int64)) + 1).reshape(-1, 1).astype(
            index_type)
    write_atomic(files[2], lambda f: scipy.io.savemat(f, splits))
    return files


def _cell(strings) -> np.ndarray:
    """A MATLAB cell column of strings, as xlsa17 stores names and files."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, value in enumerate(strings):
        cell[i, 0] = np.array([str(value)])
    return cell

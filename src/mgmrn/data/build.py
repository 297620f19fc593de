"""Files on disk -> zero-shot records -> checked image datasets (:class:`ZSLData`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from mgmrn.config import DataConfig
from mgmrn.data.datasets import ImageDataset
from mgmrn.data.errors import DataError
from mgmrn.data.readers.custom import read_custom
from mgmrn.data.readers.records import ZSLRecords
from mgmrn.data.readers.xlsa17 import FOLDERS, read_xlsa17
from mgmrn.data.samplers import check_episodes_fit, check_random_batch_fits
from mgmrn.data.synthetic.demo import demo_params, ensure_demo
from mgmrn.data.synthetic.parts import ensure_parts, parts_params
from mgmrn.data.synthetic.procedural import is_drawn
from mgmrn.data.transforms import test_transform, train_transform
from mgmrn.data.verify import check_files_exist, verify_images
from mgmrn.distributed import DistEnv, barrier

log = logging.getLogger(__name__)


@dataclass
class ZSLData:
    """A zero-shot split ready for training and evaluation.

    Labels of ``train`` are positions in ``seen_classes`` (0..S-1); labels of the test sets are
    indices into all classes (0..C-1). Seen and unseen classes together are all C classes.

    Attributes:
        name: dataset name.
        class_names: C names.
        attribute_names: A names.
        class_attributes: (C, A) float32 strengths, as read.
        attribute_vectors: (A, E) float32 attribute embeddings (queries of the decoder).
        seen_classes: (S,) long, sorted indices into all classes.
        unseen_classes: (U,) long, sorted indices into all classes.
        train: items (image (3, H, W), label 0..S-1).
        test_seen: items (image, label 0..C-1).
        test_unseen: items (image, label 0..C-1).
        train_labels: (N_train,) int64 train labels, for the sampler.
        files: which files were read, for messages.
    """

    name: str
    class_names: list[str]
    attribute_names: list[str]
    class_attributes: torch.Tensor
    attribute_vectors: torch.Tensor
    seen_classes: torch.Tensor
    unseen_classes: torch.Tensor
    train: Dataset
    test_seen: Dataset
    test_unseen: Dataset
    train_labels: np.ndarray
    files: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "n_seen_classes": len(self.seen_classes),
            "n_unseen_classes": len(self.unseen_classes),
            "n_train": len(self.train),
            "n_test_seen": len(self.test_seen),
            "n_test_unseen": len(self.test_unseen),
        }


def read_records(cfg: DataConfig, seed: int = 0, draw: bool = True) -> ZSLRecords:
    """Read the split named by ``cfg.name`` (drawing a built-in set first if needed), no checks.

    Args:
        cfg: data config.
        seed: seed of held-out draws (seen test images without a list; validation split).
        draw: draw a built-in set that is not there yet; False refuses instead (``data check``
            writes nothing).
    """
    if cfg.name in FOLDERS:
        return read_xlsa17(cfg.root, cfg.name, cfg.semantic, cfg.split, cfg.val_fraction, seed,
                           cfg.attribute_vectors)
    if cfg.name in ("demo", "parts"):
        record, params = (("demo.json", demo_params(cfg.demo)) if cfg.name == "demo" else
                          ("parts.json", parts_params(cfg.parts)))
        if not draw and not is_drawn(cfg.root, record, params):
            raise DataError(f"{cfg.root} (data.root) holds no {cfg.name} set drawn with these "
                            f"settings, and a check writes nothing; mgmrn train draws it (or "
                            f"point data.root at a drawn set)")
        folder = (ensure_demo(cfg.root, cfg.demo) if cfg.name == "demo" else
                  ensure_parts(cfg.root, cfg.parts))
    elif cfg.name == "custom":
        folder = cfg.root
    else:
        raise DataError(f"config key 'data.name': expected demo, parts, cub, sun, awa2 or "
                        f"custom, got {cfg.name!r}")
    return read_custom(folder, cfg.split, cfg.val_fraction, seed, name=cfg.name,
                       attribute_vectors=cfg.attribute_vectors)


def build_data(cfg: DataConfig, seed: int = 0, inputs: dict | None = None) -> ZSLData:
    """Read, check and wrap a dataset.

    Every image must exist (else a :class:`DataError` lists the missing ones); with
    ``cfg.verify_images`` every image must also decode, or is left out with a warning when
    ``cfg.skip_bad_images``.

    Args:
        cfg: data config.
        seed: seed of held-out draws (see :func:`read_records`); the same seed, the same split.
        inputs: the backbone's input statistics and interpolation (see
            :mod:`~mgmrn.data.transforms`); None: ImageNet's, bilinear.
    """
    records = read_records(cfg, seed)
    check_files_exist(records.all_paths(), records.files.get("image_root", cfg.root))
    if cfg.verify_images:
        bad = verify_images(records.all_paths(), cfg.skip_bad_images)
        if bad:
            records.drop_paths(bad)
            records.files["left_out_images"] = sorted(bad)
    return assemble(records, cfg, inputs)


def assemble(records: ZSLRecords, cfg: DataConfig, inputs: dict | None = None) -> ZSLData:
    """Wrap checked records into datasets with the transforms of ``cfg.image_size``.

    Items are (3, size, size) uint8 images; :func:`~mgmrn.data.transforms.normalize_images`
    turns a batch of them into the network's input.
    """
    seen, unseen = np.sort(records.seen), np.sort(records.unseen)
    position = np.full(len(records.class_names), -1, dtype=np.int64)
    position[seen] = np.arange(len(seen))
    train_labels = position[records.labels["train"]]
    if (train_labels < 0).any():
        raise DataError(f"{records.name}: training images of classes that are not seen classes")
    # uint8 items: the float conversion and normalisation run on the device (Precision.prepare)
    train_tf = train_transform(cfg.image_size, normalize=False, inputs=inputs, flip=cfg.flip)
    test_tf = test_transform(cfg.image_size, cfg.test_resize, normalize=False, inputs=inputs)

    def dataset(split: str, labels: np.ndarray, transform) -> ImageDataset:
        return ImageDataset(records.paths[split], labels, transform, cfg.skip_bad_images)

    data = ZSLData(
        name=records.name,
        class_names=list(records.class_names),
        attribute_names=list(records.attribute_names),
        class_attributes=torch.as_tensor(records.class_attributes, dtype=torch.float32),
        attribute_vectors=torch.as_tensor(records.attribute_vectors, dtype=torch.float32),
        seen_classes=torch.as_tensor(seen, dtype=torch.long),
        unseen_classes=torch.as_tensor(unseen, dtype=torch.long),
        train=dataset("train", train_labels, train_tf),
        test_seen=dataset("test_seen", records.labels["test_seen"], test_tf),
        test_unseen=dataset("test_unseen", records.labels["test_unseen"], test_tf),
        train_labels=train_labels,
        files=records.files,
    )
    log.info("%s: %s", data.name, data.summary())
    return data


def check_sampler_fits(data: ZSLData, cfg: DataConfig) -> None:
    """Raise a one-line :class:`DataError` (a ValueError) when batches cannot be drawn.

    The samplers' own check (:func:`.samplers.check_episodes_fit`), made before training with
    the class names and the fix that suits the dataset: episodic sampling needs ``ways`` seen
    classes and ``shots`` training images in every seen class; random batches need
    ``ways * shots`` training images.
    """
    if cfg.sampler == "random":
        check_random_batch_fits(cfg.ways * cfg.shots, len(data.train_labels))
        return
    n_seen = len(data.seen_classes)
    counts = np.bincount(data.train_labels, minlength=n_seen)
    names = [data.class_names[int(c)] for c in data.seen_classes]
    smallest = names[int(counts.argmin())]
    where = data.files.get("images")
    if data.name in ("demo", "parts"):
        hint = f" or raise data.{data.name}.images_per_class"
    else:
        hint = f" or add images to {where}/{smallest}" if where else ""
    check_episodes_fit(counts, cfg.ways, cfg.shots, names, hint, data.name)


def build_data_once(cfg, env: DistEnv, inputs: dict | None = None) -> ZSLData:
    """:func:`build_data` of a run's config (``cfg``: a :class:`~mgmrn.config.Config`) on the
    main process first (it may draw a built-in set or check every image), then on the others,
    which find the work done. ``inputs``: the backbone's input config."""
    if not env.is_main:
        barrier()
    data = build_data(cfg.data, seed=cfg.seed, inputs=inputs)
    if env.is_main:
        barrier()
    return data

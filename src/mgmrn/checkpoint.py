"""Checkpoints: atomic saving, safe loading, and random-state capture for exact resumption."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` with torch.save so that ``path`` is always either the old or the new file.

    The bytes go to a temporary file in the same folder, are flushed to disk, and replace
    ``path`` by a rename, which is atomic on POSIX file systems: a crash at any moment leaves a
    complete file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without executing code from it (``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint '{path}' cannot be loaded safely ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}); it is damaged or was not written by mgmrn") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"checkpoint '{path}' has no 'model' and 'config' entries; "
                              f"it was not written by mgmrn")
    return ckpt


def random_states() -> dict:
    """Python, NumPy and torch random states in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict) -> None:
    random.setstate(_as_tuple(states["python"]))
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def model_from_checkpoint(saved: dict, path: str | Path,
                          attribute_vectors: torch.Tensor | None = None,
                          overrides: dict | None = None):
    """The network of a loaded checkpoint, with its weights, and the config it was made with.

    The one way a checkpoint becomes a model, for ``eval``, ``predict`` and ``convert-release``.

    Args:
        saved: what :func:`load_checkpoint` returned.
        path: the checkpoint's file, named in errors.
        attribute_vectors: (A, E) word vectors of the data it will run on; default: those saved
            with it. Another attribute count or width is refused with a message.
        overrides: config values to change (nested dict), e.g. ``{"data": {"root": ...}}``.

    Returns:
        (model, config); the model is on the CPU, in eval mode.
    """
    from .config import ConfigError
    from .models import build_model

    config = checkpoint_config(saved, overrides)
    meta = saved.get("data") or {}
    saved_vectors = meta.get("attribute_vectors")
    if attribute_vectors is None:
        if saved_vectors is None:
            raise CheckpointError(f"checkpoint '{path}' holds no attribute word vectors "
                                  f"('data.attribute_vectors'); it was not written by mgmrn")
        attribute_vectors = saved_vectors
    elif saved_vectors is not None and tuple(attribute_vectors.shape) != tuple(saved_vectors.shape):
        expected = tuple(saved_vectors.shape)
        raise ConfigError(
            f"checkpoint '{path}' was made for {expected[0]} attributes with {expected[1]}-d "
            f"vectors, but the data has {attribute_vectors.shape[0]} attributes with "
            f"{attribute_vectors.shape[1]}-d vectors; evaluate it on the dataset it was trained on")
    model: nn.Module = build_model(config.model, attribute_vectors.float())
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint '{path}' does not fit the network its config "
                              f"describes: {str(err).splitlines()[0]} {_key_summary(err)}") from err
    return model.eval(), config


def checkpoint_config(saved: dict, overrides: dict | None = None):
    """The config a loaded checkpoint was made with, ``overrides`` applied; weights from the file."""
    from .config import from_dict

    values = _merge(saved["config"], overrides or {})
    values["model"] = {**values.get("model", {}), "pretrained": False}
    return from_dict(values)


def _key_summary(err: RuntimeError) -> str:
    lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
    return " ".join(lines)[:600]


def _merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied key by key, at any depth."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged

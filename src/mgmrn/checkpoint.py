"""Checkpoints: what they hold, atomic saving, safe loading with clear errors, random states.

A checkpoint is a dict of plain values and tensors (``weights_only`` loading accepts it):

- ``model``, ``optimizer``, ``scheduler``, ``scaler``: state dicts (``scaler`` may be None);
- ``epoch``: the last completed epoch (-1: none), ``best``: the best figures over the epochs so
  far (:func:`mgmrn.evaluation.selection.update_selection`), ``calibration``: the run's gamma and
  where it was chosen (None before the first evaluation);
- ``config``: the run's config, ``data``: the dataset description (names, attributes, splits);
- ``input``: the normalisation (``mean``, ``std``) and resize ``interpolation`` of the network's
  inputs, the backbone's pretrained statistics; a checkpoint without it (converted from the
  published code) was trained with ImageNet's, bilinear;
- ``random``: Python, NumPy and torch random states;
- ``backbone_weights``: where the backbone's weights came from before training (``source``:
  file, hub, url or random; ``name``; ``location`` and ``sha256`` of the file where there is one);
- ``mid_epoch``: only in a checkpoint written when training was stopped by a signal: the epoch
  it stopped in, the batches of it done, their summed losses per level, and every rank's random
  states. Resuming skips those batches and continues as if never stopped.

``last.pt`` holds all of it, to resume; ``best.pt`` only what evaluation and prediction read
(:func:`inference_state`: no optimizer, scheduler, scaler or random states), about half the size
with AdamW.
"""

from __future__ import annotations

import pickle
import random
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgmrn.data.transforms import IMAGENET_INPUTS
from mgmrn.errors import MgmrnError
from mgmrn.io.atomic import write_atomic


class CheckpointError(MgmrnError, ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` with torch.save so that ``path`` is always either the old or the new file.

    Raises:
        DiskWriteError: the write failed (full disk, quota, permissions); the old file is intact.
    """
    write_atomic(path, lambda f: torch.save(obj, f))


def data_meta(data) -> dict:
    """What a checkpoint keeps of the dataset, so that it can be used without the dataset."""
    return {
        "name": data.name,
        "class_names": list(data.class_names),
        "attribute_names": list(data.attribute_names),
        "class_attributes": data.class_attributes.float(),
        "attribute_vectors": data.attribute_vectors.float(),
        "seen_classes": data.seen_classes.long(),
        "unseen_classes": data.unseen_classes.long(),
    }


def build_state(model: nn.Module, optimizer, scheduler, scaler, config: dict, data: dict,
                epoch: int, best: dict, mid_epoch: dict | None = None,
                calibration: dict | None = None, inputs: dict | None = None,
                backbone_weights: dict | None = None) -> dict:
    """The checkpoint of a run (layout in the module docstring).

    Args:
        model: the unwrapped network.
        optimizer, scheduler: their states are saved; ``scaler``: a GradScaler or None.
        config: ``Config.to_dict()``; ``data``: :func:`data_meta` of the dataset.
        epoch: the last completed epoch (-1 when stopped inside the first).
        best: best figures so far.
        mid_epoch: where an interrupted epoch stands (see :class:`ResumePoint`), or None.
        calibration: the run's gamma and where it was chosen, for prediction (see
            :func:`mgmrn.evaluation.calibration_record`), or None before any evaluation.
        inputs: the input normalisation and interpolation (None: ImageNet's, bilinear).
        backbone_weights: where the backbone's weights came from (``Backbone.weights``).
    """
    state = {
        "input": dict(inputs or IMAGENET_INPUTS),
        "calibration": calibration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "best": best,
        "config": config,
        "data": data,
        "random": random_states(),
        "backbone_weights": backbone_weights,
    }
    if mid_epoch is not None:
        state["mid_epoch"] = mid_epoch
    return state


# what only resuming reads: left out of a checkpoint kept for evaluation and prediction
RESUME_ONLY = ("optimizer", "scheduler", "scaler", "random", "mid_epoch")


def inference_state(state: dict) -> dict:
    """``state`` without what only resuming needs (:data:`RESUME_ONLY`): ``best.pt``."""
    return {key: value for key, value in state.items() if key not in RESUME_ONLY}


@dataclass
class ResumePoint:
    """Where a resumed run continues.

    Attributes:
        epoch: the first epoch to train.
        best: best figures so far.
        batches: batches of ``epoch`` already done (0 at an epoch boundary).
        loss_sums: (L,) summed losses per level of those batches, or None.
        random: this rank's random states at the stopping point, or None.
    """

    epoch: int
    best: dict
    batches: int = 0
    loss_sums: list[float] | None = None
    random: dict | None = None


RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "best", "random")


def restore_state(saved: dict, model: nn.Module, optimizer, scheduler, scaler,
                  path: str | Path, rank: int = 0) -> ResumePoint:
    """Load a checkpoint's states into a run's objects; returns where to continue.

    Raises:
        CheckpointError: entries are missing or the weights do not fit ``model``.
    """
    missing = [key for key in RESUME_KEYS if key not in saved]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' cannot be resumed: it lacks "
                              f"{', '.join(repr(k) for k in missing)}; resume from a run's "
                              f"last.pt (best.pt keeps what evaluation and prediction need)")
    load_weights(model, saved["model"], path)
    try:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint '{path}': its optimizer state does not fit this run "
                              f"({_unpickler_detail(err)}); resume with the config it was trained "
                              f"with") from err
    set_random_states(saved["random"])
    mid = saved.get("mid_epoch")
    if mid is None:
        return ResumePoint(saved["epoch"] + 1, saved["best"])
    states = mid["random"]
    return ResumePoint(int(mid["epoch"]), saved["best"], int(mid["batches"]),
                       [float(v) for v in mid["loss_sums"]], states[rank % len(states)])


def load_weights(model: nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state)``, with a one-line :class:`CheckpointError` on mismatch."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape differs
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CheckpointError(f"checkpoint '{path}' does not fit this model: "
                              f"{lines[1] if len(lines) > 1 else lines[0]}") from err
    problems = [f"{len(keys)} {what} (e.g. '{keys[0]}')" for keys, what in (
        (result.missing_keys, "weights missing"), (result.unexpected_keys, "unexpected weights"))
        if keys]
    if problems:
        raise CheckpointError(f"checkpoint '{path}' does not fit this model: "
                              f"{', '.join(problems)}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    keys: tuple[str, ...] = ("model", "config")) -> dict:
    """Load a checkpoint without executing code from it (``weights_only``).

    Every command that reads a checkpoint goes through here: a missing, empty, truncated,
    corrupt or foreign file raises a :class:`CheckpointError` of one line naming the file and
    what is wrong, never the unpickler's traceback.

    Args:
        path: the file.
        map_location: where tensors are loaded.
        keys: entries the loaded dict must have (``()``: any dict).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols on its way to refusing a file; the error says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint '{path}' {_diagnose(path, err)}") from err
    damaged = entry_failing_checksum(path)
    if damaged is not None:
        # torch.load does not check the archive's checksums: flipped bits load as wrong weights
        raise CheckpointError(f"checkpoint '{path}' is corrupted: the bytes of '{damaged}' do not "
                              f"match their stored checksum (damaged on disk or in transfer); "
                              f"use an intact copy")
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in keys):
        raise CheckpointError(f"checkpoint '{path}' has no {' and '.join(map(repr, keys))} "
                              f"entries; it was not written by mgmrn")
    return ckpt


def load_run_state(reference: str | Path) -> tuple[dict, Path]:
    """What evaluation and prediction read, from a ``.pt`` checkpoint or a model folder
    (``local-dir:DIR``, ``hf-hub:org/name``, see :mod:`mgmrn.hub`), in the layout of this
    module's docstring; and the file or folder it came from. Neither executes code."""
    from mgmrn import hub

    if hub.is_hub_reference(reference):
        return hub.read_hub_state(str(reference))
    return load_checkpoint(reference), Path(reference)


def _diagnose(path: Path, err: Exception) -> str:
    """What is wrong with a file torch.load failed on, in words."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
    detail = _unpickler_detail(err)
    if size == 0:
        return "is empty (0 bytes): the write that made it did not finish"
    if detail.startswith("Unsupported global"):
        return (f"cannot be loaded safely: it refers to code ({detail.split(' was ')[0]}), which "
                f"could run when loaded; mgmrn loads only tensors and plain values")
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return (f"is truncated ({size} bytes, the end of the archive is missing): a copy or a "
                f"write was cut short; use an intact copy")
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):
        return f"is not a PyTorch checkpoint ({size} bytes of another format)"
    safely = " safely" if isinstance(err, pickle.UnpicklingError) else ""
    return (f"cannot be loaded{safely} ({type(err).__name__}: {detail}): it is damaged or was not "
            f"written by mgmrn")


def entry_failing_checksum(path: Path) -> str | None:
    """The first entry of a zip checkpoint whose CRC-32 does not match its bytes, if any."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size:
                    continue  # saved with torch's checksums turned off
                try:
                    with archive.open(info) as f:  # checks the CRC-32 when read to the end
                        while f.read(1 << 24):
                            pass
                except (zipfile.BadZipFile, EOFError, OSError):
                    return info.filename
    except zipfile.BadZipFile:  # not a zip: torch's legacy format, which has no checksums
        return None
    return None


def _unpickler_detail(err: Exception) -> str:
    """The informative line of torch.load's error (its weights_only errors span many lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0] if lines else type(err).__name__


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


DESCRIPTION_KEYS = ("class_names", "attribute_names", "class_attributes", "attribute_vectors",
                    "seen_classes", "unseen_classes")


def checkpoint_description(saved: dict, path: str | Path) -> dict:
    """The dataset description a checkpoint carries (``data``: names, attributes, splits), which
    lets it run without its dataset.

    Raises:
        CheckpointError: the description, or one of its entries, is missing.
    """
    meta = saved.get("data")
    if not isinstance(meta, dict) or any(key not in meta for key in DESCRIPTION_KEYS):
        raise CheckpointError(f"checkpoint '{path}' lacks the dataset description ('data' with "
                              f"{', '.join(DESCRIPTION_KEYS)}) that prediction needs")
    return meta


def checkpoint_epochs_trained(saved: dict) -> int | None:
    """The epochs a checkpoint's network was trained for, counted from 1 as training counts
    them (``epoch`` is stored from 0); None where the file does not say (a converted one)."""
    epoch = saved.get("epoch")
    return int(epoch) + 1 if isinstance(epoch, int) else None


def checkpoint_calibration(saved: dict) -> dict | None:
    """The run's gamma and where it was chosen (see
    :func:`mgmrn.evaluation.calibration_record`); None before any evaluation."""
    return saved.get("calibration")


def check_attribute_names(trained, names, path: str | Path, where: str) -> None:
    """Refuse data whose attributes are not the checkpoint's, by name and order.

    Two sets with the same attribute count (the parts and the shapes sets have 13 each) load
    the same weights; only the names tell that the scores would mean other things.

    Args:
        trained: the checkpoint's attribute names (its dataset description).
        names: the data's attribute names, in its column order.
        path: the checkpoint's file, named in the error.
        where: the data, for the message (e.g. ``"demo data at .cache/mgmrn/demo"``).
    """
    from mgmrn.config import ConfigError

    trained, names = list(trained), list(names)
    for i in range(max(len(trained), len(names))):
        mine = trained[i] if i < len(trained) else None
        theirs = names[i] if i < len(names) else None
        if mine != theirs:
            raise ConfigError(
                f"checkpoint '{path}' was trained on other attributes than the {where}: "
                f"attribute {i + 1} is {mine!r} in the checkpoint but {theirs!r} in the data; "
                f"use it on the dataset it was trained on")


def checkpoint_inputs(saved: dict) -> dict:
    """The input normalisation and interpolation a checkpoint's network was trained with;
    ImageNet's, bilinear, where the file has none (a converted checkpoint of the published
    code, whose ResNet-101 was trained on them)."""
    inputs = saved.get("input")
    return dict(inputs) if isinstance(inputs, dict) else dict(IMAGENET_INPUTS)


def checkpoint_config(saved: dict, overrides: dict | None = None):
    """The config a loaded checkpoint was made with, ``overrides`` applied; weights from the file."""
    from mgmrn.config import from_dict

    values = _merge(saved["config"], overrides or {})
    # the weights are the checkpoint's: no pretrained ones are loaded, nor a file they came from
    values["model"] = {**values.get("model", {}), "pretrained": False, "pretrained_file": None}
    return from_dict(values)


def _merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied key by key, at any depth."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged

"""A checkpoint turned into a runnable network, once, for every command that runs one.

:meth:`LoadedRun.from_checkpoint` is the one door from a ``.pt`` file, or a model folder in
the Hub's format (:mod:`mgmrn.hub`), to a network on a device with its classes, input
transform, precision and calibration: ``mgmrn eval``, ``mgmrn predict`` (and :func:`mgmrn.load`),
``mgmrn compare``, ``mgmrn serve`` and its run view, ``mgmrn export``, ``mgmrn features``, and
the check that ``mgmrn convert-release`` makes of what it wrote. What a checkpoint holds is read
by :mod:`mgmrn.checkpoint` alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mgmrn import checkpoint as ckpt_io
from mgmrn.config import Config, ConfigError
from mgmrn.data.transforms import test_transform
from mgmrn.distributed import DistEnv, resolve_device
from mgmrn.evaluation import default_gamma
from mgmrn.inference.scoring import Inference
from mgmrn.models import build_model
from mgmrn.precision import Precision, resolve_precision

log = logging.getLogger(__name__)

Purpose = Literal["evaluate", "predict"]


@dataclass
class LoadedRun:
    """A trained network and what running it needs, read from one checkpoint.

    Attributes:
        path: the checkpoint file, or the model folder.
        config: the run's config, overrides applied (``model.pretrained`` off: every weight
            comes from the file).
        model: the network with its trained weights, on :attr:`device`, in eval mode and in the
            memory layout of :attr:`precision`.
        device: where it runs.
        precision: autocast dtype, memory layout and input statistics (see
            :meth:`from_checkpoint` for the purposes).
        inputs: the input normalisation and resize interpolation it was trained with.
        description: the dataset description saved with it (class and attribute names, class
            attributes (C, A), word vectors (A, E), seen and unseen class indices).
        gamma, gamma_source: the calibration prediction uses by default, and where it comes from.
        epochs_trained: epochs trained, counted from 1 (None: the file does not say).
    """

    path: Path
    config: Config
    model: nn.Module
    device: torch.device
    precision: Precision
    inputs: dict
    description: dict
    gamma: float
    gamma_source: str
    epochs_trained: int | None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        purpose: Purpose = "predict", overrides: dict | None = None,
                        env: DistEnv | None = None) -> LoadedRun:
        """Load ``path`` and place its network.

        Args:
            path: a checkpoint written by ``mgmrn train`` or ``mgmrn convert-release``, or a
                model folder written by ``mgmrn export --format hub``: ``local-dir:DIR`` or
                ``hf-hub:org/name`` (downloaded into the Hub's cache).
            device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``; None: the config's ``device``.
            purpose: ``evaluate`` runs at the precision training evaluates at (``train.amp``,
                ``train.channels_last``, on any device); ``predict`` at that precision on a GPU,
                without its gradient scaler, and in fp32 elsewhere.
            overrides: config values to change (nested dict), e.g. ``{"data": {"root": ...}}``.
            env: the torchrun environment, for the device of this process.
        """
        saved, path = ckpt_io.load_run_state(path)
        config = ckpt_io.checkpoint_config(saved, overrides)
        description = ckpt_io.checkpoint_description(saved, path)
        device = resolve_device(config.device if device is None else device, env)
        inputs = ckpt_io.checkpoint_inputs(saved)
        precision = run_precision(config, device, inputs, purpose)
        model = build_model(config.model, description["attribute_vectors"].float(),
                            image_size=config.data.image_size)
        ckpt_io.load_weights(model, saved["model"], path)
        model = place_model(model, device, precision).eval()
        gamma, source = default_gamma(ckpt_io.checkpoint_calibration(saved), config.eval.gamma)
        run = cls(path, config, model, device, precision, inputs, description, gamma, source,
                  ckpt_io.checkpoint_epochs_trained(saved))
        log.info("loaded %s (%s, epoch %s): %d classes (%d unseen), %d attributes, %d px, %s",
                 path, config.model.name, run.epochs_trained or "?",
                 len(description["class_names"]), len(description["unseen_classes"]),
                 len(description["attribute_names"]), config.data.image_size, device)
        return run

    @property
    def transform(self):
        """An image (PIL or (3, H, W) uint8) -> the (3, S, S) uint8 network input, as in
        evaluation; normalised on the device by :attr:`precision`."""
        cfg = self.config.data
        return test_transform(cfg.image_size, cfg.test_resize, normalize=False,
                              inputs=self.inputs)

    def inference(self, class_attributes: torch.Tensor | None = None,
                  cuda_graphs: bool = False) -> Inference:
        """The network ready to score batches against ``class_attributes`` (C, A) (default:
        the checkpoint's classes), with the checkpoint's test transform."""
        if class_attributes is None:
            class_attributes = self.description["class_attributes"]
        return Inference(self.model, class_attributes.float(), self.device, self.precision,
                         self.transform, cuda_graphs=cuda_graphs)

    def check_data(self, data) -> None:
        """Refuse data the network was not trained for: other attributes (by name and order), or
        another word-vector width (``data``: a :class:`~mgmrn.data.ZSLData`)."""
        expected = tuple(self.description["attribute_vectors"].shape)
        got = tuple(data.attribute_vectors.shape)
        if got != expected:
            raise ConfigError(
                f"checkpoint '{self.path}' was made for {expected[0]} attributes with "
                f"{expected[1]}-d vectors, but the data has {got[0]} attributes with {got[1]}-d "
                f"vectors; evaluate it on the dataset it was trained on")
        cfg = self.config.data
        ckpt_io.check_attribute_names(self.description["attribute_names"], data.attribute_names,
                                      self.path, f"{cfg.name} data at {cfg.root}")


def run_precision(config: Config, device: torch.device, inputs: dict | None,
                  purpose: Purpose) -> Precision:
    """The precision a loaded network runs at: for ``evaluate``, that training evaluates at
    (``train.amp``, ``train.channels_last``, see :func:`~mgmrn.precision.resolve_precision`); for
    ``predict``, the same on a GPU and fp32, contiguous elsewhere; never a gradient scaler.
    ``inputs``: the checkpoint's input statistics."""
    if purpose == "predict" and device.type != "cuda":
        return Precision(inputs=inputs)
    return replace(resolve_precision(config, device, inputs), scaler=None)


def place_model(model: nn.Module, device: torch.device, precision: Precision) -> nn.Module:
    """``model`` on ``device`` in the memory layout of ``precision``, as training leaves it."""
    layout = torch.channels_last if precision.channels_last else torch.preserve_format
    return model.to(device, memory_format=layout)

"""The one forward pass of a trained network, shared by evaluation, prediction, the explorer and
``mgmrn compare``.

:class:`Inference` holds what scoring a batch needs: the network, the class attributes on the
device, the precision policy (autocast dtype, memory layout, input normalisation) and the test
transform of the checkpoint. A batch of uint8 images (as the test transform gives them) is
normalised on the device, as in evaluation; a float batch is taken as already normalised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from mgmrn.config import Config
from mgmrn.data.transforms import denormalize, test_transform
from mgmrn.models.mgmrn import ZSLOutput
from mgmrn.precision import Precision, resolve_precision


@dataclass
class Scores:
    """What the network says of a batch of B images.

    Attributes:
        logits: (B, C') fp32 class scores over the classes asked for: per level tau-scaled
            cosines, summed over levels.
        attributes: (B, A) fp32 attribute scores, the mean over levels.
        output: the network's own output, with its attention maps, when attention was asked
            for; None otherwise.
    """

    logits: torch.Tensor
    attributes: torch.Tensor
    output: ZSLOutput | None = None


def _forward(model: nn.Module, images: torch.Tensor, class_attributes: torch.Tensor,
             precision: Precision, device: torch.device, cache: bool = True,
             attention: bool = False) -> tuple[torch.Tensor, torch.Tensor, ZSLOutput]:
    """Class scores (B, C) and level-mean attribute scores (B, A), in fp32, and the output."""
    with precision.autocast(device, cache):
        images = precision.prepare(images, device)
        out = (model(images, class_attributes, return_attention=True) if attention
               else model(images, class_attributes))
    return out.logits.float(), torch.stack(out.attribute_scores).float().mean(0), out


class GraphedInference:
    """Forward passes over every class captured once as a CUDA graph and replayed.

    The first batch runs eagerly on a side stream (cuDNN picks its algorithms), then is captured
    with its input normalisation and replayed; later batches of its shape are copied into the
    captured input and replayed. A batch of another shape (the last, shorter one) runs eagerly.
    Weights are read where they live, so a graph follows training updates.

    Args:
        model: the network, in eval mode; its forward must not read values back to the host.
        class_attributes: (C, A) on the device.
        precision, device: as for :class:`Inference`.
    """

    def __init__(self, model: nn.Module, class_attributes: torch.Tensor, precision: Precision,
                 device: torch.device):
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        self.model, self.class_attributes = model, class_attributes
        self.precision, self.device = precision, device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _forward(self, images: torch.Tensor, cache: bool = True):
        logits, attributes, _ = _forward(self.model, images, self.class_attributes,
                                         self.precision, self.device, cache)
        return logits, attributes

    def _capture(self, images: torch.Tensor) -> None:
        static_images = torch.empty(images.shape, dtype=images.dtype, device=self.device)
        static_images.copy_(images)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._forward(static_images, cache=False)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            outputs = self._forward(static_images, cache=False)
        self.static = (static_images, outputs)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, H, W) on the host or device -> class scores (B, C), attributes (B, A)."""
        if self.graph is None:
            self._capture(images)
        static_images, outputs = self.static
        if images.shape != static_images.shape or images.dtype != static_images.dtype:
            return self._forward(images)
        static_images.copy_(images, non_blocking=True)
        self.graph.replay()
        return tuple(t.clone() for t in outputs)


class Inference:
    """A trained network ready to score batches of images.

    Args:
        model: the network (Mg-MRN or the baseline, possibly wrapped by DistributedDataParallel
            or compiled), on ``device``; it is put in eval mode.
        class_attributes: (C, A) class attribute vectors; kept on ``device``.
        device: where the network runs.
        precision: autocast dtype, memory layout of the inputs and their normalisation; None:
            fp32, contiguous, ImageNet's statistics.
        transform: image (PIL or (3, H, W) uint8) -> (3, S, S) uint8 network input, the test
            transform of the checkpoint; None where the inputs come transformed.
        cuda_graphs: replay the forward passes over every class without attention from a CUDA
            graph (:class:`GraphedInference`).
    """

    def __init__(self, model: nn.Module, class_attributes: torch.Tensor, device: torch.device,
                 precision: Precision | None = None, transform: Callable | None = None,
                 cuda_graphs: bool = False):
        self.model = model.eval()
        self.device = torch.device(device)
        self.class_attributes = class_attributes.to(self.device)
        self.precision = precision or Precision()
        self.transform = transform
        self.graphed = None
        if cuda_graphs:
            # the forward of the network itself: a DDP wrapper would sync buffers inside the graph
            network = model.module if isinstance(model, nn.parallel.DistributedDataParallel) \
                else model
            self.graphed = GraphedInference(network, self.class_attributes, self.precision,
                                            self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, classes: torch.Tensor | None = None,
                 attention: bool = False) -> Scores:
        """Score a batch.

        Args:
            images: (B, 3, H, W) uint8 images (normalised on the device) or normalised floats,
                on the host or the device.
            classes: (C',) indices of the classes to score; None: all C.
            attention: also return the network's output with its attention maps.

        Returns:
            :class:`Scores` on the device; ``logits`` (B, C') in the order of ``classes``.
        """
        if self.graphed is not None and classes is None and not attention:
            return Scores(*self.graphed(images))
        attributes = self.class_attributes
        if classes is not None:
            attributes = attributes[torch.as_tensor(classes, device=self.device)]
        logits, strength, output = _forward(self.model, images, attributes, self.precision,
                                            self.device, attention=attention)
        return Scores(logits, strength, output if attention else None)

    def pictures(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) network inputs, uint8 or normalised -> the pictures in [0, 1] on the CPU."""
        if images.dtype == torch.uint8:
            return images.float().cpu() / 255.0
        return denormalize(images.float(), self.precision.inputs).cpu()


def prediction_precision(cfg: Config, device: torch.device, inputs: dict | None) -> Precision:
    """The precision predictions run at: on a GPU that of evaluation (``train.amp``,
    ``train.channels_last``, see :func:`~mgmrn.precision.resolve_precision`), without its
    gradient scaler; elsewhere fp32 and contiguous. ``inputs``: the checkpoint's statistics."""
    if device.type != "cuda":
        return Precision(inputs=inputs)
    return replace(resolve_precision(cfg, device, inputs), scaler=None)


def place_model(model: nn.Module, device: torch.device, precision: Precision) -> nn.Module:
    """``model`` on ``device`` in the memory layout of ``precision``, as training leaves it."""
    layout = torch.channels_last if precision.channels_last else torch.preserve_format
    return model.to(device, memory_format=layout)


def checkpoint_inference(model: nn.Module, class_attributes: torch.Tensor, cfg: Config,
                         device: torch.device, inputs: dict | None) -> Inference:
    """The :class:`Inference` of a network loaded from a checkpoint, for prediction.

    Args:
        model: the network with its trained weights.
        class_attributes: (C, A) class attribute vectors.
        cfg: the checkpoint's config (``data.image_size``, ``data.test_resize``, ``train.amp``,
            ``train.channels_last``).
        device: where the network runs.
        inputs: the checkpoint's input statistics and interpolation (None: ImageNet's).
    """
    precision = prediction_precision(cfg, device, inputs)
    transform = test_transform(cfg.data.image_size, cfg.data.test_resize, normalize=False,
                               inputs=inputs)
    return Inference(place_model(model, device, precision), class_attributes.float(), device,
                     precision, transform)

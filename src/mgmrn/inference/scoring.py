"""The one forward pass of a trained network, shared by evaluation, prediction, the explorer and
``mgmrn compare``.

:class:`Inference` holds what scoring a batch needs: the network, the class attributes on the
device, the precision policy (autocast dtype, memory layout, input normalisation) and the test
transform of the checkpoint. A batch of uint8 images (as the test transform gives them) is
normalised on the device, as in evaluation; a float batch is taken as already normalised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from mgmrn.data.transforms import denormalize
from mgmrn.distributed import all_gather_variable
from mgmrn.models.mgmrn import ZSLOutput
from mgmrn.precision import Precision, capture_graph, run_on_side_stream


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


def forward_scores(model: nn.Module, images: torch.Tensor, class_attributes: torch.Tensor,
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
        logits, attributes, _ = forward_scores(self.model, images, self.class_attributes,
                                         self.precision, self.device, cache)
        return logits, attributes

    def _capture(self, images: torch.Tensor) -> None:
        static_images = torch.empty(images.shape, dtype=images.dtype, device=self.device)
        static_images.copy_(images)
        run_on_side_stream(lambda: self._forward(static_images, cache=False), self.device)
        self.graph, outputs = capture_graph(lambda: self._forward(static_images, cache=False))
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
        logits, strength, output = forward_scores(self.model, images, attributes, self.precision,
                                            self.device, attention=attention)
        return Scores(logits, strength, output if attention else None)

    def pictures(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) network inputs, uint8 or normalised -> the pictures in [0, 1] on the CPU."""
        if images.dtype == torch.uint8:
            return images.float().cpu() / 255.0
        return denormalize(images.float(), self.precision.inputs).cpu()


def network_levels(model: nn.Module) -> tuple[str, ...]:
    """The level names of a network, also when wrapped by DistributedDataParallel or compile."""
    while not hasattr(model, "levels"):
        model = getattr(model, "module", None) or model._orig_mod
    return tuple(model.levels)


@torch.no_grad()
def predict_logits(model: nn.Module, loader, class_attributes: torch.Tensor,
                   device: torch.device, precision: Precision | None = None,
                   show_progress: bool = True, desc: str = "eval",
                   cuda_graphs: bool = False) -> tuple[torch.Tensor, ...]:
    """Scores of every image in ``loader``, through :class:`Inference`, gathered over processes.

    Args:
        model: the network (possibly wrapped by DistributedDataParallel or compiled).
        loader: batches (images (B, 3, H, W), labels (B,)); uint8 images are normalised on the
            device by ``precision``.
        class_attributes: (C, A) class attribute vectors.
        cuda_graphs: replay the forward pass of full batches from a CUDA graph
            (:class:`GraphedInference`).

    Returns:
        Class scores (N, C), labels (N,) and level-mean attribute scores (N, A), on the CPU.
    """
    inference = Inference(model, class_attributes, device, precision, cuda_graphs=cuda_graphs)
    logits, labels, attributes = [], [], []
    for images, y in tqdm(loader, desc=desc, leave=False, disable=not show_progress,
                          dynamic_ncols=True):
        scores = inference(images)
        logits.append(scores.logits)
        attributes.append(scores.attributes)
        labels.append(y.to(device))
    if not logits:
        count, width = inference.class_attributes.shape
        logits, attributes = [torch.zeros(0, count, device=device)], [torch.zeros(0, width,
                                                                                  device=device)]
        labels = [torch.zeros(0, dtype=torch.long, device=device)]
    return tuple(all_gather_variable(torch.cat(t)).cpu() for t in (logits, labels, attributes))

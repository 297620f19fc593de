"""One training epoch as a plain function, and the CUDA-graph replay of its steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from mgmrn.errors import MgmrnError
from mgmrn.inference.scoring import network_levels
from mgmrn.precision import Precision, capture_graph, run_on_side_stream
from mgmrn.training.losses import ZSLCriterion


class NonFiniteLossError(MgmrnError, RuntimeError):
    """Training produced a NaN or infinite loss."""


def _losses(model: nn.Module, images, labels, criterion: ZSLCriterion, precision, device,
            cache: bool = True) -> list[torch.Tensor]:
    with precision.autocast(device, cache):
        return criterion(model(images, criterion.class_attributes), labels)


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, precision: Precision) -> None:
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is not None:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        loss.backward()
        optimizer.step()


class LossReader:
    """Reads each step's losses one step late, so that the host never waits for the device.

    Reading a loss as a number waits until the device has computed it; done inside every step, it
    drains the device's queue once per step. Here a step's losses are copied to host memory
    without waiting, and read (and checked) when the next step has been queued, or at ``flush``.
    """

    def __init__(self, levels, epoch: int):
        self.levels, self.epoch = levels, epoch
        self.pending: tuple | None = None

    def push(self, losses: torch.Tensor, batch: int, levels=None) -> list[float]:
        """Queue ``losses`` (L,) of ``batch``; returns the values queued before, if any."""
        losses = losses.detach()
        event = None
        if losses.is_cuda:
            host = torch.empty(losses.shape, dtype=losses.dtype, pin_memory=True)
            host.copy_(losses, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            losses = host
        previous, self.pending = self.pending, (losses, event, batch, levels or self.levels)
        return self._read(previous)

    def flush(self) -> list[float]:
        """The values still queued."""
        previous, self.pending = self.pending, None
        return self._read(previous)

    def _read(self, item) -> list[float]:
        if item is None:
            return []
        losses, event, batch, levels = item
        if event is not None:
            event.synchronize()
        values = losses.tolist()
        for name, value in zip(levels, values):
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"non-finite loss ({value}) at epoch {self.epoch}, batch {batch}, level "
                    f"'{name}'; lower train.lr or try train.amp=none; the last good checkpoint "
                    f"was left in place")
        return values


@dataclass
class EpochProgress:
    """How far an epoch got: ``train_one_epoch`` starts from it and updates it in place.

    Attributes:
        batches: batches of the epoch done.
        loss_sums: (L,) summed losses per level of those batches (empty: none yet).
        stopped: the epoch was cut short by ``stop``.
    """

    batches: int = 0
    loss_sums: list[float] = field(default_factory=list)
    stopped: bool = False


class GraphedStep:
    """Forward and backward of the fused schedule, captured once as a CUDA graph and replayed.

    An eager step launches its few thousand kernels one by one, and at 448 px the host takes
    about as long to launch them as the device takes to run them. A replay launches them all at
    once. Every call is a real training step:

    - the first ``warmup`` calls run eagerly on a side stream (cuDNN picks its algorithms, the
      autograd engine and the optimizer create their state);
    - the next call captures the step on its batch and replays it;
    - later calls copy their batch into the captured input tensors and replay.

    The optimizer steps outside the graph, so learning-rate schedules work unchanged. The
    gradients live in the graph's memory: callers must not set them to None between steps. A
    batch of another shape runs eagerly into the same gradient tensors.

    Args:
        model: the network; its forward must not read values back to the host.
        criterion: the training loss, its class attributes on the device.
        precision, device: as for ``train_one_epoch``.
        warmup: eager steps before the capture.
    """

    def __init__(self, model: nn.Module, criterion: ZSLCriterion, precision: Precision,
                 device: torch.device, warmup: int = 3):
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        if precision.scaler is not None:
            raise ValueError("CUDA graphs do not support the fp16 gradient scaler; use bf16")
        self.model, self.criterion = model, criterion
        self.precision, self.device = precision, device
        self.warmup = warmup
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _forward_backward(self, images, labels, cache: bool = True) -> torch.Tensor:
        losses = _losses(self.model, images, labels, self.criterion, self.precision, self.device,
                         cache)
        sum(losses).backward()
        return torch.stack([loss.detach() for loss in losses])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One step's forward and backward: losses (L,); gradients are left in ``.grad``."""
        if self.graph is not None:
            static_images, static_labels, static_losses = self.static
            if images.shape == static_images.shape and labels.shape == static_labels.shape:
                static_images.copy_(images)
                static_labels.copy_(labels)
                self.graph.replay()
                return static_losses
            self.model.zero_grad(set_to_none=False)  # keep the graph's gradient tensors
            return self._forward_backward(images, labels)
        if self.eager_steps < self.warmup:
            self.eager_steps += 1

            def eager():
                self.model.zero_grad(set_to_none=True)
                # as captured: compiled regions then see the same autocast state and are not
                # compiled again during the capture
                return self._forward_backward(images, labels, cache=False)
            return run_on_side_stream(eager, self.device).clone()
        static_images = images.clone()
        static_labels = labels.clone()
        self.model.zero_grad(set_to_none=True)  # the graph allocates the gradients
        self.graph, static_losses = capture_graph(
            lambda: self._forward_backward(static_images, static_labels, cache=False))
        self.static = (static_images, static_labels, static_losses)
        self.graph.replay()
        return static_losses


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
                    criterion: ZSLCriterion, device: torch.device, epoch: int,
                    schedule: str = "fused", precision: Precision | None = None,
                    show_progress: bool = True, graphed: GraphedStep | None = None,
                    stop: Callable[[], bool] | None = None,
                    progress: EpochProgress | None = None,
                    after_batch: Callable[[], None] | None = None) -> dict:
    """Train for one pass over ``loader``.

    ``fused`` runs one forward pass per batch and steps once on the sum of the level losses;
    ``alternating`` (the published schedule) runs, per level, a full forward pass at the current
    weights, that level's loss, backward and an optimizer step.

    Args:
        criterion: the training loss; labels index its class attributes (the seen classes).
        graphed: run the fused steps' forward and backward through this CUDA graph (built for
            the same model, criterion and precision); kept across epochs.
        stop: asked after every completed step but the last (optimizer stepped); True ends the
            epoch there, with its losses read and ``progress.stopped`` set.
        progress: an epoch resumed part way (``loader`` yields only its remaining batches); it
            is updated in place, so that a stopped epoch can be saved and resumed.
        after_batch: called after each batch's optimizer step(s) (a per-batch lr schedule).

    Returns:
        mean loss per level (named by the network's levels), total mean loss (over all batches
        of the epoch, those before a resume included), images per second.
    """
    precision = precision or Precision()
    model.train()
    criterion = criterion.to(device)
    levels = network_levels(model)
    reader = LossReader(levels, epoch)
    progress = progress if progress is not None else EpochProgress()
    sums = torch.tensor(progress.loss_sums or [0.0] * len(levels), dtype=torch.float64)
    read = first = progress.batches
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not show_progress,
               dynamic_ncols=True)

    def add(values: list[float]) -> None:
        nonlocal read
        if values:
            sums.add_(torch.tensor(values, dtype=torch.float64))
            read += 1

    for batch, (images, labels) in enumerate(bar, start=first):
        images, labels = precision.prepare(images, device), labels.to(device, non_blocking=True)
        if schedule == "fused" and graphed is not None:
            add(reader.push(graphed(images, labels), batch))
            optimizer.step()
        elif schedule == "fused":
            losses = _losses(model, images, labels, criterion, precision, device)
            add(reader.push(torch.stack([loss.detach() for loss in losses]), batch))
            _step(sum(losses), optimizer, precision)
        else:
            level_values = []
            for level in range(len(levels)):
                level_losses = _losses(model, images, labels, criterion, precision, device)
                level_values += reader.push(level_losses[level][None], batch,
                                             levels[level:level + 1])
                _step(level_losses[level], optimizer, precision)
            add(level_values + reader.flush())
        if after_batch is not None:
            after_batch()
        seen += images.shape[0]
        if show_progress and read:
            rate = seen / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{sums.sum().item() / read:.3f}", img_s=f"{rate:.1f}")
        # not after the last step: that epoch ends as usual, evaluated and saved
        if stop is not None and batch + 1 < first + len(loader) and stop():
            progress.stopped = True
            break
    add(reader.flush())
    progress.batches, progress.loss_sums = read, sums.tolist()
    n = max(1, read)
    result = {f"loss_{name}": (sums[i] / n).item() for i, name in enumerate(levels)}
    result["loss"] = (sums.sum() / n).item()
    result["train_images_per_s"] = seen / (time.perf_counter() - start)
    return result

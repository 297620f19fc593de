"""One training epoch and one evaluation pass, as plain functions."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from .distributed import all_gather_variable
from .losses import level_loss


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass
class Precision:
    """How tensors are computed: autocast dtype (None = fp32), channels_last, gradient scaler."""

    dtype: torch.dtype | None = None
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def prepare(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def _losses(model: nn.Module, images, labels, class_attributes, lam, precision, device):
    with precision.autocast(device):
        out = model(images, class_attributes)
        return [level_loss(c.float(), a.float(), class_attributes, labels, lam)
                for c, a in zip(out.class_scores, out.attribute_scores)]


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, precision: Precision) -> None:
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is not None:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        loss.backward()
        optimizer.step()


def _check_finite(losses: list[torch.Tensor], levels, epoch: int, batch: int) -> list[float]:
    """The losses as floats (one device sync for all), or an error naming the first bad one."""
    values = torch.stack([loss.detach() for loss in losses]).tolist()
    for name, value in zip(levels, values):
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"non-finite loss ({value}) at epoch {epoch}, batch {batch}, level "
                f"'{name}'; lower train.lr or try train.amp=none; the last good checkpoint "
                f"was left in place")
    return values


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
                    class_attributes: torch.Tensor, lam: float, device: torch.device,
                    epoch: int, schedule: str = "fused", levels=("fine", "middle", "coarse"),
                    precision: Precision | None = None, show_progress: bool = True) -> dict:
    """Train for one pass over ``loader``.

    ``fused`` runs one forward pass per batch and steps once on the sum of the level losses;
    ``alternating`` (the published schedule) runs a full forward, backward and step per level.

    Args:
        class_attributes: (S, A) attributes of the seen classes; labels index them.

    Returns:
        mean loss per level, total mean loss, images per second.
    """
    precision = precision or Precision()
    model.train()
    class_attributes = class_attributes.to(device)
    sums = torch.zeros(len(levels))
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not show_progress,
               dynamic_ncols=True)
    for batch, (images, labels) in enumerate(bar):
        images, labels = precision.prepare(images, device), labels.to(device)
        if schedule == "fused":
            losses = _losses(model, images, labels, class_attributes, lam, precision, device)
            values = _check_finite(losses, levels, epoch, batch)
            _step(sum(losses), optimizer, precision)
        else:
            values = []
            for level in range(len(levels)):
                level_losses = _losses(model, images, labels, class_attributes, lam,
                                       precision, device)
                values += _check_finite(level_losses[level:level + 1], levels[level:], epoch,
                                        batch)
                _step(level_losses[level], optimizer, precision)
        sums += torch.tensor(values)
        seen += images.shape[0]
        rate = seen / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{sums.sum().item() / (batch + 1):.3f}", img_s=f"{rate:.1f}")
    n = max(1, len(loader))
    result = {f"loss_{name}": (sums[i] / n).item() for i, name in enumerate(levels)}
    result["loss"] = (sums.sum() / n).item()
    result["train_images_per_s"] = seen / (time.perf_counter() - start)
    return result


@torch.no_grad()
def predict_logits(model: nn.Module, loader, class_attributes: torch.Tensor,
                   device: torch.device, precision: Precision | None = None,
                   show_progress: bool = True, desc: str = "eval") -> tuple[torch.Tensor, ...]:
    """Class scores (N, C) and labels (N,) of every image in ``loader``, gathered over processes.

    Also returns the summed-level attribute scores (N, A).
    """
    precision = precision or Precision()
    model.eval()
    class_attributes = class_attributes.to(device)
    logits, labels, attributes = [], [], []
    for images, y in tqdm(loader, desc=desc, leave=False, disable=not show_progress,
                          dynamic_ncols=True):
        with precision.autocast(device):
            out = model(precision.prepare(images, device), class_attributes)
        logits.append(out.logits.float())
        attributes.append(torch.stack(out.attribute_scores).float().mean(0))
        labels.append(y.to(device))
    if not logits:
        empty = torch.zeros(0, class_attributes.shape[0], device=device)
        logits, attributes = [empty], [torch.zeros(0, class_attributes.shape[1], device=device)]
        labels = [torch.zeros(0, dtype=torch.long, device=device)]
    return tuple(all_gather_variable(torch.cat(t)).cpu() for t in (logits, labels, attributes))

"""The optimizer and learning-rate schedule of ``mgmrn train``: parameter groups and when lr changes.

By default (and in every ``*-release`` recipe) this is the published recipe: one group of every
trainable parameter, SGD or AdamW, and a StepLR stepped once per epoch. Fine-tuning a pretrained
backbone asks for more, built with timm's own rules (``timm.optim``'s
``param_groups_layer_decay`` and ``param_groups_weight_decay``, the model's ``group_matcher``
and ``no_weight_decay``):

- ``train.backbone_lr_scale``: the pretrained backbone (``backbone.body``) learns at
  ``lr * scale``; the heads, new, at ``lr``;
- ``train.layer_decay``: block or stage ``i`` (from 1; 0 the stem) of a backbone with ``n`` gets
  ``layer_decay ** (n + 1 - i)`` of the backbone's lr, the heads count as layer ``n + 1``
  (BEiT's rule, as timm applies it);
- ``train.decay_exclusions``: no weight decay for 1-D parameters (norms, biases), position
  embeddings, cls/register tokens and the model's ``no_weight_decay()`` names;
- ``train.heads_only_epochs``: the backbone's groups learn at 0 for these epochs, the new heads
  alone on the pretrained features, then all follow the schedule (linear probing, then
  fine-tuning: LP-FT, Kumar et al., ICLR 2022);
- ``train.scheduler=cosine``, ``train.warmup_epochs`` and ``train.heads_only_epochs``: the
  learning rate is set every batch.
"""

from __future__ import annotations

import math
import re
import warnings

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from mgmrn.config import Config
from mgmrn.models.backbone_groups import NamedParameters

# beside the backbone's own no_weight_decay() names: embeddings and tokens of any depth
NO_DECAY_PATTERNS = ("*pos_embed*", "*cls_token*", "*reg_token*", "*dist_token*",
                     "*relative_position_bias_table*", "*absolute_pos_embed*")
HEAD_PREFIX = "mgmrn."  # the heads' names in timm's grouping: matched by no backbone rule


def published_recipe(cfg: Config) -> bool:
    """One group of every parameter and an epoch StepLR: the published recipe's optimizer."""
    train = cfg.train
    return (train.backbone_lr_scale == 1.0 and train.layer_decay in (None, 1.0)
            and not train.decay_exclusions and train.scheduler == "step"
            and train.warmup_epochs == 0 and train.heads_only_epochs == 0)


def parameter_groups(model: nn.Module, cfg: Config) -> list[dict]:
    """The optimizer's parameter groups for ``model`` under ``cfg.train``.

    Returns:
        groups with ``params``, ``lr`` (absolute), ``weight_decay``, ``lr_scale`` (of ``lr``),
        ``part`` (``backbone``/``heads``) and ``name`` (the part, the layer's scale, the weight
        decay); one group of every trainable parameter for the published recipe.
    """
    train = cfg.train
    trainable = [p for p in model.parameters() if p.requires_grad]
    if published_recipe(cfg):
        return [{"params": trainable}]
    named, matcher, no_decay, backbone = _timm_view(model)
    view = NamedParameters(named, matcher)
    patterns = sorted(no_decay) + list(NO_DECAY_PATTERNS) if train.decay_exclusions else ()
    if train.layer_decay not in (None, 1.0):
        groups = param_groups_layer_decay(view, weight_decay=train.weight_decay,
                                          no_weight_decay_list=patterns,
                                          weight_decay_exclude_1d=train.decay_exclusions,
                                          layer_decay=train.layer_decay)
    else:
        groups = param_groups_weight_decay(view, weight_decay=train.weight_decay,
                                           weight_decay_exclude_1d=train.decay_exclusions,
                                           no_weight_decay_list=patterns)
    out = []
    for group in groups:
        scale = group.get("lr_scale", 1.0)
        for part, params in (("backbone", [p for p in group["params"] if id(p) in backbone]),
                             ("heads", [p for p in group["params"] if id(p) not in backbone])):
            if not params:
                continue
            part_scale = scale * (train.backbone_lr_scale if part == "backbone" else 1.0)
            out.append({"params": params, "lr": train.lr * part_scale,
                        "weight_decay": group["weight_decay"], "lr_scale": part_scale,
                        "part": part,
                        "name": f"{part} x{part_scale:.4g} wd {group['weight_decay']:g}"})
    return out


def _timm_view(model: nn.Module):
    """``model``'s trainable parameters named for timm's rules: the backbone's as the whole timm
    model names them, the heads' under :data:`HEAD_PREFIX` (the last layer); the backbone's
    ``group_matcher`` and ``no_weight_decay`` names; the ids of the backbone's parameters."""
    backbone = getattr(model, "backbone", None)
    body = getattr(backbone, "body", None)
    names = backbone.timm_names() if hasattr(backbone, "timm_names") else None
    in_body = {id(p): n for n, p in body.named_parameters()} if names is not None else {}
    named = []
    for n, p in model.named_parameters():
        if p.requires_grad:
            named.append((names.names[in_body[id(p)]] if id(p) in in_body else HEAD_PREFIX + n, p))
    if names is None:
        return named, None, set(), set()
    return named, names.matcher, names.no_weight_decay, set(in_body)


def build_optimizer(model: nn.Module, cfg: Config, device: torch.device):
    """The optimizer and learning-rate scheduler ``mgmrn train`` uses for ``model``.

    SGD (``train.optimizer=sgd``, as published: momentum, weight decay, no dampening, no
    Nesterov) or AdamW over :func:`parameter_groups`. The published recipe's scheduler is a
    StepLR of ``train.lr_step`` epochs and factor ``train.lr_gamma``, stepped per epoch (see
    :func:`scheduler_epoch_start` and :func:`scheduler_epoch_end`); with a warm-up or
    ``train.scheduler=cosine`` it is a LambdaLR stepped after every batch
    (:func:`scheduler_batch_end`).
    """
    groups = parameter_groups(model, cfg)
    # on CUDA one fused kernel updates every parameter, instead of a pass per term of the update;
    # not for the alternating schedule, whose steps leave some gradients unset, which the fused
    # kernels of some torch releases refuse
    fused = True if device.type == "cuda" and cfg.train.schedule == "fused" else None
    params = groups[0]["params"] if len(groups) == 1 and len(groups[0]) == 1 else groups
    if cfg.train.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                      fused=fused)
    else:
        optimizer = torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum,
                                    weight_decay=cfg.train.weight_decay, fused=fused)
    if per_batch(cfg):
        factors = [lr_factor(cfg, backbone=g.get("part") == "backbone")
                   for g in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.train.lr_step,
                                                    gamma=cfg.train.lr_gamma)
    return optimizer, scheduler


def describe_groups(optimizer: torch.optim.Optimizer) -> str:
    """The parameter groups in one line: their count, learning rates and weight decays."""
    groups = optimizer.param_groups
    tensors = sum(len(g["params"]) for g in groups)
    if len(groups) == 1:
        g = groups[0]
        return (f"{type(optimizer).__name__}, one group of {tensors} tensors, lr {g['lr']:.3g}, "
                f"weight decay {g['weight_decay']:g}")
    lrs = sorted({g["lr"] for g in groups})
    no_decay = sum(len(g["params"]) for g in groups if not g["weight_decay"])
    return (f"{type(optimizer).__name__}, {len(groups)} groups of {tensors} tensors, lr "
            f"{lrs[0]:.3g} to {lrs[-1]:.3g}, no weight decay for {no_decay} tensors")


def per_batch(cfg: Config) -> bool:
    """Whether the learning rate is set every batch (a warm-up, heads-only epochs or the cosine
    schedule)."""
    train = cfg.train
    return train.scheduler == "cosine" or train.warmup_epochs > 0 or train.heads_only_epochs > 0


def lr_factor(cfg: Config, backbone: bool = False):
    """``factor(step) -> float``: the learning rate of batch ``step`` (from 0, over the run) as a
    fraction of each group's own lr. A linear warm-up over ``warmup_epochs`` (batch ``s`` of
    ``w`` at ``(s + 1) / w``), then a half cosine to 0 at the last batch, or the step decay of
    ``lr_step``/``lr_gamma`` by epoch (``lr_step_at`` as in :func:`scheduler_epoch_start`).
    A ``backbone`` group's factor is 0 for the batches of ``heads_only_epochs``."""
    train = cfg.train
    per_epoch = train.batches_per_epoch
    total = train.epochs * per_epoch
    warm = round(train.warmup_epochs * per_epoch)
    held = round(train.heads_only_epochs * per_epoch) if backbone else 0
    early = 1 if train.lr_step_at == "start" else 0

    def factor(step: int) -> float:
        if step < held:
            return 0.0
        if step < warm:
            return (step + 1) / warm
        if train.scheduler == "cosine":
            progress = (step - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return train.lr_gamma ** ((step // per_epoch + early) // train.lr_step)

    return factor


def scheduler_epoch_start(scheduler, cfg: Config, resumed: bool = False) -> None:
    """Before an epoch's first batch: with ``train.lr_step_at=start``, the published order, the
    scheduler steps here, so the learning rate decays one epoch early (epoch e, from 0, runs at
    lr * gamma^floor((e + 1) / step)). An epoch resumed part way has taken its step already."""
    if cfg.train.lr_step_at != "start" or resumed or per_batch(cfg):
        return
    with warnings.catch_warnings():
        # PyTorch warns when a scheduler steps before the optimizer: that is the point here
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        scheduler.step()


def scheduler_epoch_end(scheduler, cfg: Config) -> None:
    """After an epoch's last batch: with ``train.lr_step_at=end`` the scheduler steps here, so
    epoch e, from 0, runs at lr * gamma^floor(e / step)."""
    if cfg.train.lr_step_at == "end" and not per_batch(cfg):
        scheduler.step()


def scheduler_batch_end(scheduler, cfg: Config) -> None:
    """After every batch's optimizer step(s): the per-batch schedules move one batch on."""
    if per_batch(cfg):
        scheduler.step()

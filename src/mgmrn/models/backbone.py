"""Multi-stage feature extractor: a timm backbone cut at strides 8, 16 and 32.

Two kinds of timm model are taken, told apart by timm's ``feature_info``:

- **hierarchical** (CNNs: ResNet, ConvNeXt, EfficientNet, RegNet, MobileNet; transformers with
  stages: Swin, Swin-V2, MaxViT, ...): ``features_only`` stages at strides 8, 16 and 32. Stages
  that timm returns channels-last (``output_fmt`` NHWC, as Swin's) are permuted to (B, C, H, W).
- **plain** ViTs (DeiT, DINOv2, EVA, CLIP image towers), whose blocks all keep one stride, the
  patch size p: three blocks at increasing depth, made into strides p/2, p and 2p by a
  :class:`~mgmrn.models.pyramid.SimpleFeaturePyramid`.

Models with a fixed input size (timm's ``fixed_input_size``: ViTs, Swin, MaxViT) are built for
the run's image size; timm resizes their position embeddings when it loads pretrained weights.
"""

from __future__ import annotations

import logging

import timm
import torch
from torch import nn

from mgmrn.models.backbone_groups import TimmNames, freeze_first, layer_count
from mgmrn.models.backbone_spec import (
    IMAGENET_INPUTS,
    BackboneError,
    BackboneSpec,
    creation_args,
    describe_backbone,
)
from mgmrn.models.pyramid import SimpleFeaturePyramid
from mgmrn.models.weights import PretrainedWeightsError, create_pretrained

log = logging.getLogger(__name__)

__all__ = ["Backbone", "BackboneError", "BackboneSpec", "IMAGENET_INPUTS", "PretrainedWeightsError",
           "describe_backbone", "input_config"]


class Backbone(nn.Module):
    """Image -> feature maps at strides 8, 16 and 32 (fine, middle, coarse).

    Args:
        name: a timm model (hierarchical with ``features_only``, or a plain ViT); a bare name takes
            torchvision's ImageNet weights where timm has them (``resnet101`` ->
            ``resnet101.tv_in1k``), otherwise timm's default tag.
        pretrained: load pretrained weights (hub cache, URL, or ``pretrained_file``), strictly:
            weights that do not fit are refused (:mod:`mgmrn.models.weights`).
        pretrained_file: local weights file (timm or torchvision state dict); implies
            ``pretrained``.
        finetune: False freezes the timm model and keeps its batch-norm statistics fixed (a
            plain ViT's pyramid adapter, new, still trains).
        freeze: freeze the stem (patch embedding) and the first ``freeze`` blocks (plain ViTs)
            or stages (hierarchical models), their batch-norm statistics too; 0: none.
        grad_checkpointing: recompute the timm model's blocks or stages in the backward pass
            instead of keeping their activations (timm's ``set_grad_checkpointing``).
        model_args: further arguments of ``timm.create_model`` (e.g. ``layers`` and
            ``channels`` of a ResNet, ``depth`` of a ViT).
        image_size: the side of the input images, for models built for one size; None: timm's
            default.

    Raises:
        BackboneError: the model cannot give three levels at this image size (the message names
            the rule and sizes that work).
    """

    def __init__(self, name: str = "resnet101", pretrained: bool = True,
                 pretrained_file: str | None = None, finetune: bool = True,
                 model_args: dict | None = None, image_size: int | None = None,
                 freeze: int = 0, grad_checkpointing: bool = False):
        super().__init__()
        self.spec = describe_backbone(name, model_args, image_size)
        self.name = self.spec.name
        kwargs = creation_args(self.name, model_args or {}, image_size, self.spec)
        self._kwargs = kwargs
        # hierarchical: all stages are built (the earlier ones are computed anyway); three are kept
        self.weights = {"source": "random", "name": self.name}
        if pretrained or pretrained_file is not None:
            self.body, self.weights = create_pretrained(
                self.name, pretrained_file, kwargs, lambda body: self._timm_names(body).used)
        else:
            self.body = timm.create_model(self.name, pretrained=False, **kwargs)
        plain = self.spec.kind == "plain"
        # a plain ViT is built to return only its three blocks
        self.indices = [0, 1, 2] if plain else list(self.spec.indices)
        self.channels: list[int] = list(self.spec.channels)
        self.channels_last_out = self.spec.nhwc
        self.pyramid = SimpleFeaturePyramid(self.channels) if plain else None
        self.finetune = finetune
        if not finetune:
            self.body.requires_grad_(False)
        self.freeze = freeze
        if freeze:
            depth = layer_count(self.timm_names())
            if freeze > depth:
                raise BackboneError(f"model.freeze={freeze}: backbone '{self.name}' has "
                                    f"{depth} {'blocks' if plain else 'stages'} to freeze")
            freeze_first(self.body, self.timm_names(), freeze)
        if grad_checkpointing:
            # a plain ViT's blocks run inside its own forward_intermediates: set it there
            (self.body.model if plain else self.body).set_grad_checkpointing(True)

    def _timm_names(self, body: nn.Module) -> TimmNames:
        return TimmNames(body, self.name, self._kwargs, self.spec.kind == "plain")

    def timm_names(self) -> TimmNames:
        """The body's parameters under the whole timm model's names, and timm's grouping rules."""
        return self._timm_names(self.body)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if not self.finetune:
            self.body.eval()  # frozen backbone: batch-norm statistics stay as loaded
        elif mode and self.freeze:
            for module in self.body.modules():  # frozen stages (model.freeze) keep theirs too
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                        p.requires_grad for p in module.parameters()) and module.affine:
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: (B, 3, H, W) -> [(B, C_i, H/s_i, W/s_i) for s_i in 8, 16, 32]."""
        features = self.body(images)
        maps = [features[i] for i in self.indices]
        if self.channels_last_out:  # timm's NHWC stages (Swin): (B, H, W, C) -> (B, C, H, W)
            maps = [m.permute(0, 3, 1, 2) for m in maps]
        return self.pyramid(maps) if self.pyramid is not None else maps


def input_config(name: str, model_args: dict | None = None, pretrained: bool = True) -> dict:
    """Normalisation and resize interpolation the backbone's inputs need.

    Pretrained weights come with the statistics they were trained with (timm's
    ``pretrained_cfg``: CLIP's and many ViTs' differ from ImageNet's); random weights have none,
    and get ImageNet's.

    Returns:
        ``{"mean": [3], "std": [3], "interpolation": "bilinear" | "bicubic" | ...}``
    """
    if not pretrained:
        return dict(IMAGENET_INPUTS)
    return dict(describe_backbone(name, model_args, None).input)

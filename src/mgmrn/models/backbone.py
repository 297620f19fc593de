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
from pathlib import Path

import timm
import torch
from torch import nn

from mgmrn.errors import MgmrnError
from mgmrn.models.backbone_spec import (
    IMAGENET_INPUTS,
    BackboneError,
    BackboneSpec,
    creation_args,
    describe_backbone,
)
from mgmrn.models.pyramid import SimpleFeaturePyramid

log = logging.getLogger(__name__)

__all__ = ["Backbone", "BackboneError", "BackboneSpec", "IMAGENET_INPUTS", "PretrainedWeightsError",
           "describe_backbone", "input_config"]


class PretrainedWeightsError(MgmrnError, RuntimeError):
    """Pretrained weights were asked for but cannot be found or fetched."""


class Backbone(nn.Module):
    """Image -> feature maps at strides 8, 16 and 32 (fine, middle, coarse).

    Args:
        name: a timm model (hierarchical with ``features_only``, or a plain ViT); a bare name takes
            torchvision's ImageNet weights where timm has them (``resnet101`` ->
            ``resnet101.tv_in1k``), otherwise timm's default tag.
        pretrained: load pretrained weights (hub cache, URL, or ``pretrained_file``).
        pretrained_file: local weights file (timm or torchvision state dict).
        finetune: False freezes the timm model and keeps its batch-norm statistics fixed (a
            plain ViT's pyramid adapter, new, still trains).
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
                 model_args: dict | None = None, image_size: int | None = None):
        super().__init__()
        self.spec = describe_backbone(name, model_args, image_size)
        self.name = self.spec.name
        kwargs = creation_args(self.name, model_args or {}, image_size, self.spec)
        # hierarchical: all stages are built (the earlier ones are computed anyway); three are kept
        self.body = _create(self.name, pretrained, pretrained_file, kwargs)
        plain = self.spec.kind == "plain"
        # a plain ViT is built to return only its three blocks
        self.indices = [0, 1, 2] if plain else list(self.spec.indices)
        self.channels: list[int] = list(self.spec.channels)
        self.channels_last_out = self.spec.nhwc
        self.pyramid = SimpleFeaturePyramid(self.channels) if plain else None
        self.finetune = finetune
        if not finetune:
            self.body.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if not self.finetune:
            self.body.eval()  # frozen backbone: batch-norm statistics stay as loaded
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


def _create(name: str, pretrained: bool, pretrained_file: str | None,
            kwargs: dict) -> nn.Module:
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"model.pretrained_file '{path}' does not exist; give the path of a weights file "
                f"for '{name}', or set model.pretrained=false to train from scratch")
        overlay = dict(file=str(path), url="", hf_hub_id="")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # no network and no cached copy: say what to do instead
        raise PretrainedWeightsError(
            f"could not load pretrained weights for '{name}' ({type(err).__name__}: {err}). "
            f"{_where_to_get(name)}, then set model.pretrained_file=/path/to/that/file, or put "
            f"it in the Hugging Face hub cache (~/.cache/huggingface/hub, e.g. with "
            f"`huggingface-cli download` on a machine with network, then copy the folder), or set "
            f"model.pretrained=false to train from scratch"
        ) from err


def _where_to_get(name: str) -> str:
    """Where the weights of a tagged timm name are published, in words."""
    cfg = timm.models.get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None)
    if hub:
        file = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
        return (f"Download {file} from the Hugging Face hub repository '{hub}' "
                f"(https://huggingface.co/{hub}) on a machine with network")
    url = getattr(cfg, "url", None) or "(see timm's model card)"
    return f"Download the weights on a machine with network ({url})"

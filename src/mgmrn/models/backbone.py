"""Multi-stage feature extractor: a timm ``features_only`` model cut at strides 8, 16 and 32."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
# torchvision's ImageNet-1k weights (IMAGENET1K_V1) carry this tag in timm.
DEFAULT_PRETRAINED_TAG = "tv_in1k"


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be found or fetched."""


def _model_name(name: str) -> str:
    """``resnet101`` -> ``resnet101.tv_in1k``; an explicit tag is kept."""
    if "." in name:
        return name
    tagged = f"{name}.{DEFAULT_PRETRAINED_TAG}"
    return tagged if tagged in timm.list_pretrained() else name


def _stage_indices(body: nn.Module, name: str) -> list[int]:
    """Indices of the feature stages at strides 8, 16 and 32, read from timm's feature_info."""
    reductions = body.feature_info.reduction()
    missing = [s for s in STRIDES if s not in reductions]
    if missing:
        raise ValueError(f"backbone '{name}' has no feature stage at stride(s) {missing}; "
                         f"its strides are {reductions}")
    return [reductions.index(s) for s in STRIDES]


class Backbone(nn.Module):
    """Image -> feature maps at strides 8, 16 and 32 (fine, middle, coarse).

    Args:
        name: any timm model that supports ``features_only``; a bare name takes torchvision's
            ImageNet weights where timm has them (``resnet101`` -> ``resnet101.tv_in1k``).
        pretrained: load ImageNet weights (hub cache, URL, or ``pretrained_file``).
        pretrained_file: local weights file (timm or torchvision state dict).
        finetune: False freezes every weight and keeps batch-norm statistics fixed.
        model_args: further arguments of ``timm.create_model`` (e.g. ``layers`` and
            ``channels`` of a ResNet).
    """

    def __init__(self, name: str = "resnet101", pretrained: bool = True,
                 pretrained_file: str | None = None, finetune: bool = True,
                 model_args: dict | None = None):
        super().__init__()
        self.name = _model_name(name)
        # all stages are built (the earlier ones are computed anyway); three are returned
        self.body = _create(self.name, pretrained, pretrained_file, model_args or {})
        self.indices = _stage_indices(self.body, self.name)
        self.channels: list[int] = [self.body.feature_info.channels()[i] for i in self.indices]
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
        return [features[i] for i in self.indices]


def _create(name: str, pretrained: bool, pretrained_file: str | None,
            model_args: dict) -> nn.Module:
    kwargs = dict(features_only=True, **model_args)
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
        cfg = timm.models.get_pretrained_cfg(name)
        url = getattr(cfg, "url", None) or "(see timm's model card)"
        raise PretrainedWeightsError(
            f"could not load pretrained weights for '{name}' ({type(err).__name__}: {err}). "
            f"Download them on a machine with network ({url}), then set "
            f"model.pretrained_file=/path/to/weights.pth, or put them in the Hugging Face hub "
            f"cache (~/.cache/huggingface), or set model.pretrained=false to train from scratch"
        ) from err

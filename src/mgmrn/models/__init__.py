"""Networks: Mg-MRN and a global-feature baseline, built from a ModelConfig."""

from __future__ import annotations

import dataclasses
import inspect

import torch
from torch import nn

from mgmrn.models.backbone import (
    IMAGENET_INPUTS,
    Backbone,
    BackboneError,
    PretrainedWeightsError,
    describe_backbone,
    input_config,
)
from mgmrn.models.baseline import GlobalBaseline
from mgmrn.models.decoder import AttributeDecoder
from mgmrn.models.granularity import GranularityModule
from mgmrn.models.mgmrn import LEVELS, MgMRN, TokenLayout, ZSLOutput, spatial_attention
from mgmrn.models.refinement import SpatialChannelAttention

__all__ = ["Backbone", "BackboneError", "GlobalBaseline", "IMAGENET_INPUTS", "LEVELS", "MgMRN",
           "PretrainedWeightsError", "TokenLayout", "ZSLOutput", "backbone_args", "build_model",
           "compile_heads", "describe_backbone", "input_config", "model_input_config", "spatial_attention"]

HEAD_MODULES = (GranularityModule, SpatialChannelAttention, AttributeDecoder)


# the ModelConfig fields that choose and make the network's backbone; every other field is a
# keyword of MgMRN's constructor under the same name (and GlobalBaseline takes those it has)
BUILD_FIELDS = ("name", "backbone", "backbone_args", "pretrained", "pretrained_file", "finetune",
                "freeze", "grad_checkpointing", "out_indices")


def backbone_args(cfg) -> dict:
    """``timm.create_model`` arguments of a ``ModelConfig``'s backbone: ``backbone_args``, with
    ``out_indices`` (a plain ViT's three blocks) where given."""
    args = dict(cfg.backbone_args)
    if cfg.out_indices is not None:
        args["out_indices"] = list(cfg.out_indices)
    return args


def build_model(cfg, attribute_vectors: torch.Tensor, backbone: nn.Module | None = None,
                image_size: int | None = None) -> nn.Module:
    """The network a ``ModelConfig`` describes, for the given (A, E) attribute word vectors.

    ``backbone`` replaces the timm backbone that ``cfg.backbone`` names: any module that returns
    the three stage maps, finest first, and has ``channels`` (see :class:`MgMRN`).
    ``image_size`` (the data's ``image_size``) builds backbones made for one input size (ViTs,
    Swin, MaxViT) for that size; None leaves timm's default.
    """
    if backbone is None:
        backbone = Backbone(cfg.backbone, pretrained=cfg.pretrained,
                            pretrained_file=cfg.pretrained_file, finetune=cfg.finetune,
                            model_args=backbone_args(cfg), image_size=image_size,
                            freeze=cfg.freeze, grad_checkpointing=cfg.grad_checkpointing)
    if cfg.name == "baseline":
        return GlobalBaseline(backbone, attribute_vectors.shape[0],
                              **network_keywords(cfg, GlobalBaseline))
    return MgMRN(backbone, attribute_vectors, **network_keywords(cfg, MgMRN))


def network_keywords(cfg, network: type[nn.Module]) -> dict:
    """The fields of a ``ModelConfig`` that ``network``'s constructor takes, by name.

    Every field outside :data:`BUILD_FIELDS` must be a keyword of :class:`MgMRN`: a field that
    no network reads is a programming error, refused here rather than silently ignored.
    """
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if f.name not in BUILD_FIELDS}
    unread = set(values) - set(inspect.signature(MgMRN).parameters)
    if unread:
        raise TypeError(f"ModelConfig fields {sorted(unread)} are not keywords of MgMRN")
    taken = inspect.signature(network).parameters
    return {name: value for name, value in values.items() if name in taken}


def model_input_config(cfg) -> dict:
    """The input normalisation and interpolation of the network a ``ModelConfig`` describes:
    those of its pretrained weights, or ImageNet's when it starts from random weights."""
    return input_config(cfg.backbone, backbone_args(cfg),
                        cfg.pretrained or cfg.pretrained_file is not None)


def compile_heads(model: nn.Module) -> int:
    """Compile each head module of ``model`` in place with ``torch.compile``; returns how many.

    The granularity, spatial-channel-attention and decoder modules are memory-bound glue around
    a few matrix products: compiled, GroupNorm, ReLU and the halving, the gates' sigmoids and
    products, and the region pooling run as a few generated kernels instead of one pass over
    memory each. The backbone stays eager, with cuDNN's convolutions. Compiled in place, the
    modules keep their parameter names (checkpoints are unchanged), and the generated kernels
    can be captured in the training step's CUDA graph.
    """
    heads = [m for m in model.modules() if isinstance(m, HEAD_MODULES)]
    for module in heads:
        module.compile(dynamic=False)
    return len(heads)

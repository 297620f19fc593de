"""What a timm backbone gives before any weight exists: its kind, levels, input rules and statistics.

:func:`describe_backbone` builds the model on PyTorch's ``meta`` device (shapes only: no memory,
no computation, no download) and reads timm's ``feature_info``, so a backbone that cannot serve
Mg-MRN, or an image size it cannot take, is refused when the config is read, with the rule and
the sizes that work, before any data or weight is touched.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field

import timm
import torch

from mgmrn.errors import MgmrnError

STRIDES = (8, 16, 32)
# torchvision's ImageNet-1k weights (IMAGENET1K_V1) carry this tag in timm.
DEFAULT_PRETRAINED_TAG = "tv_in1k"
IMAGENET_INPUTS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                  "interpolation": "bilinear"}


class BackboneError(MgmrnError, ValueError):
    """A backbone that cannot serve Mg-MRN as configured; the message says what would work."""


@dataclass(frozen=True)
class BackboneSpec:
    """A timm backbone as Mg-MRN uses it.

    Attributes:
        name: the timm name, with its pretrained tag.
        kind: ``hierarchical`` (stages at strides 8, 16, 32) or ``plain`` (one stride: a ViT).
        indices: which of the timm model's outputs are the three levels, finest first.
        channels: their channel counts.
        strides: their strides (a plain ViT's: p/2, p, 2p after the pyramid).
        nhwc: the stages come channels-last.
        size_multiple: image sides must be a multiple of this.
        input: ``mean``, ``std``, ``interpolation`` of its pretrained weights.
    """

    name: str
    kind: str
    indices: tuple[int, ...]
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    nhwc: bool
    size_multiple: int
    input: dict = field(hash=False, compare=False)


def model_name(name: str) -> str:
    """``resnet101`` -> ``resnet101.tv_in1k``; an explicit tag is kept."""
    if "." in name:
        return name
    tagged = f"{name}.{DEFAULT_PRETRAINED_TAG}"
    return tagged if tagged in timm.list_pretrained() else name


def creation_args(name: str, model_args: dict, image_size: int | None,
                  spec: BackboneSpec | None = None) -> dict:
    """``timm.create_model`` arguments: features_only, the image size where the model is built
    for one (timm's ``fixed_input_size``), a plain ViT's three blocks (from ``spec``), then
    ``model_args``."""
    kwargs: dict = {"features_only": True}
    if image_size is not None and _fixed_size(name):
        kwargs["img_size"] = image_size
    if spec is not None and spec.kind == "plain":
        kwargs["out_indices"] = spec.indices
    kwargs.update(model_args)
    return kwargs


def describe_backbone(name: str, model_args: dict | None = None,
                      image_size: int | None = None) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``name``, checked at ``image_size`` (None: not checked).

    Raises:
        BackboneError: an unknown name, a model without stages timm can return, no stages at
            strides 8/16/32, or an image size the model cannot take.
    """
    spec = _describe(name, json.dumps(model_args or {}, sort_keys=True))
    if image_size is not None:
        _check_size(spec, model_args or {}, image_size)
    return spec


@functools.lru_cache(maxsize=64)
def _describe(name: str, args_json: str) -> BackboneSpec:
    model_args = json.loads(args_json)
    chosen = model_args.pop("out_indices", None)  # a plain ViT's blocks, checked below
    tagged = model_name(name)
    if not timm.is_model(tagged.split(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BackboneError(f"model.backbone '{name}' is not a timm model{hint} (to list "
                            f"names: python -c \"import timm; print(timm.list_models("
                            f"'*{name.split('_')[0]}*'))\")")
    body = _meta_model(tagged, creation_args(tagged, model_args, None))
    info = body.feature_info
    reductions = info.reduction()
    pretrained = timm.data.resolve_data_config(model=body)
    stats = {"mean": [float(v) for v in pretrained["mean"]],
             "std": [float(v) for v in pretrained["std"]],
             "interpolation": str(pretrained["interpolation"])}
    nhwc = getattr(body, "output_fmt", "NCHW") == "NHWC"  # timm's Format is a str enum
    if len(set(reductions)) == 1 and hasattr(body, "model"):  # one stride: a plain ViT
        patch = reductions[0]
        depth = len(body.model.feature_info)
        if depth < 3:
            raise BackboneError(f"backbone '{tagged}' is a plain ViT with {depth} block(s); its "
                                f"three levels are read from three blocks")
        # the last block of each third: shallow (fine), middle and last (coarse)
        indices = tuple(max(0, depth * k // 3 - 1) for k in (1, 2, 3))
        if chosen is not None:
            indices = _chosen_blocks(tagged, chosen, depth)
        return BackboneSpec(tagged, "plain", indices, (info.channels()[0],) * 3,
                            (patch // 2, patch, 2 * patch), nhwc, 2 * patch, stats)
    if chosen is not None:
        raise BackboneError(f"model.out_indices={chosen}: backbone '{tagged}' is hierarchical; its "
                            f"levels are its stages at strides 8, 16 and 32 (out_indices chooses "
                            f"the blocks of a plain ViT)")
    missing = [s for s in STRIDES if s not in reductions]
    if missing:
        raise BackboneError(
            f"backbone '{tagged}' has no feature stage at stride(s) {missing}; its strides are "
            f"{reductions}. Mg-MRN reads stages at strides 8, 16 and 32 (hierarchical models) or "
            f"the blocks of a plain ViT (one stride)")
    indices = tuple(reductions.index(s) for s in STRIDES)
    return BackboneSpec(tagged, "hierarchical", indices,
                        tuple(info.channels()[i] for i in indices), STRIDES, nhwc, STRIDES[-1],
                        stats)


def _chosen_blocks(name: str, chosen, depth: int) -> tuple[int, ...]:
    """``model.out_indices`` of a plain ViT: three blocks, from 0, increasing, within its depth."""
    if (not isinstance(chosen, (list, tuple)) or len(chosen) != 3
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in chosen)
            or list(chosen) != sorted(set(chosen)) or not 0 <= chosen[0] <= chosen[-1] < depth):
        raise BackboneError(f"model.out_indices: expected three increasing block indices from 0 "
                            f"to {depth - 1} (backbone '{name}' has {depth} blocks), fine level "
                            f"first, got {chosen!r}")
    return tuple(chosen)


def _meta_model(name: str, kwargs: dict) -> torch.nn.Module:
    """The timm model built on the meta device (shapes only)."""
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, **kwargs)
    except Exception as err:
        raise BackboneError(
            f"backbone '{name}' cannot be built to return its stages ({type(err).__name__}: "
            f"{err}); Mg-MRN takes timm models that support features_only (hierarchical models "
            f"and plain ViTs)") from err


def _fixed_size(name: str) -> bool:
    cfg = timm.models.get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


@functools.lru_cache(maxsize=16)
def _any_size_model(name: str, args_json: str) -> torch.nn.Module:
    """The meta model of a backbone that takes any input size, built once for all sizes."""
    return _meta_model(name, {"features_only": True, **json.loads(args_json)})


@functools.lru_cache(maxsize=256)
def _fits(spec: BackboneSpec, args_json: str, size: int) -> bool:
    """Whether the model, built for ``size``, returns maps of sides size / stride."""
    if size % spec.size_multiple:
        return False
    if spec.kind == "plain":
        return True  # the pyramid's sides follow from the patch grid
    try:
        if _fixed_size(spec.name):
            body = _meta_model(spec.name, creation_args(spec.name, json.loads(args_json), size,
                                                        spec))
        else:
            body = _any_size_model(spec.name, args_json)
        with torch.device("meta"):  # eval: batch norm of a 1x1 map is fine with running stats
            features = body.eval()(torch.empty(1, 3, size, size))
    except Exception:
        return False
    sides = [tuple(features[i].shape[1:3] if spec.nhwc else features[i].shape[2:])
             for i in spec.indices]
    return sides == [(size // s, size // s) for s in spec.strides]


def _check_size(spec: BackboneSpec, model_args: dict, size: int) -> None:
    args_json = json.dumps(model_args, sort_keys=True)
    if _fits(spec, args_json, size):
        return
    step = spec.size_multiple
    below = [s for s in range((size // step) * step, 0, -step) if s != size][:4]
    above = list(range((size // step + 1) * step, size + 5 * step, step))
    near = sorted(below + above, key=lambda s: (abs(s - size), s))
    working = sorted([s for s in near if _fits(spec, args_json, s)][:4])
    if spec.kind == "plain":
        rule = (f"is a plain ViT with {spec.strides[1]} px patches: it needs sides divisible by "
                f"{step} (twice the patch, as the coarse level halves the patch grid)")
    else:
        rule = f"needs sides divisible by {step} (its coarsest stride)"
        if size % step == 0:
            rule = ("cannot take this size: its stages (windows, partitions, padding) do not give "
                    f"maps of sides size/8, size/16, size/32 (tried sides divisible by {step})")
    sizes = ", ".join(map(str, working)) or "none near it"
    raise BackboneError(f"config key 'data.image_size': backbone '{spec.name}' {rule}, got "
                        f"{size}; sizes that work: {sizes}")

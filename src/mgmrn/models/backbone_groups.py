"""A backbone's parameters as timm names and groups them: stem, then blocks or stages.

timm's ``features_only`` wrappers rename the model's modules (a hierarchical model's
``layers.0`` becomes ``layers_0``; a plain ViT sits under ``model.``), so timm's own rules, the
model's ``group_matcher`` (which block or stage a parameter belongs to) and ``no_weight_decay``
(position embeddings, cls/register tokens, relative position tables), would not find them.
:class:`TimmNames` maps every parameter of the wrapper back to its name in the whole timm model
and reads those rules from the model itself, so that layer-wise learning-rate decay, weight-decay
exclusions and partial freezing group parameters exactly as timm does.

Plain ViTs are grouped per block; hierarchical backbones (CNNs, Swin, ...) per stage, with
timm's coarse grouping: the stem (patch embedding) is group 0, block or stage ``i`` is
group ``i + 1``.
"""

from __future__ import annotations

import functools
import json

import timm
import torch
from timm.models import group_parameters
from torch import nn


class TimmNames:
    """The parameters of a :class:`~mgmrn.models.backbone.Backbone`'s timm body, under timm's names.

    Args:
        body: the ``features_only`` timm model (``Backbone.body``).
        name: its timm name; ``model_args``: the arguments it was built with.
        plain: a plain ViT (grouped per block) rather than a hierarchical model (per stage).

    Attributes:
        names: ``{name in body: name in the whole timm model}``.
        matcher: the model's ``group_matcher``, or None where it has none.
        no_weight_decay: names the model excludes from weight decay (``no_weight_decay()``).
        used: the timm names of every tensor ``body`` keeps (parameters, persistent buffers).
    """

    def __init__(self, body: nn.Module, name: str, model_args: dict, plain: bool):
        whole = body.model if plain and hasattr(body, "model") else _whole_model(
            name, json.dumps(model_args, sort_keys=True, default=str))
        known = list(whole.state_dict().keys())  # parameters and persistent buffers
        alias: dict[str, str] = {n: n for n in known}
        for n in known:  # the wrappers' spellings of the same tensor
            first, _, rest = n.partition(".")
            second, _, tail = rest.partition(".")
            if tail:
                alias.setdefault(f"{first}_{second}.{tail}", n)  # a flattened Sequential
            alias.setdefault(f"model.{n}", n)  # FeatureGetterNet
            alias.setdefault(f"body.{n}", n)  # FeatureHookNet without rewrite
        self._alias = alias
        self.names = {n: alias.get(n, n) for n, _ in body.named_parameters()}
        self.used = {alias.get(n, n) for n in body.state_dict()}
        self.matcher = whole.group_matcher(coarse=not plain) if hasattr(whole, "group_matcher") else None
        self.no_weight_decay = set(whole.no_weight_decay()) if hasattr(whole, "no_weight_decay") else set()

    def layer_ids(self) -> dict[str, int]:
        """``{name in body: group}``: 0 the stem, ``i + 1`` block or stage ``i``; all 0 without
        a ``group_matcher``."""
        if self.matcher is None:
            return dict.fromkeys(self.names, 0)
        view = NamedParameters([(timm_name, None) for timm_name in self.names.values()])
        by_timm_name = group_parameters(view, self.matcher, reverse=True)
        return {n: by_timm_name[timm_name] for n, timm_name in self.names.items()}


class NamedParameters:
    """A network's parameters under given names, with a ``group_matcher``: what timm's
    ``param_groups_layer_decay`` and ``param_groups_weight_decay`` read of a model."""

    def __init__(self, named: list[tuple[str, nn.Parameter]], matcher=None):
        self.named = named
        self.matcher = matcher

    def named_parameters(self):
        return iter(self.named)

    def group_matcher(self, coarse: bool = False):
        return self.matcher


def freeze_first(body: nn.Module, names: TimmNames, count: int) -> int:
    """Stop the gradients of the stem and the first ``count`` blocks (plain ViTs) or stages
    (hierarchical models) of ``body``; returns how many parameters were frozen."""
    frozen = 0
    ids = names.layer_ids()
    for n, param in body.named_parameters():
        if ids[n] <= count:
            param.requires_grad_(False)
            frozen += 1
    return frozen


def layer_count(names: TimmNames) -> int:
    """Blocks or stages after the stem (the largest group id)."""
    return max(names.layer_ids().values(), default=0)


@functools.lru_cache(maxsize=8)
def _whole_model(name: str, args_json: str) -> nn.Module:
    """The whole timm model (not ``features_only``) on the meta device: its names and rules."""
    args = {k: v for k, v in json.loads(args_json).items()
            if k not in ("features_only", "out_indices", "feature_cls", "output_fmt")}
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **args)

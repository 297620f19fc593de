"""Weights of the published Mg-MRN code, by their published names, in an mgmrn network.

The published model names its parts per level by number (``QueryW1``, ``s3``, ``lateral_conv1``,
``V_att_final_branch1``; level 1 = fine = stage 2, ``s3``) where mgmrn has one module per
concept used once per level (``decoders.0``, ``granularity.0``, ``refinement.attention.0``).
:func:`release_key` maps one name to the other; :func:`load_release_state_dict` loads a whole
published state dict into a network built with the published switches (see the ``*-release``
recipes), refusing missing, unexpected or mis-shaped entries by name.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from mgmrn.errors import MgmrnError

# published stage name -> level index (fine, middle, coarse)
_STAGES = {"s3": 0, "s4": 1, "s5": 2}
_DECODER = {"QueryW": "query", "KeyW": "key", "ValueW": "value", "W_o": "out"}
_RULES = [
    (r"V_att_final_branch([123])", lambda m: f"decoders.{int(m[1]) - 1}.prototypes"),
    (r"(QueryW|KeyW|ValueW|W_o)([123])\.(weight|bias)",
     lambda m: f"decoders.{int(m[2]) - 1}.{_DECODER[m[1]]}.{m[3]}"),
    (r"(s[345])\.group\.weight", lambda m: f"granularity.{_STAGES[m[1]]}.grouping.centres"),
    (r"(s[345])\.group\.smooth_factor",
     lambda m: f"granularity.{_STAGES[m[1]]}.grouping.smoothing"),
    (r"(s[345])\.conv\.block\.0\.block\.([01])\.(weight|bias)",
     lambda m: f"granularity.{_STAGES[m[1]]}.project.{m[2]}.{m[3]}"),
    (r"lateral_conv([12])\.conv\.weight",
     lambda m: f"refinement.attention.{int(m[1]) - 1}.project.weight"),
    (r"lateral_conv([12])\.c_attn\.([02])\.(weight|bias)",
     lambda m: f"refinement.attention.{int(m[1]) - 1}.channel_gate.{m[2]}.{m[3]}"),
    (r"lateral_conv([12])\.s_attn\.0\.weight",
     lambda m: f"refinement.attention.{int(m[1]) - 1}.spatial_gate.0.weight"),
]
# every switch between mgmrn's choice and the published behaviour, at the published value (the
# ``*-release`` recipes set them all)
RELEASE_SWITCHES = {
    "model.grouping": "identity",
    "model.prototype_init": "normal",
    "model.halving": "align_corners",
    "model.scaled_attention": False,
    "model.norm": "group",
    "model.resize_before_projection": False,
    "data.test_resize": "crop",
    "train.lr_step_at": "start",
    "train.schedule": "alternating",
    "train.amp": "none",
    "eval.ausuc_order": "release",
}


def differing_switches(cfg) -> list[str]:
    """``key=value (published: value)`` for every switch of ``cfg`` not at the published value."""
    differing = []
    for key, published in RELEASE_SWITCHES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value != published:
            differing.append(f"{key}={_yaml(value)} (published: {_yaml(published)})")
    return differing


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# the published backbone is a whole torchvision ResNet; its classifier is never used
_UNUSED = re.compile(r"backbone\.fc\.(weight|bias)")


class ReleaseWeightsError(MgmrnError, ValueError):
    """Published weights that do not fit the network; the message names the entries."""


def release_key(name: str, backbone_prefix: str = "backbone.") -> str | None:
    """The mgmrn parameter name of a published one, or None for an entry that is not used.

    Args:
        name: a published name, e.g. ``QueryW2.weight`` or ``backbone.layer1.0.conv1.weight``.
        backbone_prefix: where the network keeps the backbone's own names: ``backbone.body.``
            for timm backbones (whose ResNet names are torchvision's), ``backbone.`` for a
            backbone module passed in.

    Raises:
        ReleaseWeightsError: a name the published model does not have.
    """
    if _UNUSED.fullmatch(name):
        return None
    if name.startswith("backbone."):
        return backbone_prefix + name[len("backbone."):]
    for pattern, target in _RULES:
        match = re.fullmatch(pattern, name)
        if match:
            return target(match)
    raise ReleaseWeightsError(f"unexpected entry '{name}': not a parameter of the published model")


def published_names() -> list[str]:
    """Every name of the published heads (the backbone's names are the ResNet's own)."""
    names = []
    for i in (1, 2, 3):
        names.append(f"V_att_final_branch{i}")
        names += [f"{layer}{i}.{p}" for layer in _DECODER for p in ("weight", "bias")]
    for stage in _STAGES:
        names += [f"{stage}.group.weight", f"{stage}.group.smooth_factor",
                  f"{stage}.conv.block.0.block.0.weight"]
        names += [f"{stage}.conv.block.0.block.1.{p}" for p in ("weight", "bias")]
    for i in (1, 2):
        names += [f"lateral_conv{i}.conv.weight", f"lateral_conv{i}.s_attn.0.weight"]
        names += [f"lateral_conv{i}.c_attn.{j}.{p}" for j in (0, 2) for p in ("weight", "bias")]
    return names


def _published_name(key: str, backbone_prefix: str) -> str:
    """The published name of an mgmrn parameter, for messages."""
    if key.startswith(backbone_prefix):
        return "backbone." + key[len(backbone_prefix):]
    inverse = {release_key(name): name for name in published_names()}
    return inverse.get(key, key)


def convert_release_state_dict(release: dict[str, torch.Tensor],
                               model: nn.Module) -> dict[str, torch.Tensor]:
    """A published state dict renamed and reshaped for ``model``; every entry must fit.

    The network must be built with the published switches (``model.grouping=identity``: no
    region-token layers). Its word-vector buffer is not part of the published state (it is
    a plain attribute there) and is kept from ``model``.

    Raises:
        ReleaseWeightsError: names every unexpected, missing and mis-shaped entry, in one line
            (also the backbone entries of a checkpoint whose backbone is not the network's).
    """
    target = model.state_dict()
    prefix = "backbone.body." if hasattr(model.backbone, "body") else "backbone."
    converted, unexpected, misshaped = {}, [], []
    for name, value in release.items():
        try:
            key = release_key(name, prefix)
        except ReleaseWeightsError:
            unexpected.append(name)
            continue
        if key is None:
            continue
        if key not in target:  # a published name, but not of this network (e.g. a deeper ResNet)
            unexpected.append(name)
            continue
        if value.numel() != target[key].numel() or (
                value.dim() == target[key].dim() and value.shape != target[key].shape):
            misshaped.append(f"{name} {tuple(value.shape)} (expected {tuple(target[key].shape)})")
            continue
        converted[key] = value.reshape(target[key].shape)  # group centres: (K, C, 1, 1) -> (K, C)
    missing = sorted(_published_name(k, prefix) for k in target if k not in converted
                     and k != "word_vectors" and not k.endswith("num_batches_tracked"))
    problems = [f"{label}: {', '.join(items[:12])}{' ...' if len(items) > 12 else ''}"
                f" ({len(items)})" for label, items in (("unexpected", unexpected),
                                                        ("missing", missing),
                                                        ("mis-shaped", misshaped)) if items]
    if any(name.startswith("backbone.") for name in (*unexpected, *missing)):
        backbone = getattr(model.backbone, "name", type(model.backbone).__name__)
        problems.append(f"is the checkpoint's backbone the recipe's model.backbone ({backbone})?")
    if problems:
        raise ReleaseWeightsError("; ".join(problems))
    converted["word_vectors"] = target["word_vectors"]
    for key in target:  # batch-norm step counters are not in torchvision's older files
        if key.endswith("num_batches_tracked") and key not in converted:
            converted[key] = target[key]
    return converted

"""How well a model names attribute values, and where its attention falls.

Two measures that the class-level figures hide:

- **Attribute-group accuracy.** Many attribute tables are one-hot per group ("body colour" is one
  of red, green, ...). For each image and group, the value with the highest predicted strength is
  compared with the value of the image's class: on part-attribute data this tells whether a model
  reads the small parts (a beak's colour) as well as the large ones (a body's).
- **Attention mass on a region.** For an attention map over pixels (a distribution) and a mask of
  where a part is, the share of the map's mass that falls on the part; chance is the part's share
  of the image.

Pure functions of arrays (torch tensors or numpy arrays); they know nothing of models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mgmrn.evaluation._arrays import as_labels, to_numpy


def one_hot_groups(attribute_names: Sequence[str], class_attributes: Any,
                   separator: str = "_") -> dict[str, list[int]]:
    """Attributes grouped by name prefix, keeping the groups that are one-hot for every class.

    ``body_color_red`` and ``body_color_blue`` share the group ``body_color`` (the name up to
    its last ``separator``). A group counts only when each class has exactly one value of it at 1
    and the others at 0, so that "the predicted value" of the group is defined.

    Args:
        attribute_names: A names.
        class_attributes: (C, A) strengths.

    Returns:
        {group: attribute indices}, in order of first appearance; empty when no group is one-hot.
    """
    table = to_numpy(class_attributes).astype(np.float64)
    if table.ndim != 2 or table.shape[1] != len(attribute_names):
        raise ValueError(f"class_attributes must be (C, {len(attribute_names)}), "
                         f"got {tuple(table.shape)}")
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(attribute_names):
        groups.setdefault(name.rsplit(separator, 1)[0], []).append(index)
    one_hot = {}
    for group, members in groups.items():
        block = table[:, members]
        if len(members) > 1 and np.isin(block, (0.0, 1.0)).all() and (block.sum(1) == 1).all():
            one_hot[group] = members
    return one_hot


def attribute_group_accuracy(attribute_scores: Any, labels: Any, class_attributes: Any,
                             groups: dict[str, list[int]]) -> dict[str, float]:
    """Share of images whose strongest predicted value of each group is their class's value.

    Args:
        attribute_scores: (N, A) predicted strengths.
        labels: (N,) class indices into the rows of ``class_attributes``.
        class_attributes: (C, A) strengths, one-hot within each group.
        groups: {group: attribute indices}, e.g. from :func:`one_hot_groups`.

    Returns:
        {group: accuracy in [0, 1]} (NaN for a group when there are no images).
    """
    scores = to_numpy(attribute_scores).astype(np.float64)
    labels = as_labels(labels, "labels")
    table = to_numpy(class_attributes)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"attribute_scores must be (N, A) with N = {labels.shape[0]} labels, "
                         f"got {tuple(scores.shape)}")
    accuracy = {}
    for group, members in groups.items():
        members = list(members)
        predicted = scores[:, members].argmax(axis=1)
        true = table[labels][:, members].argmax(axis=1)
        accuracy[group] = float((predicted == true).mean()) if labels.size else float("nan")
    return accuracy


def attention_mass_share(maps: Any, masks: Any) -> np.ndarray:
    """Share of each attention map's mass that lies on a region.

    Args:
        maps: (N, ..., H, W) non-negative attention over pixels (e.g. (N, L, H, W): one map per
            level); each map need not be normalised.
        masks: (N, H, W) in [0, 1], how much of each pixel the region covers.

    Returns:
        (N, ...) shares in [0, 1]: sum(map * mask) / sum(map); NaN where a map is all zero.
    """
    maps = to_numpy(maps).astype(np.float64)
    masks = to_numpy(masks).astype(np.float64)
    if masks.ndim != 3 or maps.ndim < 3 or maps.shape[0] != masks.shape[0] \
            or maps.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"maps (N, ..., H, W) and masks (N, H, W) must agree, got "
                         f"{tuple(maps.shape)} and {tuple(masks.shape)}")
    if (maps < 0).any() or (masks < 0).any() or (masks > 1).any():
        raise ValueError("maps must be non-negative and masks in [0, 1]")
    masks = masks.reshape(masks.shape[0], *([1] * (maps.ndim - 3)), *masks.shape[1:])
    total = maps.sum(axis=(-2, -1))
    on = (maps * masks).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, on / np.where(total > 0, total, 1.0), np.nan)

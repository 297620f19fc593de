"""Input checks shared by the metrics: torch tensors or array-likes in, CPU numpy arrays out."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


def to_numpy(values: Any) -> np.ndarray:
    """A CPU numpy copy-or-view of a tensor, array or nested sequence."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def as_labels(values: Any, name: str) -> np.ndarray:
    """Class indices as a 1-D int64 array.

    Raises:
        ValueError: the values are not 1-D or not whole numbers.
    """
    array = to_numpy(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name} must hold class indices (whole numbers)")
    return array.astype(np.int64, copy=False)


def as_scores(values: Any, name: str) -> np.ndarray:
    """Class scores as a 2-D float64 array.

    float64 so that the gamma sweep and a direct evaluation of one gamma round identically.

    Raises:
        ValueError: not 2-D, or holding NaN/inf (argmax would silently prefer NaN).
    """
    array = to_numpy(values).astype(np.float64, copy=False)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, C), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite scores")
    return array


def as_class_subset(classes: Any, num_classes: int, name: str) -> np.ndarray:
    """Sorted unique class indices, each in [0, num_classes).

    Raises:
        ValueError: empty, or an index out of range.
    """
    subset = np.unique(as_labels(classes, name))
    if subset.size == 0:
        raise ValueError(f"{name} is empty")
    if subset[0] < 0 or subset[-1] >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}), got {subset.tolist()}")
    return subset


def check_labels_in(labels: np.ndarray, allowed: np.ndarray, name: str, allowed_name: str) -> None:
    """Raise ValueError unless every label is one of ``allowed``."""
    outside = np.setdiff1d(labels, allowed)
    if outside.size:
        raise ValueError(f"{name} holds classes outside {allowed_name}: {outside.tolist()}")


class GzslInputs(NamedTuple):
    """Checked GZSL inputs: scores over all C classes, labels and the seen-class mask."""

    scores_seen_imgs: np.ndarray  # (Ns, C) float64
    labels_seen: np.ndarray  # (Ns,) int64, every label a seen class
    scores_unseen_imgs: np.ndarray  # (Nu, C) float64
    labels_unseen: np.ndarray  # (Nu,) int64, no label a seen class
    seen_mask: np.ndarray  # (C,) bool


def gzsl_inputs(scores_seen_imgs: Any, labels_seen: Any, scores_unseen_imgs: Any,
                labels_unseen: Any, seen_classes: Any) -> GzslInputs:
    """Convert and check the inputs of a GZSL evaluation.

    Raises:
        ValueError: shapes disagree, an image set is empty, the seen classes are all classes,
            or a label sits on the wrong side of the split.
    """
    scores_s = as_scores(scores_seen_imgs, "scores_seen_imgs")
    scores_u = as_scores(scores_unseen_imgs, "scores_unseen_imgs")
    labels_s = as_labels(labels_seen, "labels_seen")
    labels_u = as_labels(labels_unseen, "labels_unseen")
    num_classes = scores_s.shape[1]
    if scores_u.shape[1] != num_classes:
        raise ValueError(f"score widths differ: {scores_s.shape} vs {scores_u.shape}")
    for scores, labels, name in ((scores_s, labels_s, "seen"), (scores_u, labels_u, "unseen")):
        if scores.shape[0] != labels.shape[0] or labels.size == 0:
            raise ValueError(f"{name} images: {scores.shape[0]} score rows, {labels.size} labels")
    seen = as_class_subset(seen_classes, num_classes, "seen_classes")
    if seen.size == num_classes:
        raise ValueError("seen_classes covers every class: no unseen class to search")
    check_labels_in(labels_s, seen, "labels_seen", "seen_classes")
    unseen = np.setdiff1d(np.arange(num_classes), seen)
    check_labels_in(labels_u, unseen, "labels_unseen", "the unseen classes")
    seen_mask = np.zeros(num_classes, dtype=bool)
    seen_mask[seen] = True
    return GzslInputs(scores_s, labels_s, scores_u, labels_u, seen_mask)

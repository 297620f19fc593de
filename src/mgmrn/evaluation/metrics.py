"""Accuracy metrics of zero-shot learning: pure functions of predictions and labels.

All accuracies here are fractions in [0, 1]; only reports convert them to percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mgmrn.evaluation._arrays import as_labels


def per_class_accuracy(predictions: Any, labels: Any, classes: Any = None) -> float:
    """Mean over classes of each class's top-1 accuracy.

    ZSL test sets are imbalanced, so every class counts equally, not every image.

    Args:
        predictions: (N,) predicted class indices (tensor, array or sequence).
        labels: (N,) true class indices.
        classes: the classes to average over; default: the classes present in ``labels``.
            Images of other classes are ignored.

    Returns:
        The mean per-class accuracy as a fraction in [0, 1].

    Raises:
        ValueError: shapes differ, no images, or a class of ``classes`` has no image (its
            accuracy would be undefined).
    """
    if as_labels(labels, "labels").size == 0:
        raise ValueError("no labels: accuracy is undefined")
    return float(np.mean(class_accuracies(predictions, labels, classes)))


def harmonic_mean(seen: Any, unseen: Any) -> Any:
    """GZSL harmonic mean H = 2SU / (S + U), defined as 0 when S = U = 0.

    Args:
        seen: seen-class accuracy S, a float or an array.
        unseen: unseen-class accuracy U, same shape as ``seen``.

    Returns:
        H, a float for float inputs, else an array of the broadcast shape.
    """
    s = np.asarray(seen, dtype=np.float64)
    u = np.asarray(unseen, dtype=np.float64)
    total = s + u
    h = np.divide(2.0 * s * u, total, out=np.zeros(np.broadcast(s, u).shape), where=total > 0)
    return float(h) if h.ndim == 0 else h


def class_accuracies(predictions: Any, labels: Any, classes: Any = None) -> np.ndarray:
    """Top-1 accuracy of each class, e.g. for a per-class chart.

    Args:
        predictions: (N,) predicted class indices.
        labels: (N,) true class indices.
        classes: the K classes to report, each with at least one image in ``labels``; images of
            other classes are ignored. Default: the classes present in ``labels``.

    Returns:
        (K,) accuracies as fractions, in increasing class order.

    Raises:
        ValueError: shapes differ, or a class of ``classes`` has no image.
    """
    predictions = as_labels(predictions, "predictions")
    labels = as_labels(labels, "labels")
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ")
    if classes is None:
        classes = np.unique(labels)
    else:
        classes = np.unique(as_labels(classes, "classes"))
        empty = np.setdiff1d(classes, labels)
        if empty.size:
            raise ValueError(f"classes without any image: {empty.tolist()}")
    keep = np.isin(labels, classes)
    slot = np.searchsorted(classes, labels[keep])
    sizes = np.bincount(slot, minlength=classes.size)
    hits = np.bincount(slot, weights=predictions[keep] == labels[keep], minlength=classes.size)
    return hits / sizes


def confused_pairs(predictions: Any, labels: Any, top: int = 10,
                   examples: int = 3) -> list[dict[str, Any]]:
    """The most frequent mistakes: (true class, predicted class) pairs with the images behind them.

    Args:
        predictions: (N,) predicted class indices.
        labels: (N,) true class indices.
        top: pairs returned at most.
        examples: image positions kept per pair at most (the first ones, in input order).

    Returns:
        Up to ``top`` dicts ``true``, ``predicted``, ``count`` (images of ``true`` predicted as
        ``predicted``), ``share`` (count over the images of ``true``, a fraction) and
        ``examples`` (positions into the inputs), by count, then share, then class indices.
    """
    predictions = as_labels(predictions, "predictions")
    labels = as_labels(labels, "labels")
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ")
    wrong = np.flatnonzero(predictions != labels)
    pairs, counts = np.unique(np.stack([labels[wrong], predictions[wrong]], axis=1), axis=0,
                              return_counts=True) if wrong.size else (np.zeros((0, 2)), [])
    classes, sizes = np.unique(labels, return_counts=True)
    size_of = dict(zip(classes.tolist(), sizes.tolist(), strict=True))
    found = [{"true": int(t), "predicted": int(p), "count": int(n), "share": n / size_of[int(t)]}
             for (t, p), n in zip(pairs, counts, strict=True)]
    found.sort(key=lambda f: (-f["count"], -f["share"], f["true"], f["predicted"]))
    for pair in found[:top]:
        at = wrong[(labels[wrong] == pair["true"]) & (predictions[wrong] == pair["predicted"])]
        pair["examples"] = at[:examples].tolist()
    return found[:top]


def named_confused_pairs(predictions: Any, labels: Any, class_names: Sequence[str],
                         paths: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """:func:`confused_pairs` as a report shows them: classes by name, examples by file.

    Args:
        predictions: (N,) predicted class indices.
        labels: (N,) true class indices.
        class_names: the name of every class index.
        paths: N image files, in the order of ``labels``; None: examples are left empty.

    Returns:
        The pairs of :func:`confused_pairs` with ``true`` and ``predicted`` as names and
        ``examples`` as image files.
    """
    pairs = confused_pairs(predictions, labels)
    for pair in pairs:
        pair["true"], pair["predicted"] = (class_names[pair[k]] for k in ("true", "predicted"))
        pair["examples"] = [paths[i] for i in pair["examples"]] if paths is not None else []
    return pairs

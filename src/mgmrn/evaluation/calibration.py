"""Calibrated stacking, the release's gamma sweep, and the area under the seen-unseen curve.

Calibrated stacking subtracts a constant gamma from every seen-class score: gamma > 0 pushes
predictions to the unseen side, gamma < 0 to the seen side. Accuracies are fractions in [0, 1].

Ties: a prediction is the first maximum over classes, as ``torch.argmax`` and ``np.argmax``
both return, so on equal scores the lower class index wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mgmrn.choices import AusucOrder, check_choice
from mgmrn.evaluation._arrays import as_class_subset, gzsl_inputs, to_numpy
from mgmrn.evaluation.metrics import harmonic_mean

# Bound on the (gammas x images) boolean block evaluated at once, to cap memory.
_BLOCK_ELEMENTS = 1 << 22


def calibrated_stacking(scores: Any, seen_classes: Any, gamma: float) -> Any:
    """Subtract ``gamma`` from the seen-class columns of ``scores``.

    Args:
        scores: (N, C) class scores, a torch tensor or an array; not modified.
        seen_classes: indices of the seen classes, in [0, C).
        gamma: the calibration constant.

    Returns:
        (N, C) calibrated scores, a tensor (same dtype and device) for a tensor input, else
        a numpy array.
    """
    if isinstance(scores, torch.Tensor):
        seen = as_class_subset(seen_classes, scores.shape[-1], "seen_classes")
        calibrated = scores.clone()
        calibrated[..., torch.as_tensor(seen, device=scores.device)] -= gamma
        return calibrated
    array = to_numpy(scores)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64
    calibrated = np.array(array, dtype=dtype)
    calibrated[..., as_class_subset(seen_classes, calibrated.shape[-1], "seen_classes")] -= gamma
    return calibrated


def calibration_record(gamma: float, split: str) -> dict[str, Any]:
    """What a checkpoint keeps of its run's calibration, for prediction to use.

    Args:
        gamma: the gamma of best H in the run's evaluation.
        split: the run's ``data.split``: ``val`` (gamma chosen on validation classes) or
            ``trainval`` (chosen on the test set: an oracle).
    """
    source = "validation split" if split == "val" else "test set (oracle)"
    return {"gamma": float(gamma), "split": split, "source": source}


def default_gamma(record: dict[str, Any] | None,
                  eval_gamma: float | None) -> tuple[float, str]:
    """The gamma that prediction uses unless told otherwise, and where it comes from.

    In order of preference: a gamma chosen on the validation split; the run's ``eval.gamma``
    (a gamma chosen elsewhere, by the user); the gamma chosen on the run's test set (an
    oracle, but the run's own); none (0).

    Args:
        record: :func:`calibration_record` of the checkpoint, or None where it holds none
            (a converted checkpoint, or one saved before its first evaluation).
        eval_gamma: the run's ``eval.gamma``.

    Returns:
        (gamma, a phrase saying where it comes from).
    """
    if record and record.get("split") == "val":
        return float(record["gamma"]), "chosen on the validation split"
    if eval_gamma is not None:
        return float(eval_gamma), "eval.gamma of the run's config"
    if record:
        return float(record["gamma"]), "chosen on the run's test set, an oracle"
    return 0.0, "none stored in the checkpoint: 0, uncalibrated"


def ausuc(seen: Any, unseen: Any, order: AusucOrder = "gamma") -> float:
    """Area under the seen-unseen accuracy curve, by the trapezoid rule.

    x = unseen accuracy, y = seen accuracy. Points are sorted by unseen accuracy. With
    ``order="gamma"`` points of equal unseen accuracy are sorted by seen accuracy, highest
    first: along a gamma sweep S never rises and U never falls as gamma grows, so this is the
    order of increasing gamma, and the area is that under the path the sweep traces. With
    ``order="release"`` the points, given in the published sweep's order (0, -step, -2 step,
    ..., +step, ...), are sorted stably by unseen accuracy alone, as published: ties met on the
    negative side keep S rising, which reverses them. Every point counts; the curve is not
    padded out to U = 0 or S = 0.

    Args:
        seen: (P,) seen accuracies, fractions.
        unseen: (P,) unseen accuracies, fractions.
        order: ``gamma`` or ``release``.

    Returns:
        The area, in [0, 1] for fractions; 0 for fewer than two points.
    """
    check_choice("order", order, AusucOrder)
    seen = np.asarray(to_numpy(seen), dtype=np.float64)
    unseen = np.asarray(to_numpy(unseen), dtype=np.float64)
    if order == "release":
        order = np.argsort(unseen, kind="stable")
    else:
        order = np.lexsort((-seen, unseen))
    x, y = unseen[order], seen[order]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


@dataclass(frozen=True)
class _SidePicks:
    """One image set reduced to what gamma can change: which side of the split wins.

    Subtracting gamma from every seen score keeps the order within each side, so per image
    only the best seen and best unseen score (and their classes) matter. Images are sorted
    by label so that per-class hit counts are one ``np.add.reduceat``.
    """

    best_seen: np.ndarray  # (N,) highest seen-class score
    best_unseen: np.ndarray  # (N,) highest unseen-class score
    seen_first: np.ndarray  # (N,) bool: on a tie, argmax meets the seen pick first
    hit_seen: np.ndarray  # (N,) bool: the seen pick is the label
    hit_unseen: np.ndarray  # (N,) bool: the unseen pick is the label
    class_starts: np.ndarray  # (K,) first position of each class in label order
    class_sizes: np.ndarray  # (K,) images per class

    @classmethod
    def build(cls, scores: np.ndarray, labels: np.ndarray, seen_mask: np.ndarray) -> _SidePicks:
        order = np.argsort(labels, kind="stable")
        scores, labels = scores[order], labels[order]
        # -inf hides the other side; argmax then keeps the first maximum within a side.
        seen_pick = np.argmax(np.where(seen_mask, scores, -np.inf), axis=1)
        unseen_pick = np.argmax(np.where(seen_mask, -np.inf, scores), axis=1)
        rows = np.arange(labels.size)
        _, starts, sizes = np.unique(labels, return_index=True, return_counts=True)
        return cls(scores[rows, seen_pick], scores[rows, unseen_pick], seen_pick < unseen_pick,
                   seen_pick == labels, unseen_pick == labels, starts, sizes)

    def margins(self) -> np.ndarray:
        """(N,) best seen minus best unseen score: the gamma at which an image changes side."""
        return self.best_seen - self.best_unseen

    def accuracy(self, gammas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-class accuracy at each gamma, and whether any image is right.

        Args:
            gammas: (G,) calibration constants.

        Returns:
            (G,) mean per-class accuracies and (G,) bool "at least one hit".
        """
        shifted = self.best_seen[None, :] - gammas[:, None]
        seen_wins = (shifted > self.best_unseen) | ((shifted == self.best_unseen) & self.seen_first)
        hits = np.where(seen_wins, self.hit_seen, self.hit_unseen)
        per_class = np.add.reduceat(hits, self.class_starts, axis=1, dtype=np.int64)
        return (per_class / self.class_sizes).mean(axis=1), hits.any(axis=1)


def _sweep_one_way(seen_imgs: _SidePicks, unseen_imgs: _SidePicks, step: float, sign: int,
                   cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gammas sign*step, sign*2 step, ... up to and including the first whose accuracy is 0.

    The accuracy watched is the one gamma drives down: seen for sign +1, unseen for -1. Once
    |gamma| exceeds ``cap`` every image sits on one side and nothing changes any more, so the
    sweep also ends there (with valid labels the watched accuracy is 0 by then anyway).

    Returns:
        (G,) gammas, (G,) seen accuracies, (G,) unseen accuracies, in sweep order.
    """
    last_k = int(np.ceil(cap / step)) + 1
    block = max(1, _BLOCK_ELEMENTS // (seen_imgs.best_seen.size + unseen_imgs.best_seen.size))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for first_k in range(1, last_k + 1, block):
        # k * step rather than a running sum, which would drift (0.1 + 0.2 != 0.3).
        gammas = sign * step * np.arange(first_k, min(first_k + block, last_k + 1))
        seen_acc, seen_any = seen_imgs.accuracy(gammas)
        unseen_acc, unseen_any = unseen_imgs.accuracy(gammas)
        exhausted = ~seen_any if sign > 0 else ~unseen_any
        if exhausted.any():
            end = int(np.argmax(exhausted)) + 1
            parts.append((gammas[:end], seen_acc[:end], unseen_acc[:end]))
            break
        parts.append((gammas, seen_acc, unseen_acc))
    if not parts:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    gammas, seen_acc, unseen_acc = (np.concatenate(column) for column in zip(*parts, strict=True))
    return gammas, seen_acc, unseen_acc


def gamma_sweep(scores_seen_imgs: Any, labels_seen: Any, scores_unseen_imgs: Any,
                labels_unseen: Any, seen_classes: Any, step: float = 0.01,
                ausuc_order: str = "gamma") -> dict[str, Any]:
    """The release's calibrated-stacking sweep, vectorised.

    From gamma = 0, gamma goes up in steps of ``step`` until the seen accuracy S reaches 0,
    and down until the unseen accuracy U reaches 0; the point where it reaches 0 is kept.
    A direction whose accuracy is already 0 at gamma = 0 is not swept. Each gamma costs
    O(N): only the winning side of each image changes (see ``_SidePicks``).

    The best point is the first maximum of H in the release's visiting order: 0, -step,
    -2 step, ..., then +step, +2 step, ...; on a plateau of equal H this keeps the gamma
    nearest 0.

    Args:
        scores_seen_imgs: (Ns, C) scores over all classes of the seen-class test images.
        labels_seen: (Ns,) their classes, all in ``seen_classes``.
        scores_unseen_imgs: (Nu, C) scores of the unseen-class test images.
        labels_unseen: (Nu,) their classes, none in ``seen_classes``.
        seen_classes: indices of the seen classes; every other column is an unseen class.
        step: gamma increment, > 0.
        ausuc_order: how :func:`ausuc` orders points of equal unseen accuracy.

    Returns:
        ``points``: list of (gamma, S, U, H) for every gamma visited, sorted by gamma;
        ``best``: the (gamma, S, U, H) of highest H; ``ausuc``: :func:`ausuc` over all points.
        Accuracies are fractions.
    """
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    data = gzsl_inputs(scores_seen_imgs, labels_seen, scores_unseen_imgs, labels_unseen,
                       seen_classes)
    seen_imgs = _SidePicks.build(data.scores_seen_imgs, data.labels_seen, data.seen_mask)
    unseen_imgs = _SidePicks.build(data.scores_unseen_imgs, data.labels_unseen, data.seen_mask)
    margins = np.concatenate([seen_imgs.margins(), unseen_imgs.margins()])

    zero = np.zeros(1)
    seen0, seen0_any = seen_imgs.accuracy(zero)
    unseen0, unseen0_any = unseen_imgs.accuracy(zero)
    visited = [(zero, seen0, unseen0)]
    if unseen0_any[0]:
        visited.append(_sweep_one_way(seen_imgs, unseen_imgs, step, -1, max(-margins.min(), 0.0)))
    if seen0_any[0]:
        visited.append(_sweep_one_way(seen_imgs, unseen_imgs, step, +1, max(margins.max(), 0.0)))
    gammas, seen_acc, unseen_acc = (np.concatenate(column) for column in zip(*visited, strict=True))
    h = harmonic_mean(seen_acc, unseen_acc)

    best = int(np.argmax(h))
    by_gamma = np.argsort(gammas, kind="stable")
    points = [(float(gammas[i]), float(seen_acc[i]), float(unseen_acc[i]), float(h[i]))
              for i in by_gamma]
    return {
        "points": points,
        "best": (float(gammas[best]), float(seen_acc[best]), float(unseen_acc[best]),
                 float(h[best])),
        "ausuc": ausuc(seen_acc, unseen_acc, ausuc_order),
    }

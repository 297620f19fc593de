"""The CZSL and GZSL protocols on precomputed class scores.

Scores always cover all C classes (columns in class-index order) and labels are class
indices in [0, C). Predictions are the first maximum, as ``torch.argmax`` returns: on equal
scores the lower class index wins.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mgmrn.evaluation._arrays import (
    as_class_subset,
    as_labels,
    as_scores,
    check_labels_in,
    gzsl_inputs,
)
from mgmrn.evaluation.calibration import calibrated_stacking, gamma_sweep
from mgmrn.evaluation.metrics import harmonic_mean, per_class_accuracy
from mgmrn.evaluation.results import Curve, FixedGamma, GZSLPoint, ZSLFigures


def czsl_accuracy(scores: Any, labels: Any, unseen_classes: Any) -> float:
    """Conventional ZSL: unseen-class images, searched over the unseen classes only.

    Args:
        scores: (N, C) scores over all classes; seen-class columns are ignored.
        labels: (N,) classes of the images, all in ``unseen_classes``.
        unseen_classes: indices of the unseen classes.

    Returns:
        Mean per-class top-1 accuracy, a fraction.
    """
    scores = as_scores(scores, "scores")
    labels = as_labels(labels, "labels")
    unseen = as_class_subset(unseen_classes, scores.shape[1], "unseen_classes")
    check_labels_in(labels, unseen, "labels", "unseen_classes")
    predictions = unseen[np.argmax(scores[:, unseen], axis=1)]
    return per_class_accuracy(predictions, labels)


def gzsl_accuracy(scores_seen_imgs: Any, labels_seen: Any, scores_unseen_imgs: Any,
                  labels_unseen: Any, seen_classes: Any,
                  gamma: float = 0.0) -> tuple[float, float, float]:
    """Generalized ZSL at one calibration gamma: search over all classes.

    Args:
        scores_seen_imgs: (Ns, C) scores of the seen-class test images.
        labels_seen: (Ns,) their classes, all in ``seen_classes``.
        scores_unseen_imgs: (Nu, C) scores of the unseen-class test images.
        labels_unseen: (Nu,) their classes, none in ``seen_classes``.
        seen_classes: indices of the seen classes; every other column is an unseen class.
        gamma: subtracted from every seen-class score (calibrated stacking).

    Returns:
        (S, U, H): per-class accuracies on seen and unseen images and their harmonic mean,
        fractions.
    """
    data = gzsl_inputs(scores_seen_imgs, labels_seen, scores_unseen_imgs, labels_unseen,
                       seen_classes)
    seen = np.flatnonzero(data.seen_mask)
    accuracies = []
    for scores, labels in ((data.scores_seen_imgs, data.labels_seen),
                           (data.scores_unseen_imgs, data.labels_unseen)):
        predictions = np.argmax(calibrated_stacking(scores, seen, gamma), axis=1)
        accuracies.append(per_class_accuracy(predictions, labels))
    s, u = accuracies
    return s, u, harmonic_mean(s, u)


def zsl_figures(scores_seen_imgs: Any, labels_seen: Any, scores_unseen_imgs: Any,
                labels_unseen: Any, seen_classes: Any, unseen_classes: Any,
                fixed_gamma: float | None = None, step: float = 0.01,
                ausuc_order: str = "gamma") -> ZSLFigures:
    """Every ZSL figure from the test-set scores, in PERCENT (except gammas).

    The oracle gamma is chosen on these very images (as the release does); ``fixed_gamma``,
    e.g. chosen on a validation split, gives the honest figure.

    Args:
        scores_seen_imgs: (Ns, C) scores over all classes of the seen-class test images.
        labels_seen: (Ns,) their classes.
        scores_unseen_imgs: (Nu, C) scores of the unseen-class test images (also the CZSL set).
        labels_unseen: (Nu,) their classes.
        seen_classes: indices of the seen classes.
        unseen_classes: indices of the unseen classes (the CZSL search space).
        fixed_gamma: a gamma chosen elsewhere; its figures fill ``fixed_gamma`` when given.
        step: gamma increment of the sweep.
        ausuc_order: ``gamma`` or ``release`` (see :func:`ausuc`).
    """
    sweep = gamma_sweep(scores_seen_imgs, labels_seen, scores_unseen_imgs, labels_unseen,
                        seen_classes, step=step, ausuc_order=ausuc_order)
    gammas, seen, unseen, h = (np.array(column) for column in zip(*sweep["points"], strict=True))
    at_zero = int(np.flatnonzero(gammas == 0.0)[0])
    best_gamma, best_s, best_u, best_h = sweep["best"]
    fixed = None
    if fixed_gamma is not None:
        s, u, hm = gzsl_accuracy(scores_seen_imgs, labels_seen, scores_unseen_imgs,
                                 labels_unseen, seen_classes, gamma=fixed_gamma)
        fixed = FixedGamma(float(fixed_gamma), 100.0 * s, 100.0 * u, 100.0 * hm)
    return ZSLFigures(
        czsl_acc=100.0 * czsl_accuracy(scores_unseen_imgs, labels_unseen, unseen_classes),
        gzsl_seen=100.0 * best_s,
        gzsl_unseen=100.0 * best_u,
        gzsl_h=100.0 * best_h,
        gamma=best_gamma,
        ausuc=100.0 * sweep["ausuc"],
        gzsl_uncalibrated=GZSLPoint(100.0 * float(seen[at_zero]), 100.0 * float(unseen[at_zero]),
                                    100.0 * float(h[at_zero])),
        curve=Curve(gammas.tolist(), (100.0 * seen).tolist(), (100.0 * unseen).tolist(),
                    (100.0 * h).tolist()),
        fixed_gamma=fixed,
    )

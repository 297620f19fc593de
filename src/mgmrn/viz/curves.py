"""Figures of an evaluation: the seen-unseen curve and per-class accuracy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mgmrn.viz._figure import new_figure, save_png

log = logging.getLogger(__name__)

CURVE_SIZE = (640, 520)  # pixels
BAR_WIDTH = 720
BAR_ROW = 18  # pixels per class in the per-class chart
BAR_MARGIN = 110  # pixels of the per-class chart outside its bars

CURVE_FILE = "seen_unseen_curve.png"
PER_CLASS_FILE = "per_class_accuracy.png"


def plot_seen_unseen_curve(results: dict[str, Any], path: str | Path) -> Path:
    """The calibrated-stacking sweep as seen accuracy against unseen accuracy.

    Args:
        results: ``ZSLFigures.to_json()`` (percent): ``curve`` {gamma, seen, unseen},
            ``gamma``, ``gzsl_seen``, ``gzsl_unseen``, ``gzsl_h``, ``ausuc``; optionally
            ``gzsl_uncalibrated``, ``fixed_gamma`` and ``calibration``.
        path: the PNG to write.

    Returns:
        ``path``; the PNG is 640 x 520 pixels.
    """
    curve = results["curve"]
    gammas = np.asarray(curve["gamma"], dtype=float)
    seen = np.asarray(curve["seen"], dtype=float)
    unseen = np.asarray(curve["unseen"], dtype=float)
    order = np.argsort(gammas, kind="stable")
    fig = new_figure(*CURVE_SIZE)
    ax = fig.add_subplot()
    ax.plot(unseen[order], seen[order], "-", color="tab:blue", lw=1.5, label="gamma sweep")
    ax.plot(results["gzsl_unseen"], results["gzsl_seen"], "*", color="tab:red", ms=14,
            label=f"chosen gamma = {results['gamma']:.2f} (H = {results['gzsl_h']:.1f})")
    zero = _gamma_zero_point(results, gammas, seen, unseen)
    if zero is not None:
        ax.plot(zero[0], zero[1], "o", color="black", ms=7, label=f"gamma = 0 (H = {zero[2]:.1f})")
    if "fixed_gamma" in results:
        fixed = results["fixed_gamma"]
        ax.plot(fixed["unseen"], fixed["seen"], "D", color="tab:green", ms=7,
                label=f"fixed gamma = {fixed['gamma']:.2f} (H = {fixed['h']:.1f})")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("unseen accuracy U (%)")
    ax.set_ylabel("seen accuracy S (%)")
    ax.set_title(f"Seen-unseen curve, AUSUC = {results['ausuc']:.2f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8,
              title=results.get("calibration"), title_fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def _gamma_zero_point(results, gammas, seen, unseen) -> tuple[float, float, float] | None:
    """(U, S, H) at gamma 0, from the results or, for older results, from the curve."""
    if "gzsl_uncalibrated" in results:
        u = results["gzsl_uncalibrated"]
        return u["unseen"], u["seen"], u["h"]
    at_zero = np.flatnonzero(gammas == 0.0)
    if not at_zero.size:
        return None
    s, u = seen[at_zero[0]], unseen[at_zero[0]]
    return u, s, (2 * s * u / (s + u) if s + u > 0 else 0.0)


def per_class_figure_size(n_classes: int) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_per_class_accuracy` for ``n_classes`` bars."""
    return BAR_WIDTH, BAR_MARGIN + BAR_ROW * max(n_classes, 5)


def plot_per_class_accuracy(per_class: dict[str, float], path: str | Path,
                            title: str = "Unseen classes: top-1 accuracy") -> Path:
    """Horizontal bars of per-class accuracy, best class on top, with the mean marked.

    Args:
        per_class: class name -> accuracy in percent.
        path: the PNG to write.
        title: the figure title.

    Returns:
        ``path``; the size is :func:`per_class_figure_size` of the number of classes.
    """
    if not per_class:
        raise ValueError("per_class is empty: no class accuracies to plot")
    names, values = zip(*sorted(per_class.items(), key=lambda item: -item[1]),
                        strict=True)
    values = np.asarray(values, dtype=float)
    fig = new_figure(*per_class_figure_size(len(names)))
    ax = fig.add_subplot()
    rows = np.arange(len(names))
    ax.barh(rows, values, color="tab:blue", height=0.75)
    mean = float(values.mean())
    ax.axvline(mean, color="tab:red", ls="--", lw=1, label=f"mean {mean:.1f}")
    ax.set_yticks(rows, names, fontsize=7 if len(names) > 30 else 8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def write_eval_figures(results: dict[str, Any], folder: str | Path,
                       per_class: dict[str, float] | None = None) -> list[Path]:
    """Every evaluation figure that the inputs allow, written into ``folder``.

    A figure that fails is logged and skipped: the results are already written, and a plotting
    problem must not turn a finished run into a failed one.

    Args:
        results: ``ZSLFigures.to_json()`` (see :func:`plot_seen_unseen_curve`).
        folder: where to write (next to results.json).
        per_class: unseen class name -> accuracy in percent, for ``per_class_accuracy.png``.

    Returns:
        The figures written.
    """
    folder = Path(folder)
    jobs = []
    if "curve" in results:
        jobs.append((CURVE_FILE, lambda p: plot_seen_unseen_curve(results, p)))
    if per_class:
        jobs.append((PER_CLASS_FILE, lambda p: plot_per_class_accuracy(per_class, p)))
    written = []
    for name, draw in jobs:
        try:
            path = draw(folder / name)
        except Exception as err:  # noqa: BLE001 - see the docstring
            log.warning("could not draw %s (%s: %s)", folder / name, type(err).__name__, err)
            continue
        if path is not None:
            written.append(path)
            log.info("figure written to %s", path)
    return written

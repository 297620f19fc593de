"""One figure comparing runs: attribute-group accuracy and seen-unseen curves side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mgmrn.viz._figure import new_figure, save_png

COMPARISON_SIZE = (1200, 500)  # pixels
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_comparison(entries: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
                    path: str | Path) -> Path:
    """Left: per attribute group, each run's accuracy; right: each run's seen-unseen curve.

    Args:
        entries: per run, ``label`` and ``attribute_accuracy`` {group: percent}.
        results: per run, its evaluation (``curve`` {gamma, seen, unseen}, ``gzsl_seen``,
            ``gzsl_unseen``, ``gzsl_h``, ``ausuc``).
        path: the PNG to write.

    Returns:
        ``path``; the PNG is 1200 x 500 pixels.
    """
    if len(entries) != len(results):
        raise ValueError(f"{len(entries)} runs but {len(results)} results")
    fig = new_figure(*COMPARISON_SIZE)
    bars, curves = fig.subplots(1, 2)
    groups = list(dict.fromkeys(g for e in entries for g in e["attribute_accuracy"]))
    x = np.arange(len(groups))
    width = 0.8 / max(len(entries), 1)
    for i, entry in enumerate(entries):
        values = [entry["attribute_accuracy"].get(g, np.nan) for g in groups]
        offset = (i - (len(entries) - 1) / 2) * width
        drawn = bars.bar(x + offset, values, width, label=entry["label"],
                         color=COLOURS[i % len(COLOURS)])
        bars.bar_label(drawn, fmt="%.0f", fontsize=7)
    bars.set_xticks(x, [g.replace("_", " ") for g in groups])
    bars.set_ylim(0, 105)
    bars.set_ylabel("accuracy of the predicted value (%)")
    bars.set_title("Attribute values named right, unseen test images")
    bars.legend(loc="lower right", fontsize=8)
    bars.grid(axis="y", alpha=0.3)
    for i, (entry, result) in enumerate(zip(entries, results)):
        curve = result["curve"]
        order = np.argsort(np.asarray(curve["gamma"], dtype=float), kind="stable")
        colour = COLOURS[i % len(COLOURS)]
        curves.plot(np.asarray(curve["unseen"])[order], np.asarray(curve["seen"])[order], "-",
                    color=colour, lw=1.5,
                    label=f"{entry['label']}: AUSUC {result['ausuc']:.1f}")
        curves.plot(result["gzsl_unseen"], result["gzsl_seen"], "*", color=colour, ms=12,
                    label=f"oracle gamma {result['gamma']:.2f}: H {result['gzsl_h']:.1f}")
        if "fixed_gamma" in result:
            fixed = result["fixed_gamma"]
            curves.plot(fixed["unseen"], fixed["seen"], "D", color=colour, ms=6,
                        label=f"fixed gamma {fixed['gamma']:.2f}: H {fixed['h']:.1f}")
    curves.set_xlim(0, 100)
    curves.set_ylim(0, 100)
    curves.set_xlabel("unseen accuracy U (%)")
    curves.set_ylabel("seen accuracy S (%)")
    curves.set_title("Seen-unseen curves (calibrated stacking)")
    curves.grid(alpha=0.3)
    curves.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)

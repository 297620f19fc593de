"""Training curves of a run, from the records of its ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from mgmrn.data.errors import DataError
from mgmrn.viz._figure import new_figure, save_png

TRAINING_SIZE = (900, 360)  # pixels
ACCURACIES = (("czsl_acc", "CZSL"), ("gzsl_seen", "GZSL S"), ("gzsl_unseen", "GZSL U"),
              ("gzsl_h", "GZSL H"))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, one per epoch; a torn last line (a run still writing,
    or killed mid-write) is left out.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line before the last that is not a JSON object, naming the file and line.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise DataError(f"{path} line {number}: not a JSON record") from None
        if not isinstance(record, dict) or "epoch" not in record:
            raise DataError(f"{path} line {number}: expected a JSON object with an 'epoch'")
        records.append(record)
    return records


def plot_training_curves(records: Sequence[dict[str, Any]], path: str | Path,
                         title: str = "Training") -> Path:
    """Loss per level and accuracies per evaluated epoch, side by side.

    Args:
        records: ``metrics.jsonl`` records (``epoch``, ``loss``, ``loss_<level>``, and on
            evaluated epochs ``czsl_acc``, ``gzsl_seen``, ``gzsl_unseen``, ``gzsl_h``).
        path: the PNG to write.
        title: the figure title.

    Returns:
        ``path``; the PNG is 900 x 360 pixels.
    """
    if not records:
        raise ValueError("no metrics records: nothing to plot")
    epochs = [r["epoch"] + 1 for r in records]
    fig = new_figure(*TRAINING_SIZE)
    loss_ax, acc_ax = fig.subplots(1, 2, sharex=True)
    keys = ["loss"] + sorted({k for r in records for k in r if k.startswith("loss_")})
    for key in keys:
        points = [(e, r[key]) for e, r in zip(epochs, records, strict=True) if key in r]
        if points:
            loss_ax.plot(*zip(*points, strict=True), marker=".", lw=2 if key == "loss" else 1,
                         label="total" if key == "loss" else key[5:])
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    loss_ax.legend(fontsize=8)
    loss_ax.grid(alpha=0.3)
    for key, label in ACCURACIES:
        points = [(e, r[key]) for e, r in zip(epochs, records, strict=True) if key in r]
        if points:
            acc_ax.plot(*zip(*points, strict=True), marker="o", ms=4, label=label)
    if acc_ax.lines:
        acc_ax.legend(fontsize=8)
    else:
        acc_ax.text(0.5, 0.5, "no evaluated epoch yet", ha="center", va="center",
                    transform=acc_ax.transAxes)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_ylim(0, 100)
    acc_ax.grid(alpha=0.3)
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)

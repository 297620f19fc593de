"""A figure of an exact pixel size on an Agg canvas, and its saving."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def new_figure(width: int, height: int) -> Figure:
    """A figure that saves to exactly ``width`` x ``height`` pixels.

    Args:
        width: pixels.
        height: pixels.
    """
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG; no ``bbox_inches="tight"``, which would change the pixel size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path

"""Attention maps of the attribute decoders, folded onto the image and drawn over it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..models.mgmrn import ZSLOutput, resize_keeping_mass, spatial_attention
from ._figure import new_figure, save_png

PANEL = 170  # pixels per panel side
TITLE = 40  # pixels above the panels for the figure title
FLAT_CONTRAST = 4.0  # a map's colour scale reaches at least this multiple of a uniform spread


def level_attention_maps(output: ZSLOutput, size: tuple[int, int],
                         attributes: Sequence[int] | None = None) -> torch.Tensor:
    """Each level's attention over image locations, at image resolution.

    A level's attention over all its tokens (own map, borrowed map, region tokens) is folded onto
    its own grid with :func:`spatial_attention`, then resized to ``size`` keeping each map's
    total, so every map is still a distribution over pixels.

    Args:
        output: a forward pass run with ``return_attention=True``.
        size: (H, W) of the input images.
        attributes: only these K attributes (default: all A); chosen before resizing, which
            would otherwise hold A full-size maps per level.

    Returns:
        (B, L, K, H, W) attention mass per pixel; each (H, W) map sums to one.

    Raises:
        ValueError: the output carries no attention (the baseline has none, or the forward pass
            was run without ``return_attention``).
    """
    if not output.attention or output.layouts is None or output.assignments is None:
        raise UsageError("this output has no attention maps: the model has no attention (the "
                         "baseline) or was run without return_attention=True")
    maps = []
    for attention, layout, assignments in zip(output.attention, output.layouts,
                                              output.assignments, strict=True):
        grid = spatial_attention(attention.float(), layout, assignments.float())  # (B, A, h, w)
        if attributes is not None:
            grid = grid[:, list(attributes)]
        maps.append(resize_keeping_mass(grid, size))
    return torch.stack(maps, dim=1)


def plot_attention(image: torch.Tensor, maps: torch.Tensor, attribute_names: Sequence[str],
                   level_names: Sequence[str], path: str | Path,
                   attribute_values: Sequence[float] | None = None,
                   title: str | None = None) -> Path:
    """One figure: a row per attribute, the image and then its attention at each level.

    Colours run from 0 to the larger of the map's maximum and ``FLAT_CONTRAST`` times the value
    of a uniform spread: a sharp map uses the whole scale, while a flat map (a level that looks
    everywhere) stays flat and cold instead of being stretched to a saturated, misleading colour.

    Args:
        image: (3, H, W) image in [0, 1] (e.g. ``denormalize`` of the network input).
        maps: (L, K, H, W) attention of K attributes at L levels, at the image's resolution.
        attribute_names: K names, one per row.
        level_names: L names, one per overlay column.
        path: the PNG to write.
        attribute_values: K predicted strengths, shown beside the names.
        title: the figure title.

    Returns:
        ``path``; the PNG is (1 + L) * 170 pixels wide and K * 170 + 40 high.
    """
    n_levels, n_attributes = maps.shape[:2]
    if len(attribute_names) != n_attributes or len(level_names) != n_levels:
        raise ValueError(f"maps {tuple(maps.shape)} need {n_levels} level names and "
                         f"{n_attributes} attribute names, got {len(level_names)} and "
                         f"{len(attribute_names)}")
    picture = image.detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    heat = maps.detach().float().cpu().numpy()
    uniform = heat.sum(axis=(2, 3), keepdims=True) / (heat.shape[2] * heat.shape[3])
    scale = np.maximum(heat.max(axis=(2, 3), keepdims=True), FLAT_CONTRAST * uniform)
    heat = heat / np.maximum(scale, 1e-12)
    height = n_attributes * PANEL + TITLE
    fig = new_figure((1 + n_levels) * PANEL, height)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - (TITLE + 4) / height,
                        wspace=0.08, hspace=0.3)
    axes = fig.subplots(n_attributes, 1 + n_levels, squeeze=False)
    for row, name in enumerate(attribute_names):
        value = "" if attribute_values is None else f" ({attribute_values[row]:.2f})"
        axes[row, 0].imshow(picture)
        axes[row, 0].set_title(f"{name}{value}", fontsize=8)
        for col, level in enumerate(level_names, start=1):
            axes[row, col].imshow(picture)
            axes[row, col].imshow(heat[col - 1, row], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0,
                                  interpolation="bilinear")
            axes[row, col].set_title(f"{name} - {level}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)

"""Attention maps of the attribute decoders, folded onto the image and drawn over it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mgmrn.errors import UsageError
from mgmrn.models.mgmrn import ZSLOutput, resize_keeping_mass, spatial_attention
from mgmrn.viz._figure import new_figure, save_png

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


def plot_explanations(pictures: torch.Tensor, output: ZSLOutput, strength: torch.Tensor,
                      image_names: Sequence[str], captions: Sequence[str],
                      attribute_names: Sequence[str], folder: str | Path, n_attributes: int = 3,
                      used_stems: set[str] | None = None) -> list[Path]:
    """One attention figure per image: its strongest attributes, where each level looks for them.

    Args:
        pictures: (B, 3, H, W) the images in [0, 1], as the network saw them.
        output: the network's output for them, run with ``return_attention=True``.
        strength: (B, A) attribute scores (mean over levels); the strongest are drawn.
        image_names: B image names (paths); a figure is named after its image's file stem.
        captions: B texts shown after the image's name in the title (e.g. the top class).
        attribute_names: A names.
        folder: where the figures are written.
        n_attributes: attributes per figure, at most A.
        used_stems: file stems taken by earlier figures of the same folder (updated): an image
            whose stem is taken gets ``<stem>-1``, ``<stem>-2``, ...

    Returns:
        B paths of the figures written.
    """
    used = set() if used_stems is None else used_stems
    maps = level_attention_maps(output, tuple(pictures.shape[-2:])).cpu()  # (B, L, A, H, W)
    strength = strength.float().cpu()
    paths = []
    for i, name in enumerate(image_names):
        chosen = strength[i].topk(min(n_attributes, strength.shape[1])).indices
        path = Path(folder) / f"{unique_stem(name, used)}.png"
        plot_attention(pictures[i], maps[i][:, chosen],
                       [attribute_names[int(a)] for a in chosen], list(output.levels), path,
                       attribute_values=[float(strength[i, a]) for a in chosen],
                       title=f"{short_name(name)}: {captions[i]}")
        paths.append(path)
    return paths


def short_name(name: str) -> str:
    """The last two parts of a path (folder and file), enough to tell images apart in a title."""
    return str(Path(*Path(name).parts[-2:])) if name else name


def unique_stem(name: str, used: set[str]) -> str:
    """A figure file name for an image: its file stem, numbered when two images share it."""
    stem = Path(name).stem
    candidate, n = stem, 1
    while candidate in used:
        candidate, n = f"{stem}-{n}", n + 1
    used.add(candidate)
    return candidate


def write_explanations(pictures: torch.Tensor, scores, found: list[dict], attribute_names:
                       Sequence[str], folder: Path, n_attributes: int = 3,
                       used_stems: set[str] | None = None) -> None:
    """The figures of :func:`plot_explanations` for a batch of predictions, each named in its
    result under ``explanation``.

    Args:
        pictures: (B, 3, H, W) the images in [0, 1].
        scores: the batch's :class:`~mgmrn.inference.scoring.Scores`, with attention.
        found: B prediction results (their top class captions the figure); updated.
    """
    captions = [f"{r['classes'][0]['name']} ({r['classes'][0]['score']:.1f})" for r in found]
    paths = plot_explanations(pictures, scores.output, scores.attributes,
                              [r["image"] for r in found], captions, attribute_names, folder,
                              n_attributes, used_stems)
    for result, path in zip(found, paths, strict=True):
        result["explanation"] = str(path)

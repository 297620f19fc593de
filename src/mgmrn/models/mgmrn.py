"""The Mg-MRN network: image -> per-level attribute scores -> class scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mgmrn.choices import Grouping, Halving, Norm, PrototypeInit
from mgmrn.models.classifier import cosine_class_scores
from mgmrn.models.decoder import AttributeDecoder
from mgmrn.models.granularity import GranularityModule
from mgmrn.models.refinement import MutualRefinement, tokens

LEVELS = ("fine", "middle", "coarse")


@dataclass
class TokenLayout:
    """Where a level's tokens come from, in order: own map, borrowed map, region tokens."""

    own: tuple[int, int]
    borrowed: tuple[int, int] | None
    regions: int


@dataclass
class ZSLOutput:
    """What a zero-shot network returns for a batch.

    Attributes:
        attribute_scores: per level, (B, A).
        class_scores: per level, (B, C), tau-scaled cosine scores.
        logits: (B, C), the sum over levels (used for prediction).
        attention: per level, (B, A, T) over that level's tokens, when asked for.
        layouts: per level, the token layout, when attention was asked for.
        assignments: per level, region-grouping assignments (B, K, H, W), when asked for.
    """

    attribute_scores: list[torch.Tensor]
    class_scores: list[torch.Tensor]
    logits: torch.Tensor
    attention: list[torch.Tensor] | None = None
    layouts: list[TokenLayout] | None = None
    assignments: list[torch.Tensor] | None = None
    levels: tuple[str, ...] = field(default=LEVELS)


class MgMRN(nn.Module):
    """Multi-Granularity Mutual Refinement Network.

    Args:
        backbone: multi-stage extractor: any module that maps images (B, 3, H, W) to three maps
            at strides 8, 16, 32 (finest first) and has ``channels``, their channel counts
            (:class:`Backbone` wraps timm's models).
        attribute_vectors: (A, E) attribute word vectors, the decoder's queries.
        dim: D, channel width of the level maps.
        attn_dim: M, attention width of the decoders.
        num_parts: K, region-grouping parts per level.
        scaled_attention: divide attention logits by sqrt(M).
        resize_before_projection: halve fine and middle maps before their 3x3 projection.
        tau: temperature of the cosine classifier.
        norm: normalisation of the level projections, ``group`` (published) or ``batch``.
        grouping: ``regions`` (K region tokens per level) or ``identity`` (as published).
        halving: ``mean`` (2x2 mean) or ``align_corners`` (as published).
        prototype_init: ``normal`` (std 1, as published) or ``scaled`` (std D^-1/2).
    """

    levels = LEVELS
    has_attention = True  # forward(..., return_attention=True) fills ZSLOutput.attention

    def __init__(self, backbone: nn.Module, attribute_vectors: torch.Tensor, dim: int = 2048,
                 attn_dim: int = 1024, num_parts: int = 5, scaled_attention: bool = False,
                 resize_before_projection: bool = False, tau: float = 20.0, norm: Norm = "group",
                 grouping: Grouping = "regions", halving: Halving = "mean",
                 prototype_init: PrototypeInit = "normal"):
        super().__init__()
        if len(backbone.channels) != len(LEVELS):
            raise ValueError(f"the backbone must return {len(LEVELS)} maps, finest first; its "
                             f"channels are {list(backbone.channels)}")
        self.backbone = backbone
        # kept in the precision given (float64 for parity checks); cast to the weights' in forward
        self.register_buffer("word_vectors", attribute_vectors.detach().clone())
        self.tau = tau
        num_attributes, word_dim = attribute_vectors.shape
        self.granularity = nn.ModuleList(
            GranularityModule(c, dim, num_parts, downsample=i < 2,
                              resize_before_projection=resize_before_projection, norm=norm,
                              grouping=grouping, halving=halving)
            for i, c in enumerate(backbone.channels)
        )
        self.refinement = MutualRefinement(dim, num_levels=len(LEVELS))
        self.decoders = nn.ModuleList(
            AttributeDecoder(num_attributes, word_dim, dim, attn_dim, scaled=scaled_attention,
                             prototype_init=prototype_init)
            for _ in LEVELS
        )

    def forward(self, images: torch.Tensor, class_attributes: torch.Tensor,
                return_attention: bool = False) -> ZSLOutput:
        """images: (B, 3, H, W); class_attributes: (C, A) of the classes to score."""
        features = self.backbone(images)
        maps, regions, assignments = zip(*(g(x) for g, x in zip(self.granularity, features)))
        borrowed = self.refinement(list(maps))
        attribute_scores, class_scores, attention, layouts = [], [], [], []
        for level_map, extra, level_regions, decoder in zip(maps, borrowed, regions, self.decoders):
            parts = [tokens(level_map)] + ([tokens(extra)] if extra is not None else [])
            parts += [level_regions] if level_regions.shape[1] else []
            words = self.word_vectors.to(decoder.query.weight.dtype)
            scores, attn = decoder(torch.cat(parts, dim=1), words, return_attention)
            attribute_scores.append(scores)
            class_scores.append(cosine_class_scores(scores, class_attributes, self.tau))
            attention.append(attn)
            layouts.append(TokenLayout(tuple(level_map.shape[2:]),
                                       tuple(extra.shape[2:]) if extra is not None else None,
                                       level_regions.shape[1]))
        return ZSLOutput(
            attribute_scores=attribute_scores,
            class_scores=class_scores,
            logits=torch.stack(class_scores).sum(0),
            attention=attention if return_attention else None,
            layouts=layouts if return_attention else None,
            assignments=list(assignments) if return_attention else None,
            levels=self.levels,
        )


def spatial_attention(attention: torch.Tensor, layout: TokenLayout,
                      assignments: torch.Tensor) -> torch.Tensor:
    """Fold a level's attention over all its tokens onto its own spatial grid.

    Borrowed-map tokens are resized onto the grid; a region token's weight is spread over the
    locations by that part's assignment map.

    Args:
        attention: (B, A, T) attention of one level.
        layout: that level's token layout.
        assignments: (B, K, H', W') the level's region assignments.

    Returns:
        (B, A, h, w) attention mass per location; sums to one over locations.
    """
    b, a, _ = attention.shape
    h, w = layout.own
    n_own = h * w
    grid = attention[..., :n_own].reshape(b, a, h, w)
    offset = n_own
    if layout.borrowed is not None:
        bh, bw = layout.borrowed
        extra = attention[..., offset:offset + bh * bw].reshape(b, a, bh, bw)
        grid = grid + resize_keeping_mass(extra, (h, w))
        offset += bh * bw
    if not layout.regions:  # the published grouping has no region tokens
        return grid
    region_weights = attention[..., offset:offset + layout.regions]  # (B, A, K)
    parts = resize_keeping_mass(assignments, (h, w))  # (B, K, h, w)
    parts = parts / parts.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return grid + torch.einsum("bak,bkhw->bahw", region_weights, parts)


def resize_keeping_mass(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, N, h, w) maps to ``size``, rescaled to keep each map's total."""
    total = x.sum(dim=(2, 3), keepdim=True)
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp_min(0)
    return y / y.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12) * total

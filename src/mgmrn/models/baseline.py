"""A plain zero-shot baseline: pooled coarse features, a linear map to attributes, cosine scores."""

from __future__ import annotations

import torch
from torch import nn

from mgmrn.models.backbone import Backbone
from mgmrn.models.classifier import cosine_class_scores
from mgmrn.models.mgmrn import ZSLOutput


class GlobalBaseline(nn.Module):
    """Global average pooled stride-32 features -> linear map to A attributes -> cosine classifier.

    The same backbone and classifier as Mg-MRN without the region, refinement and decoder heads,
    so comparing the two measures what the heads add.
    """

    levels = ("global",)
    has_attention = False

    def __init__(self, backbone: Backbone, num_attributes: int, tau: float = 20.0):
        super().__init__()
        self.backbone = backbone
        self.to_attributes = nn.Linear(backbone.channels[-1], num_attributes)
        self.tau = tau

    def forward(self, images: torch.Tensor, class_attributes: torch.Tensor,
                return_attention: bool = False) -> ZSLOutput:
        """images: (B, 3, H, W); class_attributes: (C, A). Has no attention to return."""
        pooled = self.backbone(images)[-1].mean(dim=(2, 3))
        scores = self.to_attributes(pooled)
        class_scores = cosine_class_scores(scores, class_attributes, self.tau)
        return ZSLOutput([scores], [class_scores], class_scores, levels=self.levels)

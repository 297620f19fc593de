"""Cosine classifier: predicted attribute vectors against class attribute vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_class_scores(attribute_scores: torch.Tensor, class_attributes: torch.Tensor,
                        tau: float) -> torch.Tensor:
    """``tau * cos(s, z_c)`` for every image and class.

    Args:
        attribute_scores: (B, A) predicted attribute strengths s.
        class_attributes: (C, A) class attribute vectors z_c.
        tau: temperature.

    Returns:
        (B, C) class scores.
    """
    s = F.normalize(attribute_scores, dim=-1)
    z = F.normalize(class_attributes.to(s.dtype), dim=-1)
    return tau * s @ z.t()

"""Cosine classifier: predicted attribute vectors against class attribute vectors."""

from __future__ import annotations

import torch

# added to every norm, as published: x / (||x|| + eps)
NORM_EPS = 1e-10


def l2_normalize(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """``x / (||x|| + eps)`` along the last dimension, the published normalisation.

    For any vector that is not vanishingly small this equals ``F.normalize`` to rounding; the
    published form is kept so that scores and losses match the published code to 1e-9.
    """
    return x / (x.norm(dim=-1, keepdim=True) + eps)


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
    s = l2_normalize(attribute_scores)
    z = l2_normalize(class_attributes.to(s.dtype))
    return tau * s @ z.t()

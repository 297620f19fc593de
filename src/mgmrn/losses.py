"""Training losses of one level, as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def semantic_cross_entropy(class_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, C) class scores against labels in 0..C-1."""
    return F.cross_entropy(class_scores, labels)


def attribute_regression(attribute_scores: torch.Tensor, class_attributes: torch.Tensor,
                         labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``s / ||s||`` and ``z_y / ||z_y||``, averaged over all entries.

    Args:
        attribute_scores: (B, A) predicted attribute strengths.
        class_attributes: (C, A) attribute vectors of the classes the labels index.
        labels: (B,) class indices.
    """
    target = F.normalize(class_attributes[labels].to(attribute_scores.dtype), dim=-1)
    return F.mse_loss(F.normalize(attribute_scores, dim=-1), target)


def level_loss(class_scores: torch.Tensor, attribute_scores: torch.Tensor,
               class_attributes: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """Cross-entropy plus ``lam`` times the attribute regression, for one level."""
    return (semantic_cross_entropy(class_scores, labels)
            + lam * attribute_regression(attribute_scores, class_attributes, labels))

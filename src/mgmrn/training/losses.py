"""Training losses: pure functions of one level, and the criterion that applies them per level."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mgmrn.models.classifier import l2_normalize


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
    target = l2_normalize(class_attributes[labels].to(attribute_scores.dtype))
    return F.mse_loss(l2_normalize(attribute_scores), target)


class ZSLCriterion:
    """The training loss of every level of a network, for one set of training classes.

    Holds the class attributes the labels index and the regression weight, so the eager and
    the graphed training steps compute the same losses from a network's output alone.

    Args:
        class_attributes: (S, A) attributes of the training classes; labels index its rows.
        lam: weight of the attribute regression.
    """

    def __init__(self, class_attributes: torch.Tensor, lam: float):
        self.class_attributes = class_attributes
        self.lam = lam

    def to(self, device: torch.device | str) -> ZSLCriterion:
        return ZSLCriterion(self.class_attributes.to(device), self.lam)

    def parts(self, output, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level, (cross-entropy, attribute regression), computed in at least fp32."""
        return [(semantic_cross_entropy(_at_least_fp32(c), labels),
                 attribute_regression(_at_least_fp32(a), self.class_attributes, labels))
                for c, a in zip(output.class_scores, output.attribute_scores)]

    def __call__(self, output, labels: torch.Tensor) -> list[torch.Tensor]:
        """output: a network's ``ZSLOutput`` on a batch; labels: (B,). -> per-level losses."""
        return [ce + self.lam * reg for ce, reg in self.parts(output, labels)]


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision scores are lifted to fp32 for the loss; fp64 stays fp64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x

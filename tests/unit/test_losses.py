"""Losses against hand-computed values."""

from __future__ import annotations

import math

import torch

from mgmrn.training.losses import attribute_regression, semantic_cross_entropy


def test_cross_entropy_by_hand():
    scores = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    # -log(e^2/(e^2+1)) and -log(1/2)
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert math.isclose(semantic_cross_entropy(scores, labels).item(), expected, rel_tol=1e-6)


def test_attribute_regression_is_mse_of_normalised_vectors():
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z = torch.tensor([[0.0, 2.0], [5.0, 0.0]])
    labels = torch.tensor([0, 1])
    # row 0: (0.6, 0.8) vs (0, 1): 0.36 + 0.04; row 1: identical: 0; mean over 4 entries
    assert math.isclose(attribute_regression(s, z, labels).item(), 0.4 / 4, rel_tol=1e-6)

"""benchmarks/memory.py's CPU estimate: the bytes autograd saves, counted by hand on a toy
network, each storage once and parameters left out; gradient checkpointing lowers them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ..helpers import load_script


@pytest.fixture(scope="module")
def memory():
    return load_script("benchmarks/memory.py")


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 3, 1, 1))

    def forward(self, images, attributes):
        scaled = images * self.weight  # saves images (and the weight, a parameter)
        return scaled.relu().sum() + scaled.sigmoid().sum()  # relu and sigmoid save their outputs


def test_saved_bytes_count_each_storage_once_without_parameters(memory):
    images = torch.randn(2, 3, 4, 5, requires_grad=True)
    one = images.numel() * 4
    assert memory.saved_bytes(Toy(), images, torch.zeros(1)) == 3 * one  # images, relu, sigmoid


def test_gradient_checkpointing_saves_less_per_image(memory):
    plain = memory.estimate_cpu("test_vit", 64, 1, False)
    checkpointed = memory.estimate_cpu("test_vit", 64, 1, True)
    assert checkpointed["static_mb"] == plain["static_mb"]
    assert checkpointed["activations_mb_per_image"] < plain["activations_mb_per_image"]
    assert plain["how"].startswith("CPU estimate")

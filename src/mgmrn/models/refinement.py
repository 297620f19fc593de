"""Mutual refinement module (MRM): finer levels borrow refined features of coarser ones."""

from __future__ import annotations

import torch
from torch import nn


def c2_xavier_fill(module: nn.Module) -> None:
    """The published initialisation of the SCAM 1x1 convolution (fvcore's ``c2_xavier_fill``).

    ``kaiming_uniform_(a=1)``: uniform within ``sqrt(3 / fan_in)``, std ``fan_in^-1/2``; bias 0.
    For the fine level's 4096 -> 2048 projection that is std 0.0156, where ``xavier_uniform_``
    would draw 0.0180.
    """
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


class SpatialChannelAttention(nn.Module):
    """SCAM(C_in -> D): a 1x1 projection gated per channel and per location.

    ``y = conv1x1(x)``; ``g_c = sigmoid(MLP(avgpool(y)))``; ``g_s = sigmoid(conv3x3(y))``;
    output ``y * g_c * g_s``. The projection starts as published (:func:`c2_xavier_fill`);
    the gates take PyTorch's default initialisation, as published.
    """

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.project = nn.Conv2d(in_channels, dim, 1, bias=False)
        c2_xavier_fill(self.project)
        self.channel_gate = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim), nn.Sigmoid()
        )
        self.spatial_gate = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, D, H, W)."""
        y = self.project(x)
        g_c = self.channel_gate(y.mean(dim=(2, 3)))[:, :, None, None]
        g_s = self.spatial_gate(y)
        return y * g_c * g_s


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, H*W, D)."""
    return x.flatten(2).transpose(1, 2)


class MutualRefinement(nn.Module):
    """Coarse-to-fine wiring of MRM for any number of levels, finest first.

    Level i borrows ``SCAM(concat(maps[i+1:]))`` computed from the coarser maps with their
    gradient stopped, so that a level's loss never trains a coarser level's projection; the
    coarsest level borrows nothing. The coarser maps must share one spatial size.

    Args:
        dim: D, channels of every level map.
        num_levels: number of levels (3 in Mg-MRN).
    """

    def __init__(self, dim: int, num_levels: int = 3):
        super().__init__()
        self.attention = nn.ModuleList(
            SpatialChannelAttention(dim * (num_levels - 1 - i), dim) for i in range(num_levels - 1)
        )

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """maps: level maps (B, D, h_i, w_i), finest first -> borrowed maps, None for the coarsest."""
        borrowed: list[torch.Tensor | None] = []
        for i, scam in enumerate(self.attention):
            coarser = torch.cat([m.detach() for m in maps[i + 1:]], dim=1)
            borrowed.append(scam(coarser))
        borrowed.append(None)
        return borrowed

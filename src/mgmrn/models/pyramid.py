"""Simple feature pyramid: three maps at strides 8, 16 and 32 from a plain ViT's single stride.

A plain ViT (DeiT, DINOv2, EVA, CLIP image towers) keeps one token grid, at its patch size p,
through every block. As in ViTDet (Li et al., 2022), the pyramid is built from that grid by a
light adapter: a stride-2 transposed convolution doubles the finest map, the middle map is
kept, and a 2x2 max-pool halves the coarsest. Unlike ViTDet, each level reads a block of its own
depth (shallow for fine, last for coarse), so the fine level keeps more local detail; for p = 16
the strides are 8, 16 and 32, for p = 14 they are 7, 14 and 28.
"""

from __future__ import annotations

import torch
from torch import nn


class SimpleFeaturePyramid(nn.Module):
    """Three (B, C, n, n) token maps -> maps of sides 2n, n and n/2, finest first.

    Args:
        channels: C of each input map (the ViT's width); the outputs keep them.
    """

    def __init__(self, channels: list[int]):
        super().__init__()
        fine, _, _ = channels
        self.up = nn.ConvTranspose2d(fine, fine, kernel_size=2, stride=2)
        self.down = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        fine, middle, coarse = maps
        return [self.up(fine), middle, self.down(coarse)]

"""Multi-granularity module (MgM): decoupled region mining and projection of one level.

The published grouping unit returns ``mean_k(a_k(p) * x_p)``, which equals ``x_p / K`` because the
assignments sum to one over parts: it does nothing and its parameters get no gradient. By default
(``grouping="regions"``) the parts matter: each part k pools the locations assigned to it into a
region token

    r_k = sum_p a_k(p) x_p / sum_p a_k(p),

and the K region tokens join the level's spatial tokens, so the decoder can attend to a whole part
at once. The assignments decide what each token contains, so centres and smoothing get gradient.
``grouping="identity"`` reproduces the published unit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mgmrn.choices import Grouping, Halving, Norm, check_choice


class RegionGrouping(nn.Module):
    """Soft assignment of locations to K learnable part centres, and region tokens per part.

    ``a_k(p) = softmax_k(min(0, -d_k(p)) / beta_k)`` with ``beta_k = sigmoid(s_k)`` and ``d_k(p)``
    the squared distance between ``x_p`` and centre ``c_k`` averaged over channels. Averaging (not
    summing) keeps the softmax out of saturation at any width: summed over 2048 channels the
    distances are in the thousands and every assignment would be one-hot, with no gradient.

    Args:
        channels: C, channels of the input map.
        num_parts: K.
        published_init: draw the centres as published (kaiming_normal clamped at 1e-5: half of
            them 1e-5), as the published grouping unit does; otherwise its absolute value
            (features are post-ReLU: every centre starts positive and distinct), for region
            tokens, which the published code does not have.
    """

    def __init__(self, channels: int, num_parts: int = 5, published_init: bool = False):
        super().__init__()
        centres = torch.empty(num_parts, channels)
        nn.init.kaiming_normal_(centres)
        centres = centres.clamp(min=1e-5) if published_init else centres.abs()
        self.centres = nn.Parameter(centres)
        self.smoothing = nn.Parameter(torch.zeros(num_parts))

    @property
    def num_parts(self) -> int:
        return self.centres.shape[0]

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> assignments a: (B, K, H, W), summing to one over K."""
        centres = self.centres.clamp(min=1e-5)
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        dist = (
            tokens.pow(2).sum(-1, keepdim=True)
            - 2 * tokens @ centres.t()
            + centres.pow(2).sum(-1)
        ) / x.shape[1]  # (B, HW, K)
        beta = torch.sigmoid(self.smoothing)
        logits = torch.clamp(-dist, max=0.0) / beta
        a = logits.softmax(dim=-1)
        return a.transpose(1, 2).reshape(x.shape[0], -1, *x.shape[2:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) -> (region tokens (B, K, C), assignments (B, K, H, W))."""
        a = self.assign(x)
        weights = a.flatten(2)  # (B, K, HW)
        pooled = weights @ x.flatten(2).transpose(1, 2)  # (B, K, C)
        regions = pooled / (weights.sum(-1, keepdim=True) + 1e-6)
        return regions, a

    def published(self, x: torch.Tensor) -> torch.Tensor:
        """The published unit's output, ``mean_k(a_k * x) = x / K``: (B, C, H, W) -> (B, C, H, W).

        Its parameters stay in the graph with an exactly zero gradient, as in the published
        model (where the gradient is rounding noise): SGD's weight decay and momentum then move
        them at every step of their level, as they move the published ones.
        """
        unused = self.centres.sum() + self.smoothing.sum()
        return x / self.num_parts + 0.0 * unused.to(x.dtype)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that keeps a bf16 or fp16 input in its own precision under autocast.

    Autocast runs group_norm in fp32, so a 2048-channel 56x56 map would be copied to fp32 and
    normalised, activated and pooled at twice the memory traffic. The kernels accumulate their
    statistics in fp32 either way: computing in the input's precision only rounds the output,
    as the next layer's half-precision input would be rounded anyway.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        if x.dtype in (torch.bfloat16, torch.float16) and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return F.group_norm(x, self.num_groups, self.weight.to(x.dtype),
                                    self.bias.to(x.dtype), self.eps)
        return super().forward(x)


def map_norm(kind: Norm, channels: int) -> nn.Module:
    """GroupNorm(32), as published, or BatchNorm for maps of a few cells.

    GroupNorm normalises every image on its own, removing each group's mean over the map: on
    14x14 maps of 2048 channels that costs little, but on the 2x2 to 4x4 maps of small inputs it
    erases whether a feature is present at all.
    """
    check_choice("norm", kind, Norm)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return GroupNorm(math.gcd(32, channels), channels)


class GranularityModule(nn.Module):
    """One level of MgM: region grouping, then 3x3 conv -> GroupNorm(32) -> ReLU to D channels.

    Args:
        in_channels: C of the backbone stage.
        dim: D.
        num_parts: K region tokens.
        downsample: halve the map, as for the fine and middle levels.
        resize_before_projection: halve before the 3x3 convolution instead of after it; the
            convolution then runs on a quarter of the locations (the paper's order is after).
        norm: ``group`` (GroupNorm(32), as published) or ``batch``.
        grouping: ``regions`` (K region tokens beside the map) or ``identity`` (the published
            unit: the map is divided by K and there are no region tokens).
        halving: ``mean`` (the mean of each 2x2 block, i.e. bilinear with align_corners=False)
            or ``align_corners`` (the published ``F.interpolate(scale_factor=0.5,
            mode="bilinear", align_corners=True)``, which samples the map's corners exactly).
    """

    def __init__(self, in_channels: int, dim: int, num_parts: int = 5, downsample: bool = False,
                 resize_before_projection: bool = False, norm: Norm = "group",
                 grouping: Grouping = "regions", halving: Halving = "mean"):
        super().__init__()
        check_choice("grouping", grouping, Grouping)
        check_choice("halving", halving, Halving)
        self.grouping = RegionGrouping(in_channels, num_parts,
                                       published_init=grouping == "identity")
        self.project = nn.Sequential(
            nn.Conv2d(in_channels, dim, 3, padding=1, bias=False),
            map_norm(norm, dim),
            nn.ReLU(inplace=True),
        )
        self.project_regions = None
        if grouping == "regions":
            # a region token has no spatial extent: GroupNorm over a few channels of one vector
            # would erase it, so tokens are normalised over all D channels
            self.project_regions = nn.Sequential(
                nn.Linear(in_channels, dim, bias=False),
                nn.LayerNorm(dim),
                nn.ReLU(inplace=True),
            )
        self.downsample = downsample
        self.resize_before_projection = resize_before_projection
        self.halve = _halve if halving == "mean" else _halve_align_corners

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) -> map (B, D, h, w), region tokens (B, K', D), assignments (B, K, H, W).

        ``h, w`` are ``H/2, W/2`` when ``downsample`` is set, else ``H, W``. With the published
        grouping there are no region tokens and no assignments (K' = 0, K = 0).
        """
        if self.project_regions is None:
            b, _, h, w = x.shape
            regions = x.new_zeros(b, 0, self.project[0].out_channels)
            assignments = x.new_zeros(b, 0, h, w)
            x = self.grouping.published(x)
        else:
            regions, assignments = self.grouping(x)
            b, k, c = regions.shape
            regions = self.project_regions(regions.reshape(b * k, c)).reshape(b, k, -1)
        if self.downsample and self.resize_before_projection:
            x = self.halve(x)
        y = self.project(x)
        if self.downsample and not self.resize_before_projection:
            y = self.halve(y)
        return y, regions, assignments


def _halve_align_corners(x: torch.Tensor) -> torch.Tensor:
    """The published halving: bilinear at scale 0.5 with ``align_corners=True``.

    Output sample i sits at input position ``i * (H - 1) / (h - 1)``: the corners are kept and
    the inner samples mix neighbours with uneven weights, unlike the 2x2 mean.
    """
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)


def _halve(x: torch.Tensor) -> torch.Tensor:
    """Bilinear resize by 0.5 (align_corners=False).

    At exactly half size every output sample falls midway between four inputs, so the bilinear
    resize is the mean of each 2x2 block. It is taken as a mean over a view: its backward is a
    broadcast, several times faster on GPUs than the pooling and resize kernels' backward passes.
    """
    h, w = x.shape[2] // 2, x.shape[3] // 2  # an odd last row or column is never sampled
    blocks = x[:, :, :2 * h, :2 * w].unflatten(3, (w, 2)).unflatten(2, (h, 2))
    y = blocks.mean(dim=(3, 5))
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = y.contiguous(memory_format=torch.channels_last)  # keep the layout of the input
    return y

"""Helpers of the release-parity tests: the fixtures, the stub backbone, the published network.

``tests/data/release_small.pt`` (D=32) is part of the repository; ``release_small_d64.pt`` (D=64)
and ``release_full.pt`` (full size) are read from ``../shared/parity/`` beside the clone, and a
test that needs one is skipped, saying so, where that folder is absent. Each was made by running
the authors' published code; ``../shared/parity/README.md`` says how and what each key holds.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mgmrn.config import ModelConfig, load_config
from mgmrn.models import build_model
from mgmrn.models.release import convert_release_state_dict, release_key

REPO = Path(__file__).resolve().parents[2]
SHARED_PARITY = REPO.parent / "shared" / "parity"
FIXTURES = {
    "d32": REPO / "tests" / "data" / "release_small.pt",
    "d64": SHARED_PARITY / "release_small_d64.pt",
    "full": SHARED_PARITY / "release_full.pt",
}
ATOL = 1e-9


def fixture_path(name: str) -> Path:
    """The fixture's path, or skip the calling test when it is absent."""
    path = FIXTURES[name]
    if not path.is_file():
        pytest.skip(f"{path} is absent: the release-parity fixtures of ../shared/parity are needed")
    return path


@functools.cache
def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def load_fixture(name: str) -> dict:
    """A fixture's contents (read once per session; callers must not modify them)."""
    return _load(fixture_path(name))


class StubBackbone(nn.Module):
    """The small fixtures' backbone: three 3x3 stride-2 convolutions without bias, each with a
    ReLU, returning the three stage maps."""

    def __init__(self, channels=(16, 24, 32)):
        super().__init__()
        self.channels = list(channels)
        self.conv3 = nn.Conv2d(3, channels[0], 3, stride=2, padding=1, bias=False)
        self.conv4 = nn.Conv2d(channels[0], channels[1], 3, stride=2, padding=1, bias=False)
        self.conv5 = nn.Conv2d(channels[1], channels[2], 3, stride=2, padding=1, bias=False)

    def forward(self, x):
        c3 = torch.relu(self.conv3(x))
        c4 = torch.relu(self.conv4(c3))
        return [c3, c4, torch.relu(self.conv5(c4))]


# the small fixtures were made with CUB's published scale (20) and regression weight (0.1): the
# parity tests take both from this recipe, not from the fixture, so that a change to either shows
RECIPE = "cub-release"


def release_model_config(config: dict) -> ModelConfig:
    """The fixture's sizes with every other model setting of the ``cub-release`` recipe: its
    switches and its tau."""
    recipe = load_config(RECIPE).model
    return ModelConfig(**{**vars(recipe), "pretrained": False, "dim": config["D"],
                          "attn_dim": config["M"], "num_parts": config["K"]})


def release_lambda() -> float:
    """The weight of the regression loss, from the ``cub-release`` recipe."""
    return load_config(RECIPE).train.lam


def release_net(release: dict) -> nn.Module:
    """The published network of a small fixture, in float64, with its initial weights."""
    cfg = release["config"]
    torch.manual_seed(0)  # every weight is overwritten by the published ones
    net = build_model(release_model_config(cfg), release["inputs"]["w2v"],
                      backbone=StubBackbone(cfg["stage_channels"])).double()
    net.load_state_dict(convert_release_state_dict(release["state_dict"], net))
    return net


def to_release_names(release_names, prefix: str = "backbone.") -> dict[str, str]:
    """mgmrn parameter name -> published name."""
    return {release_key(name, prefix): name for name in release_names}


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str, atol: float = ATOL) -> None:
    assert got.dtype == torch.float64, what
    assert got.numel() == want.numel(), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if "group.weight" in what:  # part centres: (K, C) here, (K, C, 1, 1) published
        got = got.reshape(want.shape)
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    assert err <= atol, f"{what}: max |diff| {err:.3g} > {atol}"


@functools.cache
def _resnet_weights(seed: int, names_and_shapes: tuple) -> dict[str, torch.Tensor]:
    state = {}
    for i, (name, shape) in enumerate(names_and_shapes):
        rs = np.random.RandomState(seed + i)
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.int64)
            continue
        if name.endswith("running_var"):
            value = 1 + 0.5 * rs.random_sample(shape)
        elif name.endswith("running_mean") or name.endswith("bias"):
            value = 0.1 * rs.standard_normal(shape)
        elif name.endswith("bn3.weight"):
            value = 0.2 + 0.02 * rs.standard_normal(shape)
        elif len(shape) == 1:  # the other batch-norm weights
            value = 1 + 0.1 * rs.standard_normal(shape)
        else:  # convolutions
            value = rs.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))
        state[name] = torch.from_numpy(np.asarray(value, dtype=np.float64))
    return state


def resnet_weights(full: dict) -> dict[str, torch.Tensor]:
    """The full fixture's regenerable ResNet-101 weights, torchvision's names, float64 (44.5 M
    values drawn from numpy's legacy RandomState as its README says; cached, do not modify)."""
    backbone = full["backbone"]
    names = tuple((name, tuple(shape)) for name, shape in backbone["state_dict_names_and_shapes"])
    return _resnet_weights(backbone["seed"], names)


class float64_default:
    """Build modules in float64 (``torch.set_default_dtype``), so that loading float64 weights
    into them rounds nothing; restores the previous default on exit."""

    def __enter__(self):
        self.previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.previous)

"""Release parity at the size users run: `mgmrn train --config cub-release` and its kin.

``../shared/parity/release_full.pt`` holds what only full size shows, from running the authors'
published code (its README says how): the initial distribution of every head parameter for CUB,
SUN and AWA2 (D=2048, M=1024, stages 512/1024/2048); the published optimizer; the learning rate of
every epoch of the three recipes from the published training loop; the recipes' values; and the
published ResNet-101's stage maps for weights regenerated from a seed. Each test below checks one
of them against mgmrn's own code path: the presets as built, the optimizer and scheduler the
runner builds, the recipes as loaded, the backbone loaded as a user loads it. Skipped where
``../shared/parity`` is absent.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mgmrn.commands.convert import read_release_checkpoint
from mgmrn.config import load_config
from mgmrn.models import build_model
from mgmrn.models.release import convert_release_state_dict, published_names, release_key

from ._parity_checks import (
    PRESETS,
    check_initial_weights,
    check_optimizer,
    check_recipes,
    check_schedule,
)
from ._release import assert_close, float64_default, load_fixture, resnet_weights


@pytest.fixture(scope="module")
def full():
    return load_fixture("full")


# ---------------------------------------------------------------------------------------------
# 1. initial weights


@pytest.mark.parametrize("dataset", PRESETS)
def test_parity_initial_weights_at_full_size(full, dataset):
    check_initial_weights(full, dataset)


# ---------------------------------------------------------------------------------------------
# 2. backbone


def check_backbone_maps(backbone: nn.Module, full: dict) -> None:
    """x3, x4, x5 of the published ResNet-101 for the fixture's image, eval then train mode."""
    published = full["backbone"]
    for mode in ("eval", "train"):
        backbone.train(mode == "train")
        with torch.no_grad():
            maps = backbone(published["image"])
        for name, got in zip(("x3", "x4", "x5"), maps, strict=True):
            assert_close(got, published[mode][name], f"backbone {mode} {name}")


def test_parity_resnet101_from_model_pretrained_file(full, tmp_path):
    """`model.pretrained_file` holding a torchvision state dict (with its classifier) -> the
    published stage maps, in float64."""
    state = dict(resnet_weights(full))
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(state, tmp_path / "resnet101.pth")
    cfg = load_config("cub-release")
    cfg.model.pretrained_file = str(tmp_path / "resnet101.pth")
    cfg.model.dim, cfg.model.attn_dim = 32, 16  # the heads are not compared here
    with float64_default():
        net = build_model(cfg.model, torch.randn(12, 16))
    assert cfg.model.pretrained and cfg.model.backbone == "resnet101"
    check_backbone_maps(net.backbone, full)


def small_heads(net: nn.Module) -> dict[str, torch.Tensor]:
    """Published-named heads for ``net`` (D=32, M=16 on ResNet-101's stages): the D=32 fixture's
    where their shapes fit, drawn at random for the stage-facing ones (their input channels are
    512/1024/2048 here, 16/24/32 in the fixture)."""
    small = load_fixture("d32")["state_dict"]
    target = net.state_dict()
    heads = {}
    generator = torch.Generator().manual_seed(0)
    for name in published_names():
        shape = target[release_key(name)].shape
        value = small[name]
        if value.numel() != shape.numel():
            published_shape = (*shape, 1, 1) if name.endswith("group.weight") else shape
            value = 0.01 * torch.randn(published_shape, generator=generator, dtype=torch.float64)
        heads[name] = value
    return heads


def test_parity_resnet101_through_convert_release(full, tmp_path):
    """A published-format checkpoint (``{"model": ...}``, the ResNet under ``backbone.``) read and
    renamed as `mgmrn convert-release` does it -> the published stage maps, in float64."""
    cfg = load_config("cub-release")
    cfg.model.pretrained = False
    cfg.model.dim, cfg.model.attn_dim = 32, 16
    with float64_default():
        net = build_model(cfg.model, load_fixture("d32")["inputs"]["w2v"])
    state = small_heads(net)
    state.update({f"backbone.{k}": v for k, v in resnet_weights(full).items()})
    torch.save({"model": state}, tmp_path / "mgmrn_cub.pth")
    net.load_state_dict(convert_release_state_dict(
        read_release_checkpoint(tmp_path / "mgmrn_cub.pth"), net))
    check_backbone_maps(net.backbone, full)


# ---------------------------------------------------------------------------------------------
# 3. optimizer and schedule


@pytest.mark.parametrize("dataset", PRESETS)
def test_parity_optimizer_mgmrn_train_builds(full, dataset):
    check_optimizer(full, dataset)


@pytest.mark.parametrize("dataset", PRESETS)
def test_parity_learning_rate_of_every_epoch(full, dataset):
    check_schedule(full, dataset)


# ---------------------------------------------------------------------------------------------
# 4. recipes


def test_parity_recipes_hold_the_published_values(full):
    check_recipes(full)

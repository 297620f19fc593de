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

import math

import pytest
import torch
from torch import nn

from mgmrn.commands.convert import read_release_checkpoint
from mgmrn.config import load_config
from mgmrn.models import build_model
from mgmrn.models.release import (
    RELEASE_SWITCHES,
    convert_release_state_dict,
    published_names,
    release_key,
)
from mgmrn.training import runner

from ._release import assert_close, float64_default, load_fixture, resnet_weights

PRESETS = {"CUB": ("cub-release", 312), "SUN": ("sun-release", 102), "AWA2": ("awa2-release", 85)}
PLAIN = {"CUB": "cub", "SUN": "sun", "AWA2": "awa2"}
WORD_DIM = 300  # the published word vectors
SIGMAS = 5  # tolerance, in standard errors


@pytest.fixture(scope="module")
def full():
    return load_fixture("full")


class StageStub(nn.Module):
    """Stands in for ResNet-101 when only the heads are built: its stage channels, no weights."""

    channels = [512, 1024, 2048]

    def forward(self, x):  # pragma: no cover - never run
        raise NotImplementedError


def preset_config(dataset: str):
    cfg = load_config(PRESETS[dataset][0])
    cfg.model.pretrained = False  # no download: the heads are what is compared
    return cfg


# ---------------------------------------------------------------------------------------------
# 1. initial weights


def check_initial_weights(full: dict, dataset: str) -> None:
    """Every published head parameter of the preset, built at full size by mgmrn's own
    ``build_model``: shape, mean and std within 5 standard errors of the published draw, constants
    exactly, and for uniform initialisations the bounds."""
    cfg = preset_config(dataset)
    num_attributes = PRESETS[dataset][1]
    assert (cfg.model.dim, cfg.model.attn_dim) == (2048, 1024)
    torch.manual_seed(214)
    net = build_model(cfg.model, torch.randn(num_attributes, WORD_DIM), backbone=StageStub())
    params = dict(net.named_parameters())
    published = full["init"][dataset]
    assert sorted(published) == sorted(published_names())
    problems = []
    for name, stats in published.items():
        key = release_key(name)
        value = params.pop(key).detach()
        numel, std = stats["numel"], stats["std"]
        if value.numel() != numel or value.reshape(stats["shape"]).shape != tuple(stats["shape"]):
            problems.append(f"{name} -> {key}: shape {tuple(value.shape)} != {stats['shape']}")
            continue
        if std == 0.0:  # constants: GroupNorm's affine weight 1 and bias 0, smoothing 0
            if not (value == stats["min"]).all():
                problems.append(f"{name} -> {key}: not the constant {stats['min']}")
            continue
        error = std / math.sqrt(2 * numel)
        got_std, got_mean = (v.item() for v in torch.std_mean(value))
        if abs(got_std - std) > SIGMAS * error:
            problems.append(f"{name} -> {key}: std {got_std:.5g} vs published {std:.5g} "
                            f"({abs(got_std - std) / error:.1f} standard errors)")
        if abs(got_mean - stats["mean"]) > SIGMAS * std / math.sqrt(numel):
            problems.append(f"{name} -> {key}: mean {got_mean:.3g} vs published {stats['mean']:.3g}")
        bound = max(-stats["min"], stats["max"])
        if abs(bound / (std * math.sqrt(3)) - 1) < 0.02:  # uniform: its sample max is its bound
            slack = 10 / numel  # the gap of a uniform sample's max below its bound is ~1/numel
            low, high = value.aminmax()
            got = max(-low.item(), high.item())
            if not bound * (1 - slack) <= got <= bound * (1 + slack):
                problems.append(f"{name} -> {key}: uniform bound {got:.5g} vs published {bound:.5g}")
    assert not problems, "\n".join(problems)
    # and the mapping covers every head parameter
    assert sorted(params) == [], f"head parameters the published model does not have: {params}"


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


HYPER = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")


def check_optimizer(full: dict, dataset: str) -> None:
    """The optimizer `mgmrn train` builds for the preset: the published type, settings and
    parameters (every head parameter, through the name mapping, and the whole backbone)."""
    cfg = preset_config(dataset)
    with torch.device("meta"):  # names and shapes are enough: nothing is computed
        net = build_model(cfg.model, torch.zeros(PRESETS[dataset][1], WORD_DIM))
    optimizer, _ = runner.build_optimizer(net, cfg, torch.device("cpu"))
    published = full["optimizer"]
    assert type(optimizer).__name__ == published["type"] == "SGD"
    assert len(optimizer.param_groups) == len(published["groups"]) == 1
    group, want = optimizer.param_groups[0], published["groups"][0]["hyper"]
    want = {**want, "lr": full["recipes"][dataset]["lr"]}  # recorded for CUB; each recipe's own
    for key in HYPER:
        assert group[key] == want[key], f"{dataset}: {key} {group[key]} != published {want[key]}"
    names = {id(p): n for n, p in net.named_parameters()}
    stepped = [names[id(p)] for p in group["params"]]
    heads = sorted(release_key(n, "backbone.body.") for n in published["groups"][0]["params"])
    backbone = sorted(n for n in names.values() if n.startswith("backbone."))
    assert len(stepped) == len(set(stepped))
    assert sorted(n for n in stepped if not n.startswith("backbone.")) == heads
    assert sorted(n for n in stepped if n.startswith("backbone.")) == backbone  # fine-tuned
    assert full["recipes"][dataset]["finetune_backbone"] and backbone


@pytest.mark.parametrize("dataset", PRESETS)
def test_parity_optimizer_mgmrn_train_builds(full, dataset):
    check_optimizer(full, dataset)


def runner_schedule(cfg) -> list[float]:
    """The learning rate of every epoch, as `mgmrn train`'s loop sets it (one step per epoch)."""
    weight = nn.Parameter(torch.zeros(1))
    optimizer, scheduler = runner.build_optimizer(nn.ParameterList([weight]), cfg, torch.device("cpu"))
    lrs = []
    for _ in range(cfg.train.epochs):
        runner.scheduler_epoch_start(scheduler, cfg)
        lrs.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.zeros(1)
        optimizer.step()
        runner.scheduler_epoch_end(scheduler, cfg)
    return lrs


def check_schedule(full: dict, dataset: str) -> None:
    want = full["schedule"][dataset]
    got = runner_schedule(preset_config(dataset))
    assert len(got) == len(want) == 30
    for epoch, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=1e-12), f"{dataset} epoch {epoch}: lr {g} != {w}"


@pytest.mark.parametrize("dataset", PRESETS)
def test_parity_learning_rate_of_every_epoch(full, dataset):
    check_schedule(full, dataset)


# ---------------------------------------------------------------------------------------------
# 4. recipes


def recipe_values(cfg) -> dict:
    """The published recipe's keys, read from an mgmrn config."""
    return dict(seed=cfg.seed, scale=cfg.model.tau, lambda_reg=cfg.train.lam,
                image_size=cfg.data.image_size, ways=cfg.data.ways, shots=cfg.data.shots,
                semantic=cfg.data.semantic, batches_per_epoch=cfg.train.batches_per_epoch,
                epochs=cfg.train.epochs, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                momentum=cfg.train.momentum, lr_gamma=cfg.train.lr_gamma,
                lr_step=cfg.train.lr_step, test_batch=cfg.data.test_batch_size,
                finetune_backbone=cfg.model.finetune)


def check_recipes(full: dict) -> None:
    """Every published value in the matching ``*-release`` recipe, and in the plain recipe,
    which claims the published values for all but the switches."""
    for dataset, (name, _) in PRESETS.items():
        published = full["recipes"][dataset]
        # fixed in mgmrn's loss and transforms: CE weight 1, MSE of normalised vectors,
        # random crop of the resized image in training
        assert (published["lambda_cls"], published["reg_type"], published["reg_norm"],
                published["train_aug"]) == (1.0, "MSE", True, "resize_random_crop")
        for recipe in (name, PLAIN[dataset]):
            cfg = load_config(recipe)
            got = recipe_values(cfg)
            differing = {k: (v, published[k]) for k, v in got.items() if v != published[k]}
            assert not differing, f"{recipe}: (ours, published) {differing}"
            assert cfg.train.optimizer == "sgd", recipe
        release = load_config(name)
        assert release.data.test_resize == RELEASE_SWITCHES["data.test_resize"] == "crop"
        assert published["test_aug"] == "resize_crop"


def test_parity_recipes_hold_the_published_values(full):
    check_recipes(full)

"""Parameter groups and learning-rate schedules of ``mgmrn train`` (mgmrn.training.optim).

The learning rate and weight decay of named parameters of a tiny ViT, a tiny Swin and a
ResNet-18 are checked against values computed by hand from timm's rules: layer ``i`` of ``n``
(0 the stem, the heads ``n + 1``) learns at ``lr * backbone_lr_scale * layer_decay ** (n + 1 - i)``.
"""

from __future__ import annotations

import math

import pytest
import torch

from mgmrn.config import ConfigError, load_config
from mgmrn.models import Backbone, MgMRN
from mgmrn.training.optim import build_optimizer, lr_factor, scheduler_batch_end

TINY_VIT = dict(depth=4, embed_dim=32, num_heads=2)
TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 1, 1), window_size=2)
FINE_TUNING = ["train.optimizer=adamw", "train.lr=1.0", "train.weight_decay=0.05",
               "train.backbone_lr_scale=0.1", "train.layer_decay=0.5", "train.decay_exclusions=true"]


def network(name: str, args: dict) -> MgMRN:
    torch.manual_seed(0)
    backbone = Backbone(name, pretrained=False, model_args=args, image_size=64)
    return MgMRN(backbone, torch.randn(6, 8), dim=16, attn_dim=8, num_parts=2)


def settings(net, overrides) -> dict[str, tuple[float, float]]:
    """``{parameter name: (lr, weight decay)}`` of the optimizer built for ``net``."""
    optimizer, _ = build_optimizer(net, load_config("demo", overrides), torch.device("cpu"))
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert len(by_id) == sum(len(g["params"]) for g in optimizer.param_groups)  # each once
    return {n: by_id[id(p)] for n, p in net.named_parameters() if p.requires_grad}


# (backbone, args, {parameter: (layer, decays)}, layers n): blocks/stages counted from 1
CASES = [
    ("vit_tiny_patch16_224", TINY_VIT, 4, {
        "backbone.body.model.cls_token": (0, False),
        "backbone.body.model.pos_embed": (0, False),
        "backbone.body.model.patch_embed.proj.weight": (0, True),
        "backbone.body.model.blocks.0.attn.qkv.weight": (1, True),
        "backbone.body.model.blocks.0.norm1.weight": (1, False),
        "backbone.body.model.blocks.2.mlp.fc1.bias": (3, False),
        "backbone.body.model.blocks.3.mlp.fc2.weight": (4, True),
    }),
    ("swin_tiny_patch4_window7_224", TINY_SWIN, 4, {
        "backbone.body.patch_embed.proj.weight": (0, True),
        "backbone.body.layers_0.blocks.0.attn.qkv.weight": (1, True),
        "backbone.body.layers_0.blocks.0.attn.relative_position_bias_table": (1, False),
        "backbone.body.layers_1.downsample.reduction.weight": (2, True),  # opens stage 2
        "backbone.body.layers_2.blocks.1.mlp.fc1.weight": (3, True),
        "backbone.body.layers_3.blocks.0.norm2.bias": (4, False),
    }),
    ("resnet18", {}, 4, {
        "backbone.body.conv1.weight": (0, True),
        "backbone.body.bn1.weight": (0, False),
        "backbone.body.layer1.0.conv1.weight": (1, True),
        "backbone.body.layer3.1.bn2.bias": (3, False),
        "backbone.body.layer4.0.downsample.0.weight": (4, True),
    }),
]


@pytest.mark.parametrize("name, args, layers, expected", CASES, ids=["vit", "swin", "resnet18"])
def test_groups_give_each_named_parameter_the_lr_and_weight_decay_computed_by_hand(
        name, args, layers, expected):
    got = settings(network(name, args), FINE_TUNING)
    for param, (layer, decays) in expected.items():
        lr = 1.0 * 0.1 * 0.5 ** (layers + 1 - layer)
        assert got[param] == (pytest.approx(lr, rel=1e-12), 0.05 if decays else 0.0), param
    heads = {n: v for n, v in got.items() if not n.startswith("backbone.body.")}
    assert any(wd == 0.05 for _, wd in heads.values())
    assert all(lr == 1.0 for lr, _ in heads.values())  # the heads: lr, not scaled or decayed
    assert {wd for n, (_, wd) in heads.items() if n.endswith(".bias")} == {0.0}


def test_backbone_scale_without_layer_decay_and_every_parameter_decays_by_default():
    net = network("resnet18", {})
    got = settings(net, ["train.lr=0.2", "train.backbone_lr_scale=0.25", "train.weight_decay=0.001"])
    assert got["backbone.body.layer1.0.conv1.weight"] == (pytest.approx(0.05), 0.001)
    assert got["backbone.body.bn1.bias"] == (pytest.approx(0.05), 0.001)  # no exclusions asked
    assert {lr for n, (lr, _) in got.items() if not n.startswith("backbone.body.")} == {0.2}


def test_published_recipe_keeps_one_group_and_the_epoch_steplr():
    net = network("resnet18", {})
    optimizer, scheduler = build_optimizer(net, load_config("cub-release"), torch.device("cpu"))
    assert len(optimizer.param_groups) == 1 and set(optimizer.param_groups[0]) >= {"lr"}
    assert "name" not in optimizer.param_groups[0]
    assert type(scheduler).__name__ == "StepLR"


def test_frozen_parameters_are_left_out_and_the_other_layers_keep_their_decay():
    torch.manual_seed(0)
    backbone = Backbone("vit_tiny_patch16_224", pretrained=False, model_args=TINY_VIT,
                        image_size=64, freeze=2)
    net = MgMRN(backbone, torch.randn(6, 8), dim=16, attn_dim=8, num_parts=2)
    got = settings(net, FINE_TUNING)
    assert "backbone.body.model.blocks.1.attn.qkv.weight" not in got
    assert "backbone.body.model.pos_embed" not in got
    assert got["backbone.body.model.blocks.2.attn.qkv.weight"][0] == pytest.approx(0.1 * 0.5 ** 2)


def lrs(overrides: list[str], steps: int) -> list[float]:
    weight = torch.nn.Parameter(torch.zeros(1))
    net = torch.nn.Module()
    net.weight = weight
    cfg = load_config("demo", overrides)
    optimizer, scheduler = build_optimizer(net, cfg, torch.device("cpu"))
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.zeros(1)
        optimizer.step()
        scheduler_batch_end(scheduler, cfg)
    return out


def test_warmup_then_cosine_is_set_every_batch():
    got = lrs(["train.lr=1.0", "train.epochs=4", "train.batches_per_epoch=5",
               "train.scheduler=cosine", "train.warmup_epochs=1", "train.decay_exclusions=true"], 20)
    assert got[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert got[5:] == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 15)) for s in range(15)])


def test_warmup_with_the_step_schedule_keeps_its_decay_by_epoch():
    cfg = load_config("demo", ["train.epochs=6", "train.batches_per_epoch=2", "train.lr_step=2",
                               "train.lr_gamma=0.5", "train.warmup_epochs=1"])
    factor = lr_factor(cfg)
    assert [factor(s) for s in range(12)] == pytest.approx(
        [0.5, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25])


@pytest.mark.parametrize("override, message", [
    ("train.layer_decay=1.5", "train.layer_decay"),
    ("train.backbone_lr_scale=0", "train.backbone_lr_scale"),
    ("train.warmup_epochs=100", "train.warmup_epochs"),
    ("train.scheduler=linear", "train.scheduler"),
    ("model.freeze=-1", "model.freeze"),
    ("train.heads_only_epochs=-1", "train.heads_only_epochs"),
])
def test_fine_tuning_keys_are_checked_when_the_config_is_read(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def test_heads_only_epochs_are_refused_where_the_backbone_never_learns(caplog):
    with pytest.raises(ConfigError, match="model.finetune=false"):
        load_config("parts", ["train.heads_only_epochs=2"])  # parts freezes its backbone
    # a run shortened below them (the custom recipe holds 5 epochs) trains its heads, and says so
    with caplog.at_level("WARNING", logger="mgmrn.config"):
        short = load_config(None, ["data.name=custom", "train.epochs=2"])
    assert short.train.heads_only_epochs == 5
    assert "the heads learn alone for the whole run" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mgmrn.config"):
        load_config(None, ["data.name=custom"])
    assert "heads_only_epochs" not in caplog.text


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_heads_only_epochs_hold_the_backbone_still_then_let_it_learn(optimizer):
    cfg = load_config("demo", ["model.finetune=true", f"train.optimizer={optimizer}",
                               "train.lr=0.1", "train.weight_decay=0.01", "train.epochs=3",
                               "train.batches_per_epoch=2", "train.backbone_lr_scale=0.5",
                               "train.heads_only_epochs=1"])
    net = network("resnet18", {})
    optimizer, scheduler = build_optimizer(net, cfg, torch.device("cpu"))
    named = dict(net.named_parameters())
    start = {n: p.detach().clone() for n, p in named.items()}
    torch.manual_seed(1)
    seen = []
    for step in range(3):
        seen.append(sorted({g["lr"] for g in optimizer.param_groups}))
        for p in named.values():
            p.grad = torch.randn_like(p)
        optimizer.step()
        scheduler_batch_end(scheduler, cfg)
        moved = {n for n, p in named.items() if not torch.equal(p, start[n])}
        body = {n for n in moved if n.startswith("backbone.body.")}
        assert moved - body, "the heads learn from the first batch"
        if step < 2:  # the first epoch's two batches: not one backbone weight has moved
            assert not body, sorted(body)[:3]
    assert body == {n for n in named if n.startswith("backbone.body.")}  # then every one has
    assert seen == [[0.0, 0.1], [0.0, 0.1], [pytest.approx(0.05), 0.1]]


def test_a_per_batch_schedule_resumes_where_it_stopped():
    overrides = ["train.lr=1.0", "train.epochs=2", "train.batches_per_epoch=5",
                 "train.scheduler=cosine", "train.warmup_epochs=0.4", "train.backbone_lr_scale=0.5"]
    cfg = load_config("demo", overrides)
    net = network("resnet18", {})

    def run(steps, state=None):
        optimizer, scheduler = build_optimizer(net, cfg, torch.device("cpu"))
        if state is not None:
            optimizer.load_state_dict(state[0])
            scheduler.load_state_dict(state[1])
        for _ in range(steps):
            optimizer.step()
            scheduler_batch_end(scheduler, cfg)
        return optimizer, scheduler

    straight, _ = run(7)
    first, scheduler = run(3)
    resumed, _ = run(4, (first.state_dict(), scheduler.state_dict()))
    assert [g["lr"] for g in resumed.param_groups] == [g["lr"] for g in straight.param_groups]
    assert sorted({g["lr"] for g in straight.param_groups}) == pytest.approx(
        [s * 0.5 * (1 + math.cos(math.pi * 5 / 8)) for s in (0.5, 1.0)])  # 2 warm-up batches

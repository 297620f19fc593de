"""The fine-tuning recipes (cub/sun/awa2 x dinov2/swin/convnext) build the parameter groups they
describe: the learning rate and weight decay of named parameters of each full-size network (built
on the meta device: names and shapes only), against values computed by hand from the recipe."""

from __future__ import annotations

import pytest
import torch

from mgmrn.config import load_config
from mgmrn.models import build_model
from mgmrn.training.optim import build_optimizer

BACKBONES = ("dinov2", "swin", "convnext")
# recipe -> (layers after the stem, layer decay, {parameter: (layer, decays)})
EXPECTED = {
    "dinov2": (12, 0.65, {
        "backbone.body.model.cls_token": (0, False),
        "backbone.body.model.pos_embed": (0, False),
        "backbone.body.model.patch_embed.proj.weight": (0, True),
        "backbone.body.model.blocks.0.attn.qkv.weight": (1, True),
        "backbone.body.model.blocks.0.norm1.weight": (1, False),
        "backbone.body.model.blocks.0.ls1.gamma": (1, False),
        "backbone.body.model.blocks.11.mlp.fc2.weight": (12, True),
        "backbone.body.model.blocks.11.mlp.fc2.bias": (12, False),
    }),
    "swin": (4, 0.9, {
        "backbone.body.patch_embed.proj.weight": (0, True),
        "backbone.body.layers_0.blocks.1.attn.qkv.weight": (1, True),
        "backbone.body.layers_0.blocks.1.attn.relative_position_bias_table": (1, False),
        "backbone.body.layers_2.downsample.reduction.weight": (3, True),
        "backbone.body.layers_3.blocks.1.mlp.fc2.weight": (4, True),
    }),
    "convnext": (4, 0.8, {
        "backbone.body.stem_0.weight": (0, True),
        "backbone.body.stem_1.weight": (0, False),
        "backbone.body.stages_0.blocks.0.conv_dw.weight": (1, True),
        "backbone.body.stages_1.downsample.1.weight": (2, True),
        "backbone.body.stages_3.blocks.2.gamma": (4, False),
        "backbone.body.stages_3.blocks.2.mlp.fc2.weight": (4, True),
    }),
}


def optimizer_of(recipe: str, *overrides: str):
    cfg = load_config(recipe, ["model.pretrained=false", *overrides])
    with torch.device("meta"):
        net = build_model(cfg.model, torch.zeros(312, 300), image_size=cfg.data.image_size)
    optimizer, scheduler = build_optimizer(net, cfg, torch.device("cpu"))
    # the lr after warm-up (the scheduler's base); batch 0 runs at 1/(warm-up batches) of it
    by_id = {id(p): (g["initial_lr"], g["weight_decay"]) for g in optimizer.param_groups
             for p in g["params"]}
    return cfg, net, {n: by_id[id(p)] for n, p in net.named_parameters()}, scheduler


@pytest.mark.parametrize("backbone", BACKBONES)
def test_recipe_groups_give_the_learning_rates_and_weight_decays_it_states(backbone):
    cfg, net, got, scheduler = optimizer_of(f"cub-{backbone}")
    layers, decay, expected = EXPECTED[backbone]
    assert (cfg.train.layer_decay, cfg.train.decay_exclusions) == (decay, True)
    top = 3e-4 * 0.1  # the heads' lr x backbone_lr_scale
    for name, (layer, decays) in expected.items():
        want = (pytest.approx(top * decay ** (layers + 1 - layer), rel=1e-9), 0.05 if decays else 0.0)
        assert got[name] == want, name
    heads = {n: v for n, v in got.items() if not n.startswith("backbone.body.")}
    assert {lr for lr, _ in heads.values()} == {3e-4}
    assert {wd for n, (_, wd) in heads.items() if n.endswith(".bias")} == {0.0}
    assert type(scheduler).__name__ == "LambdaLR"
    assert scheduler.lr_lambdas[0](0) == pytest.approx(1 / round(cfg.train.warmup_epochs * 300))


def test_dinov2_register_variant_keeps_its_register_tokens_out_of_weight_decay():
    _, _, got, _ = optimizer_of("cub-dinov2", "model.backbone=vit_base_patch14_reg4_dinov2.lvd142m")
    assert got["backbone.body.model.reg_token"] == (pytest.approx(3e-5 * 0.65 ** 13), 0.0)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_drop_path_reaches_the_backbone(backbone):
    _, net, _, _ = optimizer_of(f"cub-{backbone}")
    rates = [m.drop_prob for m in net.backbone.body.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("dataset", ["sun", "awa2"])
def test_sun_and_awa2_twins_fine_tune_as_the_cub_recipe_on_their_own_data(dataset, backbone):
    twin, cub, own = (load_config(f"{dataset}-{backbone}"), load_config(f"cub-{backbone}"),
                      load_config(dataset))
    assert twin.model.backbone == cub.model.backbone and twin.model.dim == cub.model.dim
    fine_tuning = ("optimizer", "lr", "backbone_lr_scale", "layer_decay", "weight_decay",
                   "decay_exclusions", "scheduler", "warmup_epochs")
    assert [getattr(twin.train, k) for k in fine_tuning] == [getattr(cub.train, k) for k in fine_tuning]
    assert (twin.data.name, twin.model.tau, twin.train.lam) == (dataset, own.model.tau, own.train.lam)
    assert twin.output_dir == f"runs/{dataset}-{backbone}"

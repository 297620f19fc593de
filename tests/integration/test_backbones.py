"""Backbone families: CNNs, hierarchical transformers (NHWC stages) and plain ViTs (pyramid).

Tiny random members of each family, at 64 px (56 for the 14 px patches of DINOv2).
"""

from __future__ import annotations

import pytest
import timm
import torch

from mgmrn.checkpoint import checkpoint_inputs, load_weights
from mgmrn.config import ConfigError, load_config
from mgmrn.data import transforms
from mgmrn.data.transforms import IMAGENET_INPUTS, normalize_images
from mgmrn.models import (
    Backbone,
    BackboneError,
    MgMRN,
    PretrainedWeightsError,
    describe_backbone,
    input_config,
)
from mgmrn.precision import Precision
from mgmrn.training.engine import train_one_epoch
from mgmrn.training.losses import ZSLCriterion
from mgmrn.viz import level_attention_maps

TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2)
TINY_VIT = dict(depth=3, embed_dim=32, num_heads=2)
# (family, timm name, model args, image side, kind)
FAMILIES = [
    ("resnet", "test_resnet", {}, 64, "hierarchical"),
    ("convnext", "test_convnext", {}, 64, "hierarchical"),
    ("efficientnet", "test_efficientnet", {}, 64, "hierarchical"),
    ("swin", "swin_tiny_patch4_window7_224", TINY_SWIN, 64, "hierarchical"),
    ("swinv2", "swinv2_tiny_window8_256", TINY_SWIN, 64, "hierarchical"),
    ("maxvit", "test_maxvit", {}, 64, "hierarchical"),
    ("deit", "deit_tiny_patch16_224", TINY_VIT, 64, "plain"),
    ("dinov2", "vit_small_patch14_dinov2", TINY_VIT, 56, "plain"),
    ("clip", "vit_base_patch16_clip_224", TINY_VIT, 64, "plain"),
    ("eva", "eva02_tiny_patch14_224", {"depth": 3}, 56, "plain"),
]
IDS = [f[0] for f in FAMILIES]


def net_on_backbone(name: str, args: dict, size: int, **kwargs) -> MgMRN:
    """A small MgMRN on backbone ``name`` built with ``args`` for ``size`` pixels, seeded."""
    torch.manual_seed(0)
    backbone = Backbone(name, pretrained=False, model_args=args, image_size=size, **kwargs)
    return MgMRN(backbone, torch.randn(6, 8), dim=16, attn_dim=8, num_parts=2)


@pytest.mark.parametrize("family, name, args, size, kind", FAMILIES, ids=IDS)
def test_every_family_gives_three_nchw_maps_at_strides_8_16_32(family, name, args, size, kind):
    backbone = Backbone(name, pretrained=False, model_args=args, image_size=size)
    maps = backbone(torch.randn(2, 3, size, size))
    strides = backbone.spec.strides
    assert backbone.spec.kind == kind
    assert [tuple(m.shape) for m in maps] == [(2, c, size // s, size // s)
                                              for c, s in zip(backbone.channels, strides)]
    if kind == "plain":  # patch p: strides p/2, p, 2p from the pyramid
        patch = strides[1]
        assert strides == (patch // 2, patch, 2 * patch)
    else:
        assert strides == (8, 16, 32)
    assert backbone.channels_last_out == family.startswith("swin")


def test_swin_stages_are_permuted_from_channels_last_not_reshaped():
    backbone = Backbone("swin_tiny_patch4_window7_224", pretrained=False, model_args=TINY_SWIN,
                        image_size=64).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw = backbone.body(images)  # timm's (B, H, W, C)
        maps = backbone(images)
    for i, level in zip(backbone.indices, maps):
        assert torch.equal(level, raw[i].permute(0, 3, 1, 2))


def test_plain_vit_levels_read_blocks_at_three_depths_and_the_pyramid_trains_when_frozen():
    backbone = Backbone("vit_small_patch14_dinov2", pretrained=False,
                        model_args=dict(TINY_VIT, depth=6), image_size=56, finetune=False)
    assert backbone.body.feature_info.module_name() == ["blocks.1", "blocks.3", "blocks.5"]
    assert not any(p.requires_grad for p in backbone.body.parameters())
    assert all(p.requires_grad for p in backbone.pyramid.parameters())


@pytest.mark.parametrize("schedule", ["fused", "alternating"])
@pytest.mark.parametrize("family", ["swin", "dinov2", "convnext"])
def test_one_training_step_of_each_schedule_moves_backbone_and_heads(family, schedule):
    _, name, args, size, _ = FAMILIES[IDS.index(family)]
    net = net_on_backbone(name, args, size)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    batch = [(torch.randn(3, 3, size, size, generator=g), torch.tensor([0, 1, 2]))]
    stats = train_one_epoch(net, batch, opt, ZSLCriterion(torch.rand(3, 6), 0.1),
                            torch.device("cpu"), epoch=0, schedule=schedule, show_progress=False)
    assert torch.isfinite(torch.tensor(stats["loss"]))
    moved = {k.split(".")[0] for k, v in net.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, before[k])}
    assert {"backbone", "granularity", "decoders"} <= moved


@pytest.mark.parametrize("family", ["swin", "dinov2"])
def test_attention_of_each_level_is_drawn_where_its_token_lies(family):
    """One attention token per level, at a known cell of its own grid, lands on that cell's
    pixels in the image-size map of every level."""
    _, name, args, size, _ = FAMILIES[IDS.index(family)]
    net = net_on_backbone(name, args, size).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, size, size), torch.rand(3, 6), return_attention=True)
    for level, (attention, layout) in enumerate(zip(out.attention, out.layouts)):
        h, w = layout.own
        row, col = h - 1, 0  # bottom-left cell of the level's grid
        one_hot = torch.zeros_like(attention)
        one_hot[..., row * w + col] = 1.0
        out.attention[level] = one_hot
    maps = level_attention_maps(out, (size, size))  # (1, L, A, H, W)
    for level, layout in enumerate(out.layouts):
        h, w = layout.own
        cell_h, cell_w = size // h, size // w
        picture = maps[0, level, 0]
        inside = picture[size - cell_h:, :cell_w].sum()
        assert inside > 0.5, (level, float(inside))
        peak = divmod(int(picture.argmax()), size)
        assert peak[0] >= size - 2 * cell_h and peak[1] < 2 * cell_w


def test_checkpoint_round_trip_of_a_vit_keeps_weights_and_outputs():
    _, name, args, size, _ = FAMILIES[IDS.index("dinov2")]
    net = net_on_backbone(name, args, size).eval()
    other = net_on_backbone(name, args, size)
    torch.nn.init.normal_(other.backbone.pyramid.up.weight)
    load_weights(other, net.state_dict(), "memory")
    images, classes = torch.randn(2, 3, size, size), torch.rand(3, 6)
    with torch.no_grad():
        assert torch.equal(other.eval()(images, classes).logits, net(images, classes).logits)


# --- refusals, at config time --------------------------------------------------------------

@pytest.mark.parametrize("overrides, expected", [
    (["model.backbone=vit_tiny_patch16_224", "data.image_size=72"],
     r"backbone 'vit_tiny_patch16_224' is a plain ViT with 16 px patches: it needs sides "
     r"divisible by 32 .*got 72; sizes that work: 32, 64, 96, 128"),
    (["model.backbone=vit_small_patch14_dinov2", "data.image_size=64"],
     r"14 px patches: it needs sides divisible by 28 .*got 64; sizes that work: 28, 56, 84, 112"),
    (["model.backbone=test_resnet", "data.image_size=100"],
     r"'test_resnet' needs sides divisible by 32 \(its coarsest stride\), got 100; sizes that "
     r"work: 64, 96, 128, 160"),
    (["model.backbone=levit_128", "data.image_size=224"],
     r"backbone 'levit_128' has no feature stage at stride\(s\) \[8\]; its strides are "
     r"\[16, 32, 64\]"),
    (["model.backbone=swin_tiny_patch4_window7_225"],
     r"'swin_tiny_patch4_window7_225' is not a timm model; did you mean "
     r"swin_tiny_patch4_window7_224"),
])
def test_backbones_that_cannot_work_are_refused_when_the_config_is_read(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config("demo", overrides)


def test_the_smallest_sizes_pass_the_check():
    """At 32 px the coarse map is 1 x 1: batch norm's running statistics serve the check."""
    assert load_config("demo", ["data.image_size=32"]).data.image_size == 32
    assert describe_backbone("swin_tiny_patch4_window7_224", TINY_SWIN, 32).kind == "hierarchical"


def test_a_model_without_stages_is_refused_with_the_reason():
    with pytest.raises(BackboneError, match="cannot be built to return its stages"):
        describe_backbone("vit_tiny_patch16_224", {"no_such_argument": 1})


# --- input statistics and pretrained weights ------------------------------------------------

def test_input_statistics_come_from_the_pretrained_weights_and_random_weights_get_imagenets():
    clip = input_config("vit_base_patch16_clip_224", TINY_VIT, pretrained=True)
    assert clip["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert clip["interpolation"] == "bicubic"
    assert input_config("vit_base_patch16_clip_224", TINY_VIT, pretrained=False) == IMAGENET_INPUTS
    assert input_config("resnet101", pretrained=True) == IMAGENET_INPUTS  # torchvision's weights
    assert checkpoint_inputs({"model": {}}) == IMAGENET_INPUTS  # written before they were saved
    assert checkpoint_inputs({"input": clip}) == clip


def test_inputs_are_normalised_with_the_backbones_statistics_on_every_path():
    half = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"}
    images = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    assert torch.equal(normalize_images(images, half), torch.ones(1, 3, 8, 8))
    assert torch.equal(Precision(inputs=half).prepare(images, torch.device("cpu")),
                       torch.ones(1, 3, 8, 8))
    picture = transforms.test_transform(8, inputs=half)(torch.full((3, 10, 10), 255, dtype=torch.uint8))
    assert torch.equal(picture, torch.ones(3, 8, 8))


def test_vit_weights_load_from_a_local_file_with_position_embeddings_resized(tmp_path):
    reference = timm.create_model("test_vit", pretrained=False)  # built for 160 px: 10 x 10
    path = tmp_path / "test_vit.safetensors"
    import safetensors.torch

    safetensors.torch.save_file(reference.state_dict(), str(path))
    backbone = Backbone("test_vit", pretrained=True, pretrained_file=str(path), image_size=64)
    vit = backbone.body.model
    assert torch.equal(vit.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)
    assert vit.pos_embed.shape[1] == reference.pos_embed.shape[1] - 100 + 16  # 4 x 4 patches
    assert backbone(torch.randn(1, 3, 64, 64))[2].shape[-1] == 2


def test_vit_weights_offline_name_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(PretrainedWeightsError,
                       match=r"model.safetensors from the Hugging Face hub repository "
                             r"'timm/vit_small_patch14_dinov2.lvd142m'.*model.pretrained_file"):
        Backbone("vit_small_patch14_dinov2", pretrained=True, model_args=TINY_VIT, image_size=56)


@pytest.mark.parametrize("recipe, backbone, kind", [
    ("cub-convnext", "convnext_tiny.in12k_ft_in1k", "hierarchical"),
    ("cub-swin", "swin_tiny_patch4_window7_224.ms_in22k_ft_in1k", "hierarchical"),
    ("cub-dinov2", "vit_base_patch14_dinov2.lvd142m", "plain"),
])
def test_backbone_recipes_build_on_cub_and_pass_the_backbone_checks(recipe, backbone, kind):
    cfg = load_config(recipe)  # the backbone and 448 px are checked here, on the meta device
    assert (cfg.data.name, cfg.model.backbone, cfg.data.image_size) == ("cub", backbone, 448)
    assert (cfg.model.pretrained, cfg.train.optimizer) == (True, "adamw")
    assert describe_backbone(cfg.model.backbone).kind == kind


@pytest.mark.parametrize("family", ["swin", "dinov2"])
def test_checkpoint_predicts_on_its_own_with_its_input_statistics_and_explains(family, tmp_path):
    """A checkpoint of a transformer backbone, with the statistics it was trained with, gives
    the same scores through ``predict`` as the network on inputs normalised by hand, and draws
    one attention figure per image."""
    from PIL import Image

    from mgmrn.commands.predict import run_predict
    from mgmrn.config import Config
    from mgmrn.inference.predictor import load

    _, name, args, size, _ = FAMILIES[IDS.index(family)]
    cfg = Config()
    cfg.model.backbone, cfg.model.backbone_args, cfg.model.pretrained = name, args, False
    cfg.model.dim, cfg.model.attn_dim, cfg.model.num_parts = 16, 8, 2
    cfg.data.image_size, cfg.data.test_resize = size, "crop"  # an image of that size is kept
    net = net_on_backbone(name, args, size).eval()
    stats = {"mean": [0.2, 0.4, 0.6], "std": [0.3, 0.2, 0.1], "interpolation": "bicubic"}
    names = ["a", "b", "c"]
    attributes = torch.rand(3, 6)
    torch.save({"model": net.state_dict(), "config": cfg.to_dict(), "input": stats, "epoch": 0,
                "data": {"name": "tiny", "class_names": names,
                         "attribute_names": [f"x{i}" for i in range(6)],
                         "class_attributes": attributes, "attribute_vectors": torch.randn(6, 8),
                         "seen_classes": torch.tensor([0, 1]), "unseen_classes": torch.tensor([2])}},
               tmp_path / "net.pt")
    predictor = load(tmp_path / "net.pt")
    assert predictor.run.inputs == stats
    pixels = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    result = predictor.predict(pixels, top_k=3, gamma=0.0)[0]
    by_hand = normalize_images(pixels[None], stats)
    with torch.no_grad():
        expected = predictor.run.model(by_hand, predictor.classes.attributes).logits[0]
    scores = {c["name"]: c["score"] for c in result["classes"]}
    assert [scores[n] for n in names] == pytest.approx(expected.tolist(), abs=1e-4)
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(tmp_path / "bird.png")
    run_predict(tmp_path / "net.pt", [tmp_path / "bird.png"], explain_dir=tmp_path / "explain",
                out=open(tmp_path / "out.txt", "w"))
    assert [p.name for p in (tmp_path / "explain").glob("*.png")] == ["bird.png"]


def test_a_run_trains_and_evaluates_with_the_pretrained_statistics_saved_in_its_checkpoint(
        tmp_path):
    """``mgmrn train`` with a pretrained ViT (a local weights file) normalises with the weights'
    statistics, saves them, and ``mgmrn eval`` of the checkpoint alone gives the same figures."""
    import json

    import safetensors.torch

    from mgmrn.checkpoint import load_checkpoint
    from mgmrn.cli import main

    safetensors.torch.save_file(timm.create_model("test_vit").state_dict(),
                                str(tmp_path / "vit.safetensors"))
    run = tmp_path / "run"
    assert main(["train", f"output_dir={run}", f"data.root={tmp_path / 'demo'}",
                 "data.demo.image_size=32", "data.image_size=32", "data.demo.num_shapes=3",
                 "data.demo.num_colors=2", "data.demo.num_patterns=2", "data.demo.num_unseen=3",
                 "data.demo.images_per_class=4", "data.ways=3", "data.shots=2",
                 "data.num_workers=0", "data.verify_images=false", "model.backbone=test_vit",
                 "model.pretrained=true", f"model.pretrained_file={tmp_path / 'vit.safetensors'}",
                 "model.dim=16", "model.attn_dim=8", "model.num_parts=2", "train.epochs=1",
                 "train.batches_per_epoch=2", "train.schedule=alternating"]) == 0
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["input"] == {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"}
    trained = json.loads((run / "results.json").read_text())
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                 "--out", str(tmp_path / "eval.json")]) == 0
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["gzsl_h"] == pytest.approx(trained["gzsl_h"])
    assert again["czsl_acc"] == pytest.approx(trained["czsl_acc"])

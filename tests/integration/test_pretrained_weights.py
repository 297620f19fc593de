"""Pretrained backbone weights are loaded strictly, and where they came from is recorded;
partial freezing, gradient checkpointing and the blocks the levels read (mgmrn.models)."""

from __future__ import annotations

import hashlib
import logging

import pytest
import safetensors.torch
import timm
import torch

from mgmrn.checkpoint import checkpoint_config
from mgmrn.config import ConfigError, load_config
from mgmrn.models import Backbone, BackboneError, MgMRN, PretrainedWeightsError
from mgmrn.models.pretraining import overlap_warning, pretraining_data

TINY_VIT = dict(depth=3, embed_dim=32, num_heads=2)


def resnet18_file(tmp_path, **changes) -> str:
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state.update(changes)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return str(path)


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_weights_of_another_model_are_refused_with_counts_and_names(tmp_path):
    with pytest.raises(PretrainedWeightsError) as err:  # pretrained_file alone implies weights
        Backbone("vit_tiny_patch16_224", pretrained=False, pretrained_file=resnet18_file(tmp_path),
                 model_args=TINY_VIT, image_size=64)
    message = one_line(err)
    assert "resnet18.pth' does not fit backbone 'vit_tiny_patch16_224" in message
    assert "of the backbone's" in message and "'cls_token'" in message
    assert "of its tensors are not in the backbone ('conv1.weight'" in message


def test_an_mgmrn_checkpoint_is_not_backbone_weights(tmp_path):
    net = MgMRN(Backbone("resnet18", pretrained=False), torch.randn(4, 8), dim=32, attn_dim=8,
                num_parts=2)
    torch.save({"model": net.state_dict(), "config": {}}, tmp_path / "last.pt")
    with pytest.raises(PretrainedWeightsError, match=r"does not fit backbone 'resnet18.tv_in1k': "
                                                     r"\d+ of the backbone's \d+ tensors"):
        Backbone("resnet18", pretrained_file=str(tmp_path / "last.pt"))


def test_wrong_shapes_are_named_in_one_line(tmp_path):
    path = resnet18_file(tmp_path, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    with pytest.raises(PretrainedWeightsError) as err:
        Backbone("resnet18", pretrained_file=path)
    assert ("1 tensor(s) of another shape ('layer1.0.conv1.weight' is (64, 64, 1, 1) in the file, "
            "(64, 64, 3, 3) in the backbone)") in one_line(err)


def test_a_file_that_is_not_weights_is_named(tmp_path):
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(PretrainedWeightsError) as err:
        Backbone("resnet18", pretrained_file=str(tmp_path / "notes.pth"))
    assert one_line(err).startswith(f"model.pretrained_file '{tmp_path / 'notes.pth'}' is not a "
                                    f"weights file")


def test_a_classifier_head_may_be_missing_or_extra_and_the_file_is_recorded(tmp_path):
    path = resnet18_file(tmp_path)
    state = torch.load(path)
    del state["fc.weight"], state["fc.bias"]  # a backbone-only file
    torch.save(state, tmp_path / "trunk.pth")
    trunk = Backbone("resnet18", pretrained_file=str(tmp_path / "trunk.pth"))
    assert torch.equal(trunk.body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    full = Backbone("resnet18", pretrained_file=path)  # with fc: ignored
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert full.weights == {"source": "file", "name": "resnet18.tv_in1k", "location": path,
                            "sha256": digest}
    assert Backbone("resnet18", pretrained=False).weights["source"] == "random"


def test_vit_weights_may_lack_the_blocks_and_norm_features_only_drops(tmp_path):
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=4, embed_dim=32,
                                  num_heads=2, img_size=64)
    state = {k: v for k, v in reference.state_dict().items()
             if not k.startswith(("blocks.3.", "norm.", "head."))}
    safetensors.torch.save_file(state, str(tmp_path / "vit.safetensors"))
    backbone = Backbone(  # blocks 0-2 read: block 3 and the final norm are dropped
        "vit_tiny_patch16_224", pretrained_file=str(tmp_path / "vit.safetensors"),
        model_args=dict(depth=4, embed_dim=32, num_heads=2, out_indices=[0, 1, 2]), image_size=64)
    assert backbone.spec.indices == (0, 1, 2) and len(backbone.body.model.blocks) == 3
    assert torch.equal(backbone.body.model.blocks[2].attn.qkv.weight, state["blocks.2.attn.qkv.weight"])


def test_offline_without_a_copy_fails_at_once_naming_the_file_and_the_cache(monkeypatch, tmp_path):
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as err:
        Backbone("resnet18", pretrained=True)
    assert time.perf_counter() - start < 5
    message = one_line(err)
    assert "HF_HUB_OFFLINE is set and no copy is cached" in message
    assert "model.safetensors from the Hugging Face hub repository 'timm/resnet18.tv_in1k'" in message
    assert str(tmp_path / "hub" / "models--timm--resnet18.tv_in1k") in message


def test_pretrained_file_implies_pretrained_and_a_checkpoint_forgets_it():
    cfg = load_config("demo", ["model.pretrained_file=/weights/w.pth"])
    assert cfg.model.pretrained is True
    saved = {"config": cfg.to_dict()}
    restored = checkpoint_config(saved)  # the checkpoint's own weights: no file is read again
    assert (restored.model.pretrained, restored.model.pretrained_file) == (False, None)


def test_freeze_stops_the_stem_and_first_stages_and_keeps_their_batch_norm_statistics():
    backbone = Backbone("resnet18", pretrained=False, freeze=2).train()
    frozen = {n.split(".")[0] for n, p in backbone.body.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1", "layer2"}
    assert all(p.requires_grad for p in backbone.body.layer3.parameters())
    assert not backbone.body.layer2[0].bn1.training and backbone.body.layer3[0].bn1.training
    before = backbone.body.layer1[0].bn1.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(backbone.body.layer1[0].bn1.running_mean, before)
    with pytest.raises(BackboneError, match="has 4 stages to freeze"):
        Backbone("resnet18", pretrained=False, freeze=5)


def test_freeze_of_a_vit_counts_blocks_after_the_patch_embedding():
    backbone = Backbone("vit_tiny_patch16_224", pretrained=False, model_args=TINY_VIT,
                        image_size=64, freeze=1)
    trainable = {n for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("model.patch_embed", "model.pos_embed", "model.blocks.0."))
                   for n in trainable)
    assert any(n.startswith("model.blocks.1.") for n in trainable)


@pytest.mark.parametrize("name, args", [("test_resnet", {}), ("vit_tiny_patch16_224", TINY_VIT)])
def test_grad_checkpointing_gives_the_same_gradients(name, args):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        backbone = Backbone(name, pretrained=False, model_args=args, image_size=64,
                            grad_checkpointing=checkpointing).eval()
        timm_model = backbone.body.model if backbone.spec.kind == "plain" else backbone.body
        assert timm_model.grad_checkpointing is checkpointing
        sum(m.square().mean() for m in backbone(torch.randn(2, 3, 64, 64))).backward()
        grads.append([p.grad.clone() for p in backbone.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_out_indices_choose_the_vit_blocks_and_are_checked():
    cfg = load_config("demo", ["model.backbone=vit_tiny_patch16_224", "model.out_indices=[0, 1, 4]",
                               "model.backbone_args={depth: 6, embed_dim: 32, num_heads: 2}",
                               "data.image_size=64"])
    from mgmrn.models import build_model

    net = build_model(cfg.model, torch.randn(4, 8), image_size=64)
    assert net.backbone.spec.indices == (0, 1, 4) and len(net.backbone.body.model.blocks) == 5
    with pytest.raises(ConfigError, match=r"three increasing block indices from 0 to 5"):
        load_config("demo", ["model.backbone=vit_tiny_patch16_224", "model.out_indices=[0, 6, 2]",
                             "model.backbone_args={depth: 6, embed_dim: 32, num_heads: 2}",
                             "data.image_size=64"])
    with pytest.raises(ConfigError, match="is hierarchical"):
        load_config("demo", ["model.out_indices=[1, 2, 3]"])


@pytest.mark.parametrize("name, data", [
    ("resnet101.tv_in1k", []), ("convnext_tiny.in12k_ft_in1k", ["ImageNet-12k"]),
    ("vit_base_patch14_dinov2.lvd142m", ["LVD-142M"]),
    ("vit_base_patch16_clip_224.laion2b_ft_in12k_in1k", ["LAION-2B", "ImageNet-12k"]),
    ("vit_base_patch16_clip_224.openai", ["OpenAI CLIP (WIT-400M)"]),
    ("resnet101", None),
])
def test_pretraining_data_is_read_from_the_tag(name, data):
    assert pretraining_data(name) == data


def test_overlap_warning_only_for_weights_beyond_imagenet_1k_on_the_benchmarks():
    assert overlap_warning("resnet101.tv_in1k", "cub", True) is None
    assert overlap_warning("convnext_tiny.in12k_ft_in1k", "demo", True) is None
    assert overlap_warning("convnext_tiny.in12k_ft_in1k", "cub", False) is None
    assert "ImageNet-12k" in overlap_warning("convnext_tiny.in12k_ft_in1k", "sun", True)


def test_train_logs_its_weights_and_the_overlap_warning_and_records_them(tmp_path, caplog,
                                                                          monkeypatch):
    """A run's log says which weights the backbone started from; a benchmark run on weights
    beyond ImageNet-1k is warned about in one line; last.pt records them, best.pt keeps only
    what evaluation needs."""
    from mgmrn.checkpoint import load_checkpoint
    from mgmrn.cli import main

    path = resnet18_file(tmp_path)
    monkeypatch.setattr("mgmrn.training.runner.overlap_warning",
                        lambda name, dataset, pretrained: f"overlap {name} {dataset} {pretrained}")
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert main(["train", "--config", "demo", f"output_dir={run}",
                     f"data.root={tmp_path / 'demo'}", "data.demo.image_size=32",
                     "data.image_size=32", "data.demo.num_shapes=3", "data.demo.num_colors=2",
                     "data.demo.num_patterns=2", "data.demo.num_unseen=3",
                     "data.demo.images_per_class=4", "data.ways=3", "data.shots=2",
                     "data.num_workers=0", "data.verify_images=false", "model.backbone=resnet18",
                     f"model.pretrained_file={path}", "model.dim=16", "model.attn_dim=8",
                     "model.num_parts=2", "train.epochs=1", "train.batches_per_epoch=2",
                     "train.optimizer=adamw", "train.backbone_lr_scale=0.1",
                     "train.scheduler=cosine"]) == 0
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert f"backbone weights: file {path} (sha256 {digest})" in caplog.text
    assert "overlap resnet18.tv_in1k demo True" in caplog.text
    assert "optimizer: AdamW, 2 groups of 123 tensors, lr 0.0002 to 0.002" in caplog.text
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["backbone_weights"]["sha256"] == digest
    assert last["scheduler"]["last_epoch"] == 2  # the cosine schedule moved on every batch
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert not {"optimizer", "scheduler", "scaler", "random"} & set(best)
    assert best["backbone_weights"] == last["backbone_weights"]
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "best.pt"),
                 "--out", str(tmp_path / "eval.json")]) == 0


def test_train_warns_in_one_line_about_weights_beyond_imagenet_1k_on_a_benchmark(caplog):
    from types import SimpleNamespace

    from mgmrn.models import describe_backbone
    from mgmrn.training.runner import log_backbone

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for name, warned in (("convnext_tiny.in12k_ft_in1k", True), ("resnet101.tv_in1k", False)):
        backbone = SimpleNamespace(spec=describe_backbone(name), weights={
            "source": "hub", "name": name, "location": f"hf-hub:timm/{name}"})
        caplog.clear()
        with caplog.at_level(logging.INFO):
            log_backbone(SimpleNamespace(backbone=backbone), load_config("cub"), optimizer)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == int(warned)
        if warned:
            assert "\n" not in warnings[0] and "ImageNet-12k" in warnings[0]
            assert "cub's unseen classes out of ImageNet-1k only" in warnings[0]
        assert f"backbone weights: hub hf-hub:timm/{name}" in caplog.text


@pytest.mark.slow  # three full-size models at 448 px: about 6 s each
@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224.ms_in22k_ft_in1k",
                                  "convnext_tiny.in12k_ft_in1k",
                                  "vit_small_patch14_reg4_dinov2.lvd142m"])
def test_whole_timm_models_weights_load_strictly_at_448_px(name, tmp_path):
    """The recipes' families in timm's format, classifier head included, built for 224 or
    518 px: loaded at 448 px (tables and position embeddings resized), nothing refused."""
    whole = timm.create_model(name, pretrained=False)
    safetensors.torch.save_file({k: v.contiguous() for k, v in whole.state_dict().items()},
                                str(tmp_path / "w.safetensors"))
    backbone = Backbone(name, pretrained_file=str(tmp_path / "w.safetensors"), image_size=448)
    assert backbone.weights["source"] == "file"
    first = next(n for n, _ in whole.named_parameters() if "weight" in n and "blocks" in n)
    body = dict(backbone.body.named_parameters())
    mine = backbone.timm_names().names
    loaded = next(p for n, p in body.items() if mine[n] == first)
    assert torch.equal(loaded, dict(whole.named_parameters())[first])

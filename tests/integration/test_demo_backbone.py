"""The shipped demo backbone: made by scripts/pretrain_backbone.py, named ``package:<file>``,
loaded through the same strict path as any weights file, and fine-tuned by the pretrained
recipes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mgmrn.config import load_config
from mgmrn.models import Backbone, PretrainedWeightsError
from mgmrn.models.weights import packaged_weights, resolve_weights_file, sha256

from ..helpers import load_script, tiny

REPO = Path(__file__).resolve().parents[2]
SHIPPED = "package:demo_backbone.safetensors"


def test_the_shipped_backbone_loads_strictly_by_its_package_name_and_is_documented():
    assert "demo_backbone.safetensors" in packaged_weights()
    path = resolve_weights_file(SHIPPED)
    assert path.is_file() and path.stat().st_size <= 5 * 2 ** 20
    backbone = Backbone("test_resnet", pretrained_file=SHIPPED, image_size=96)
    assert backbone.weights["source"] == "file" and backbone.weights["location"] == str(path)
    digest = sha256(path)
    assert backbone.weights["sha256"] == digest
    assert digest in (REPO / "docs" / "demo.md").read_text()  # the docs name the very file
    assert re.search(r'"weights/\*\.safetensors"', (REPO / "pyproject.toml").read_text())
    random = Backbone("test_resnet", pretrained=False, image_size=96)
    assert not torch.equal(backbone.body.conv1[0].weight, random.body.conv1[0].weight)


def test_a_package_name_that_is_not_shipped_is_refused_naming_what_is():
    with pytest.raises(PretrainedWeightsError, match=r"ships no weights file 'nope.safetensors' "
                                                     r"\(it ships: .*demo_backbone.safetensors"):
        Backbone("test_resnet", pretrained_file="package:nope.safetensors", image_size=96)
    assert resolve_weights_file("~/w.pth") == Path.home() / "w.pth"  # other values stay paths


def test_shipped_weights_of_another_model_are_refused_as_any_file():
    with pytest.raises(PretrainedWeightsError, match="does not fit backbone 'resnet18"):
        Backbone("resnet18", pretrained_file=SHIPPED)


@pytest.mark.parametrize("recipe, name, rate, held", [("parts-pretrained", "mgmrn", 0.01, 0),
                                                      ("parts-pretrained-baseline", "baseline", 0.01, 0),
                                                      ("demo-pretrained", "mgmrn", 1.0, 0),
                                                      ("custom", "mgmrn", 0.1, 5)])
def test_the_pretrained_recipes_fine_tune_the_shipped_backbone(recipe, name, rate, held):
    cfg = load_config(recipe)
    assert cfg.model.name == name and cfg.model.backbone == "test_resnet"
    assert cfg.model.pretrained and cfg.model.pretrained_file == SHIPPED and cfg.model.finetune
    # the parts demo at a hundredth of the heads' rate: at a tenth the baseline catches up on the
    # parts set; the shapes set at the heads' rate, far ahead of training from scratch there; a
    # user's own data: the heads alone for 5 epochs, then the backbone at a tenth, the one start
    # ahead of training from scratch or within a tenth of a point of it on every set measured
    # (docs/demo.md, the backbone's learning rate and against training from scratch)
    assert (cfg.train.backbone_lr_scale, cfg.train.heads_only_epochs) == (rate, held)
    # the same budget and images as the recipe it builds on
    base = load_config("demo" if recipe.startswith("demo") else "parts")
    assert (cfg.data.image_size, cfg.train.epochs, cfg.train.lr) == \
        (base.data.image_size, base.train.epochs, base.train.lr)
    if recipe != "custom":
        assert cfg.data == base.data


def test_mgmrn_train_without_a_config_fine_tunes_the_shipped_backbone():
    default = load_config()
    assert default == load_config("parts-pretrained")
    assert default.model.pretrained_file == SHIPPED and default.model.finetune
    assert (default.model.name, default.data.name) == ("mgmrn", "parts")
    # its baseline differs in the head alone
    baseline = load_config("parts-pretrained-baseline")
    assert baseline.model.name == "baseline" and baseline.output_dir != default.output_dir
    assert (baseline.data, baseline.train) == (default.data, default.train)


def test_the_pretraining_script_is_deterministic_and_its_file_loads_strictly(tmp_path):
    script = load_script("scripts/pretrain_backbone.py")
    tiny = ["--images", "48", "--held-out", "16", "--size", "48", "--steps", "3",
            "--batch-size", "8"]
    for out in ("a", "b"):
        assert script.main([*tiny, "--out", str(tmp_path / f"{out}.safetensors")]) == 0
    assert sha256(tmp_path / "a.safetensors") == sha256(tmp_path / "b.safetensors")
    backbone = Backbone("test_resnet", pretrained_file=str(tmp_path / "a.safetensors"), image_size=96)
    assert backbone.weights["sha256"] == sha256(tmp_path / "a.safetensors")


@pytest.mark.parametrize("held", [0.9, 0.0])
def test_a_real_run_holds_the_shipped_backbone_still_for_its_heads_only_epochs(tmp_path, held):
    """Through ``mgmrn train``: with the backbone held for (the rounding of) every batch, the saved
    backbone weights are the shipped ones; without, the same run moves every one of them."""
    from mgmrn.checkpoint import load_checkpoint
    from mgmrn.cli import main

    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1", "train.batches_per_epoch=2",
                                "train.eval_every=0", f"train.heads_only_epochs={held}")]) == 0
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    shipped = Backbone("test_resnet", pretrained_file=SHIPPED, image_size=32).body
    weights = {n: p for n, p in shipped.named_parameters()}
    moved = {n for n, p in weights.items() if not torch.equal(saved[f"backbone.body.{n}"], p)}
    assert moved == (set() if held else set(weights))

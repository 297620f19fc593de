"""mgmrn convert-release: published checkpoints in, with clear errors otherwise.

The published checkpoint is the parity fixture's head weights (``tests/data/release_small.pt``)
plus a small ResNet (timm's resnet18 at widths 8/16/24/32, whose stage 2-4 channels match the
fixture's heads) under ``backbone.`` with torchvision's names, as the published train.py saves it.
Numerically, the D=32 and D=64 fixtures' whole published models (their stub backbones included)
are converted and reproduce the published scores; ResNet-101's weights through convert-release are
checked in ``tests/parity/test_parity_full.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mgmrn
from mgmrn.cli import main

from ._parity_checks import (
    check_convert_release_scores,
    release_checkpoint,
    write_dataset,
    write_recipe,
)
from ._release import load_fixture


@pytest.fixture(scope="module")
def release():
    return load_fixture("d32")


@pytest.fixture()
def setup(tmp_path, release):
    write_dataset(tmp_path / "data", release)
    write_recipe(tmp_path / "recipe.yaml", tmp_path / "data")
    return tmp_path


def test_parity_convert_release_checkpoint_for_eval_predict_and_explain(setup, release, capsys):
    state = release_checkpoint(setup / "release.pth", release)
    out = setup / "converted.pt"
    assert main(["convert-release", str(setup / "release.pth"), "--config",
                 str(setup / "recipe.yaml"), "--out", str(out)]) == 0
    predictor = mgmrn.load(out)
    params = dict(predictor.model.named_parameters())
    # every published weight sits where the name mapping puts it
    assert torch.equal(params["decoders.1.query.weight"], state["QueryW2.weight"])
    assert torch.equal(params["decoders.2.prototypes"], state["V_att_final_branch3"])
    assert torch.equal(params["granularity.0.grouping.centres"], state["s3.group.weight"][:, :, 0, 0])
    assert torch.equal(params["refinement.attention.0.spatial_gate.0.weight"],
                       state["lateral_conv1.s_attn.0.weight"])
    assert torch.equal(params["backbone.body.layer3.0.conv1.weight"],
                       state["backbone.layer3.0.conv1.weight"])
    assert torch.equal(predictor.model.state_dict()["backbone.body.bn1.running_var"],
                       state["backbone.bn1.running_var"])
    # the converted model computes the published forward (float32 here, float64 in test_parity)
    assert predictor.config.model.grouping == "identity"
    image = setup / "data" / "images" / "c7" / "0.png"
    results = predictor.predict([image], top_k=3, explain_dir=setup / "explain")
    assert len(results[0]["classes"]) == 3 and Path(results[0]["explanation"]).is_file()
    assert main(["eval", "--checkpoint", str(out), "--out", str(setup / "results.json")]) == 0
    assert "czsl_acc" in json.loads((setup / "results.json").read_text())


@pytest.mark.parametrize("change, message", [
    ({"drop": ["QueryW2.weight"]}, "missing: QueryW2.weight"),
    ({"extra": {"QueryW4.weight": torch.zeros(16, 16)}}, "unexpected: QueryW4.weight"),
    ({"reshape": {"KeyW1.weight": (16, 33)}}, "mis-shaped: KeyW1.weight (16, 33) (expected (16, 32))"),
    ({"drop": ["backbone.layer2.0.conv1.weight"]}, "missing: backbone.layer2.0.conv1.weight"),
])
def test_parity_convert_release_refuses_what_does_not_fit(setup, release, capsys, change, message):
    release_checkpoint(setup / "release.pth", release, **change)
    out = setup / "converted.pt"
    assert main(["convert-release", str(setup / "release.pth"), "--config",
                 str(setup / "recipe.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "release.pth" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_convert_release_refuses_other_files_and_our_recipes(setup, release, capsys):
    (setup / "broken.pth").write_bytes(b"not a checkpoint")
    assert main(["convert-release", str(setup / "broken.pth"), "--config",
                 str(setup / "recipe.yaml"), "--out", str(setup / "a.pt")]) == 2
    assert "is not a PyTorch checkpoint" in capsys.readouterr().err
    release_checkpoint(setup / "release.pth", release)
    assert main(["convert-release", str(setup / "release.pth"), "--config",
                 str(setup / "recipe.yaml"), "--out", str(setup / "a.pt"),
                 "model.grouping=regions"]) == 2
    assert "*-release recipe" in capsys.readouterr().err
    (setup / "a.pt").write_text("mine")
    assert main(["convert-release", str(setup / "release.pth"), "--config",
                 str(setup / "recipe.yaml"), "--out", str(setup / "a.pt")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (setup / "a.pt").read_text() == "mine"


@pytest.mark.parametrize("layout", ["published", "module-prefixed", "bare"])
@pytest.mark.parametrize("size", ["d32", "d64"])
def test_parity_convert_release_reproduces_the_published_scores(tmp_path, monkeypatch, size,
                                                                layout, capsys):
    """`mgmrn convert-release` of the fixture's published weights (its stub backbone under
    ``backbone.``, as the published train.py saves a model) -> a checkpoint that `mgmrn.load`
    reads and that computes the published scores to 1e-9 in float64. Also from what
    ``DataParallel`` saves (``module.`` before every name) and from a bare state dict."""
    check_convert_release_scores(tmp_path, monkeypatch, size, layout, capsys)


def test_convert_release_refuses_switches_not_published_and_names_them(setup, release, capsys):
    release_checkpoint(setup / "release.pth", release)
    out = setup / "converted.pt"
    assert main(["convert-release", str(setup / "release.pth"), "--config",
                 str(setup / "recipe.yaml"), "--out", str(out), "model.halving=mean",
                 "train.schedule=fused", "model.scaled_attention=true"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    for item in ("model.halving=mean (published: align_corners)",
                 "model.scaled_attention=true (published: false)",
                 "train.schedule=fused (published: alternating)"):
        assert item in err, err
    assert "model.norm" not in err  # only the switches that differ

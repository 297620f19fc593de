"""``mgmrn features``: every image's pooled features and attribute scores, in the xlsa17 layout,
enough to reproduce the checkpoint's CZSL, resumable chunk by chunk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from mgmrn.cli import main
from mgmrn.commands import features as features_command
from mgmrn.inference import features

from ..helpers import tiny

RES101 = {"features", "labels", "image_files", "attribute_scores", "features_fine",
          "features_middle", "features_coarse", "attribute_scores_fine",
          "attribute_scores_middle", "attribute_scores_coarse"}
ATT_SPLITS = {"att", "original_att", "allclasses_names", "attribute_names", "trainval_loc",
              "test_seen_loc", "test_unseen_loc", "train_loc", "val_loc"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-epoch run on a tiny drawn set, and its features."""
    root = tmp_path_factory.mktemp("features")
    assert main(["train", *tiny(root, "run")]) == 0
    checkpoint = root / "run" / "checkpoints" / "last.pt"
    out = root / "features"
    assert main(["features", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--chunk", "40"]) == 0
    results = json.loads((root / "run" / "results.json").read_text())
    return {"checkpoint": checkpoint, "out": out, "results": results, "root": root}


def _mat(path):
    return {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}


def test_the_mat_files_have_xlsa17s_fields_shapes_and_1_based_indices(run):
    res, splits = _mat(run["out"] / "res101.mat"), _mat(run["out"] / "att_splits.mat")
    assert set(res) == RES101 and set(splits) == ATT_SPLITS
    n = run["results"]["data"]
    total = n["n_train"] + n["n_test_seen"] + n["n_test_unseen"]
    classes = n["n_seen_classes"] + n["n_unseen_classes"]
    assert res["features"].shape == (3 * 32, total)  # (D, N): three levels of D = 32
    assert res["features_fine"].shape == (32, total) and res["attribute_scores"].shape == (8, total)
    assert res["labels"].shape == (total, 1) and res["labels"].min() == 1
    assert res["labels"].max() == classes and res["image_files"].shape == (total, 1)
    assert splits["att"].shape == (8, classes)
    np.testing.assert_allclose(np.linalg.norm(splits["att"], axis=0), 1, atol=1e-6)
    locations = [splits[f"{s}_loc"].ravel() for s in ("trainval", "test_seen", "test_unseen")]
    assert [len(loc) for loc in locations] == [n["n_train"], n["n_test_seen"], n["n_test_unseen"]]
    assert sorted(np.concatenate(locations)) == list(range(1, total + 1))  # 1-based, each once
    assert splits["train_loc"].size == 0 and splits["val_loc"].size == 0
    # unseen test images are of unseen classes only: no class of theirs among trainval's
    labels = res["labels"].ravel()
    assert not set(labels[locations[2] - 1]) & set(labels[locations[0] - 1])


def test_nearest_class_attributes_on_the_written_scores_reproduce_the_czsl(run):
    """Each level's tau-scaled cosine to the class attributes, summed over levels: the
    network's own classifier, from the .mat files alone."""
    res, splits = _mat(run["out"] / "res101.mat"), _mat(run["out"] / "att_splits.mat")
    unseen_at = splits["test_unseen_loc"].ravel().astype(int) - 1
    labels = res["labels"].ravel()[unseen_at].astype(int) - 1
    unseen_classes = np.unique(labels)
    att = splits["original_att"][:, unseen_classes]
    att = att / (np.linalg.norm(att, axis=0, keepdims=True) + 1e-10)
    scores = 0
    for level in ("fine", "middle", "coarse"):
        s = res[f"attribute_scores_{level}"][:, unseen_at].T
        scores = scores + (s / (np.linalg.norm(s, axis=1, keepdims=True) + 1e-10)) @ att
    predicted = unseen_classes[scores.argmax(1)]
    czsl = 100 * np.mean([np.mean(predicted[labels == c] == c) for c in unseen_classes])
    assert czsl == pytest.approx(run["results"]["czsl_acc"], abs=1.0)


def test_the_npz_holds_the_same_with_names(run):
    with np.load(run["out"] / "features.npz") as saved:
        assert saved["attribute_scores"].shape[1:] == (3, 8)
        assert list(saved["levels"]) == ["fine", "middle", "coarse"]
        res = _mat(run["out"] / "res101.mat")
        np.testing.assert_allclose(saved["features_middle"].T, res["features_middle"], rtol=1e-6)
        np.testing.assert_array_equal(saved["labels"] + 1, res["labels"].ravel())
        assert len(saved["class_names"]) == res["labels"].max()


def test_a_stopped_extraction_redoes_only_the_missing_chunks(run, monkeypatch):
    partial = run["out"] / "partial"
    chunks = sorted(partial.glob("chunk-*.npz"))
    assert len(chunks) == 3  # 108 images, 40 per chunk
    chunks[1].unlink()
    before = (run["out"] / "res101.mat").read_bytes()
    done = []
    original = features.extract_chunk
    monkeypatch.setattr(features, "extract_chunk",
                        lambda *a, **k: done.append(len(a[1])) or original(*a, **k))
    assert main(["features", "--checkpoint", str(run["checkpoint"]), "--out", str(run["out"]),
                 "--chunk", "40"]) == 0
    assert done == [40]
    assert _mat(run["out"] / "res101.mat")["features"].tolist() == \
        scipy.io.loadmat(__import__("io").BytesIO(before))["features"].tolist()


def test_chunks_of_another_image_list_are_not_reused(run, monkeypatch):
    out = run["root"] / "unseen-only"
    assert main(["features", "--checkpoint", str(run["checkpoint"]), "--out", str(out),
                 "--split", "test_unseen"]) == 0
    res, splits = _mat(out / "res101.mat"), _mat(out / "att_splits.mat")
    assert res["features"].shape[1] == run["results"]["data"]["n_test_unseen"]
    assert splits["trainval_loc"].size == 0
    # the same folder for all splits: the unseen-only chunk is dropped, every image is done
    done = []
    original = features.extract_chunk
    monkeypatch.setattr(features, "extract_chunk",
                        lambda *a, **k: done.append(len(a[1])) or original(*a, **k))
    assert main(["features", "--checkpoint", str(run["checkpoint"]), "--out", str(out)]) == 0
    assert sum(done) == _mat(run["out"] / "res101.mat")["labels"].shape[0]


def test_the_command_names_the_same_choices_as_the_module():
    assert features_command.FEATURE_SPLITS == tuple(features.SPLITS)
    assert features_command.MAT_FEATURES == features.MAT_FEATURES


def test_errors_are_one_line(run, capsys):
    assert main(["features", "--checkpoint", str(run["root"] / "missing.pt"), "--out", "x"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["features", "--checkpoint", str(run["checkpoint"]), "--out", "x",
                 "--chunk", "0"]) == 2
    assert capsys.readouterr().err == "mgmrn features: error: --chunk must be at least 1, got 0\n"


def test_the_baselines_feature_is_its_pooled_backbone_map():
    import torch

    from mgmrn.models import build_model

    from ..helpers import tiny_config

    model = build_model(tiny_config("baseline").model, torch.randn(5, 8)).eval()
    sink = []
    handles = features.level_feature_hooks(model, sink)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(images, torch.rand(3, 5))
        for handle in handles:
            handle.remove()
        expected = model.backbone(images)[-1].mean(dim=(2, 3))
    assert len(sink) == 1 and torch.allclose(sink[0], expected)


def test_chunks_of_another_checkpoint_are_not_reused(run, tmp_path):
    import torch

    from mgmrn.inference.loaded import LoadedRun

    first = LoadedRun.from_checkpoint(run["checkpoint"], "cpu")
    second = LoadedRun.from_checkpoint(run["checkpoint"], "cpu")
    with torch.no_grad():  # the last weight alone differs: a run on a frozen backbone
        list(second.model.parameters())[-1].add_(1e-3)
    paths = ["a.png", "b.png"]
    assert features._fingerprint(first, paths) != features._fingerprint(second, paths)
    assert features._fingerprint(first, paths) != features._fingerprint(first, paths[:1])
    assert features._fingerprint(first, paths) == features._fingerprint(
        LoadedRun.from_checkpoint(run["checkpoint"], "cpu"), paths)

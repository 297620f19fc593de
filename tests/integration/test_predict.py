"""Prediction from a checkpoint: top-k classes, attributes, JSON, attention figures, errors."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgmrn.checkpoint import CheckpointError
from mgmrn.commands import predict as predict_module
from mgmrn.commands.predict import run_predict
from mgmrn.data import transforms
from mgmrn.errors import UsageError
from mgmrn.inference.inputs import expand_inputs
from mgmrn.inference.predictor import load

from ..helpers import (
    ATTRIBUTE_NAMES,
    CLASS_NAMES,
    SEEN,
    UNSEEN,
    png_size,
    tiny_config,
    write_checkpoint,
)

CLASS_SETS = {"all": set(range(6)), "seen": set(SEEN), "unseen": set(UNSEEN)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return load(checkpoint)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Five images of different sizes and formats, plus files that are not images."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (suffix, size) in enumerate([(".png", (64, 64)), (".jpg", (80, 70)),
                                        (".JPEG", (50, 90)), (".bmp", (64, 64)),
                                        (".webp", (100, 100))]):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{4 - i}{suffix}")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "sub" / "inner.png")
    return folder


def test_load_restores_the_checkpoint(predictor, checkpoint):
    saved = torch.load(checkpoint, weights_only=True)
    for key, value in predictor.run.model.state_dict().items():
        torch.testing.assert_close(value, saved["model"][key])
    assert predictor.class_names == CLASS_NAMES and predictor.run.config.data.image_size == 64
    assert not predictor.run.model.training and predictor.run.device == torch.device("cpu")


@pytest.mark.parametrize("classes", ["all", "seen", "unseen"])
def test_predict_returns_top_k_of_the_requested_classes(predictor, image_folder, classes):
    results = predictor.predict(expand_inputs([image_folder]), top_k=2, classes=classes,
                                top_attributes=3)
    assert len(results) == 5
    for result in results:
        ranked = result["classes"]
        assert [c["rank"] for c in ranked] == [1, 2]
        assert {c["index"] for c in ranked} <= CLASS_SETS[classes]
        assert all(c["name"] == CLASS_NAMES[c["index"]] for c in ranked)
        assert all(c["seen"] == (c["index"] in SEEN) for c in ranked)
        assert ranked[0]["score"] >= ranked[1]["score"]
        values = [a["value"] for a in result["attributes"]]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert all(a["name"] == ATTRIBUTE_NAMES[a["index"]] for a in result["attributes"])


def test_top_k_beyond_the_class_set_returns_the_whole_set_with_probabilities(predictor,
                                                                           image_folder):
    result = predictor.predict(image_folder / "img0.webp", top_k=10, classes="unseen")[0]
    assert sorted(c["index"] for c in result["classes"]) == UNSEEN
    assert sum(c["probability"] for c in result["classes"]) == pytest.approx(1.0)


def test_paths_pil_images_and_tensors_give_the_same_scores(predictor, image_folder):
    path = image_folder / "img3.jpg"
    with Image.open(path) as image:
        pil = image.convert("RGB")
    cfg = predictor.run.config.data  # a float tensor is taken as normalised already
    tensor = transforms.test_transform(cfg.image_size, cfg.test_resize, inputs=predictor.run.inputs)(pil)
    by_path, by_pil, by_tensor = (predictor.predict(x, top_k=6)[0]
                                  for x in (str(path), pil, tensor))
    assert by_path["image"] == str(path) and by_tensor["image"] == "image_0"
    for other in (by_pil, by_tensor):
        assert [c["index"] for c in other["classes"]] == [c["index"] for c in by_path["classes"]]
        np.testing.assert_allclose([c["score"] for c in other["classes"]],
                                   [c["score"] for c in by_path["classes"]], rtol=1e-5)
    raw = torch.as_tensor(np.array(pil)).permute(2, 0, 1)  # uint8 pixels are transformed first
    assert len(predictor.predict(torch.stack([raw, raw]), top_k=1)) == 2


def test_a_16_bit_copy_predicts_as_its_8_bit_original(predictor, tmp_path):
    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 7 % 256).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    # one image per call: rows of one batch may round differently in the last float32 digit
    eight, sixteen = (predictor.predict([str(tmp_path / name)], top_k=3)[0]
                      for name in ("grey8.png", "grey16.png"))
    assert [c["index"] for c in sixteen["classes"]] == [c["index"] for c in eight["classes"]]
    np.testing.assert_allclose([c["score"] for c in sixteen["classes"]],
                               [c["score"] for c in eight["classes"]], rtol=1e-5)


def test_gamma_pushes_predictions_to_unseen_classes(predictor, image_folder):
    paths = expand_inputs([image_folder])
    calibrated = predictor.predict(paths, top_k=1, classes="all", gamma=1e4)
    assert all(r["classes"][0]["index"] in UNSEEN for r in calibrated)


def test_expand_inputs_keeps_image_files_of_folders_sorted(image_folder):
    paths = expand_inputs([image_folder, image_folder / "sub" / "inner.png"])
    assert [p.name for p in paths] == ["img0.webp", "img1.bmp", "img2.JPEG", "img3.jpg",
                                       "img4.png", "inner.png"]


def test_missing_inputs_are_errors_naming_them(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="no_such.png"):
        run_predict(checkpoint, [tmp_path / "no_such.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty' holds no image files"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(CheckpointError, match="missing.pt"):
        run_predict(tmp_path / "missing.pt", [])


def test_unreadable_image_is_an_error_naming_it(tmp_path, predictor):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        predictor.predict(bad)


def test_run_predict_prints_json_that_parses(checkpoint, image_folder):
    out = io.StringIO()
    assert run_predict(checkpoint, [image_folder], top_k=3, classes="unseen", as_json=True,
                       out=out) == 0
    results = json.loads(out.getvalue())
    assert [Path(r["image"]).name for r in results][:2] == ["img0.webp", "img1.bmp"]
    assert all(len(r["classes"]) == 2 and {c["index"] for c in r["classes"]} == set(UNSEEN)
               for r in results)


def test_run_predict_prints_readable_text(checkpoint, image_folder):
    out = io.StringIO()
    run_predict(checkpoint, [image_folder / "img4.png"], top_k=2, out=out)
    text = out.getvalue()
    assert str(image_folder / "img4.png") in text and "attributes:" in text
    assert any(name in text for name in CLASS_NAMES)


def test_explain_writes_one_figure_per_image(tmp_path, checkpoint, image_folder, capsys):
    twin = tmp_path / "other"
    twin.mkdir()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(twin / "img4.png")
    args = argparse.Namespace(checkpoint=str(checkpoint), inputs=[str(image_folder), str(twin)],
                              top_k=2, classes="all", as_json=True,
                              explain=str(tmp_path / "explain"), device="cpu",
                              add_classes=[], gamma=None)
    assert predict_module.run(args) == 0
    results = json.loads(capsys.readouterr().out)
    assert len({r["explanation"] for r in results}) == len(results) == 6
    figures = sorted((tmp_path / "explain").glob("*.png"))
    assert [f.name for f in figures] == ["img0.png", "img1.png", "img2.png", "img3.png",
                                         "img4-1.png", "img4.png"]
    for figure in figures:  # 3 attributes x (image + 3 levels)
        assert png_size(figure) == (4 * 170, 3 * 170 + 40)


def test_explanation_paths_are_reported(tmp_path, predictor, image_folder):
    results = predictor.predict(image_folder / "img1.bmp", explain_dir=tmp_path / "x",
                                explain_attributes=2)
    assert Path(results[0]["explanation"]) == tmp_path / "x" / "img1.png"
    assert png_size(tmp_path / "x" / "img1.png") == (4 * 170, 2 * 170 + 40)


def test_baseline_predicts_and_skips_explanations(tmp_path, image_folder, caplog):
    baseline = load(write_checkpoint(tmp_path / "baseline.pt", name="baseline"))
    results = baseline.predict(expand_inputs([image_folder]), top_k=3, classes="seen",
                               explain_dir=tmp_path / "explain")
    assert len(results) == 5 and all("explanation" not in r for r in results)
    assert all({c["index"] for c in r["classes"]} <= set(SEEN) for r in results)
    assert "no attention maps" in caplog.text
    assert not list(tmp_path.glob("explain/*.png"))


def test_checkpoint_without_the_dataset_description_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {}, "config": tiny_config().to_dict()}, path)
    with pytest.raises(CheckpointError, match="old.pt.*class_names"):
        load(path)


def test_bad_options_are_refused(checkpoint, image_folder, predictor):
    with pytest.raises(ValueError, match="--classes"):
        run_predict(checkpoint, [image_folder], classes="novel")
    with pytest.raises(ValueError, match="--top-k"):
        run_predict(checkpoint, [image_folder], top_k=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        predictor.predict(torch.rand(2, 64, 64))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_without_a_gpu_is_a_clear_error(checkpoint):
    with pytest.raises(ValueError, match="CUDA is not available"):
        load(checkpoint, device="cuda")


def test_mgmrn_load_is_the_predictor_loader():
    import mgmrn
    import mgmrn.inference.predictor

    assert mgmrn.load is mgmrn.inference.predictor.load


def test_cli_predict_prints_json_and_names_missing_files(checkpoint, image_folder, capsys):
    from mgmrn import cli

    assert cli.main(["predict", "--checkpoint", str(checkpoint), str(image_folder), "--json",
                     "--top-k", "2", "--classes", "unseen"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 5 and all(len(r["classes"]) == 2 for r in results)
    assert cli.main(["predict", "--checkpoint", str(checkpoint), "no_such_image.png"]) == 2
    assert "no_such_image.png" in capsys.readouterr().err


def test_bad_counts_are_usage_errors_naming_the_option(predictor, image_folder):
    image = image_folder / "img1.bmp"
    with pytest.raises(UsageError, match=r"^top_k \(--top-k\) must be at least 1, got 0$"):
        predictor.predict(image, top_k=0)
    with pytest.raises(UsageError, match=r"^top_attributes must be at least 0, got -1$"):
        predictor.predict(image, top_attributes=-1)

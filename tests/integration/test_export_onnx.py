"""``mgmrn export --format onnx``: a graph taking images and class attributes, checked in
onnxruntime against PyTorch with the trained classes and with classes added after training."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mgmrn.cli import main
from mgmrn.data.transforms import normalize_images
from mgmrn.export.onnx import ScoringGraph
from mgmrn.inference.loaded import LoadedRun
from mgmrn.models import Backbone

from ..helpers import (
    ATTRIBUTE_NAMES,
    CLASS_NAMES,
    REPO,
    SEEN,
    checkpoint_with_data,
    load_script,
    write_checkpoint,
)

for _name in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_name, reason=f"{_name} is missing: pip install 'mgmrn[export]'")

import onnxruntime as ort  # noqa: E402

EXTRA = [[1, 1, 0, 0, 1], [0, 0, 1, 1, 0], [1, 0, 0.5, 0.5, 0]]  # three classes added later


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    checkpoint, data = checkpoint_with_data(root, {"gamma": 0.25, "split": "trainval",
                                                   "source": "test set (oracle)"})
    out = root / "model.onnx"
    assert main(["export", "--format", "onnx", "--checkpoint", str(checkpoint),
                 "--out", str(out)]) == 0
    run = LoadedRun.from_checkpoint(checkpoint, "cpu")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return {"checkpoint": checkpoint, "out": out, "run": run, "session": session, "data": data}


def _compare(export, class_attributes: torch.Tensor, batch: int) -> np.ndarray:
    """ONNX and PyTorch on ``batch`` random images; returns the ONNX class scores."""
    torch.manual_seed(batch)
    images = torch.randn(batch, 3, 64, 64)
    session = export["session"]
    got = session.run(None, {"images": images.numpy(),
                             "class_attributes": class_attributes.numpy()})
    with torch.no_grad():
        expected = ScoringGraph(export["run"].model)(images, class_attributes)
    assert [o.name for o in session.get_outputs()] == [
        "class_scores", "attribute_scores", "attention_fine", "attention_middle",
        "attention_coarse"]
    assert got[0].shape == (batch, len(class_attributes))
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=0)
    top = min(5, len(class_attributes))
    assert (np.argsort(-got[0], 1, kind="stable")[:, :top]
            == expected[0].argsort(dim=1, descending=True, stable=True)[:, :top].numpy()).all()
    return got[0]


def test_the_trained_classes_score_as_in_pytorch(export):
    attributes = export["run"].description["class_attributes"].float()
    _compare(export, attributes, batch=3)  # not the batch of the export's trace


def test_classes_added_after_training_need_only_their_rows(export):
    trained = export["run"].description["class_attributes"].float()
    scores = _compare(export, torch.cat([trained, torch.tensor(EXTRA)]), batch=1)
    alone = _compare(export, trained, batch=1)
    np.testing.assert_allclose(scores[:, :6], alone, atol=1e-5)  # the others are unchanged


def test_the_sidecar_says_how_to_run_the_graph(export):
    sidecar = json.loads(export["out"].with_suffix(".json").read_text())
    assert sidecar["class_names"] == CLASS_NAMES and sidecar["attribute_names"] == ATTRIBUTE_NAMES
    assert sidecar["seen_classes"] == SEEN and len(sidecar["class_attributes"]) == 6
    assert sidecar["calibration"]["gamma"] == 0.25
    assert sidecar["preprocessing"]["crop"] == 64 and sidecar["preprocessing"]["resize"] == 73
    assert sidecar["inputs"] == ["images", "class_attributes"]


def test_the_example_preprocesses_as_mgmrn(export, tmp_path):
    example = load_script("examples/onnx_predict.py")
    sidecar = json.loads(export["out"].with_suffix(".json").read_text())
    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    ours = example.preprocess(path, sidecar["preprocessing"])
    run = export["run"]
    theirs = normalize_images(run.transform(Image.open(path).convert("RGB")), run.inputs)
    assert ours.shape == (1, 3, 64, 64)
    # PIL and torchvision resize a little differently: pixels within a few levels
    assert np.abs(ours[0] - theirs.numpy()).mean() < 0.02


def test_the_example_ranks_classes_from_a_csv_with_the_calibration(export, tmp_path, capsys):
    example = load_script("examples/onnx_predict.py")
    table = tmp_path / "new.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", *reversed(ATTRIBUTE_NAMES)])  # columns by name, any order
        for i, row in enumerate(EXTRA):
            writer.writerow([f"new{i}", *reversed(row)])
    image = export["data"] / "images" / "green_square" / "0.png"
    assert example.main([str(export["out"]), str(image), "--classes", str(table),
                         "--with-trained", "--top-k", "9"]) == 0
    printed = [line.split()[1:] for line in capsys.readouterr().out.splitlines()]
    sidecar = json.loads(export["out"].with_suffix(".json").read_text())
    images = torch.from_numpy(example.preprocess(image, sidecar["preprocessing"]))
    attributes = torch.cat([export["run"].description["class_attributes"].float(),
                            torch.tensor(EXTRA)])
    with torch.no_grad():
        scores = ScoringGraph(export["run"].model)(images, attributes)[0][0]
    scores[SEEN] -= 0.25  # the export's gamma, on the seen classes ranked with others
    names = CLASS_NAMES + ["new0", "new1", "new2"]
    expected = [names[i] for i in scores.argsort(descending=True, stable=True)]
    assert [name for name, _ in printed] == expected
    assert [float(s) for _, s in printed] == pytest.approx(scores.sort(descending=True)[0].tolist(),
                                                           abs=1e-3)


def test_a_backbone_that_cannot_be_traced_is_named(export, tmp_path, monkeypatch, capsys):
    original = Backbone.forward

    def data_dependent(self, images):  # control flow on a value: no graph can hold it
        return original(self, images if float(images.mean()) > -1e9 else -images)

    monkeypatch.setattr(Backbone, "forward", data_dependent)
    assert main(["export", "--format", "onnx", "--checkpoint", str(export["checkpoint"]),
                 "--out", str(tmp_path / "bad.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgmrn export: error: backbone 'test_resnet' of this mgmrn network "
                          "cannot be traced for ONNX (GuardOnDataDependentSymNode")
    assert err.count("\n") == 1


def test_without_the_export_extra_the_message_says_what_to_install(export, tmp_path,
                                                                    monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert main(["export", "--format", "onnx", "--checkpoint", str(export["checkpoint"]),
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err == (
        "mgmrn export: error: ONNX export needs the export extra (onnxscript is missing): "
        "pip install 'mgmrn[export]'\n")


def test_a_network_without_attention_exports_its_scores_alone(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "baseline.pt", name="baseline")
    out = tmp_path / "baseline.onnx"
    assert main(["export", "--format", "onnx", "--checkpoint", str(checkpoint),
                 "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["class_scores", "attribute_scores"]
    images, attributes = torch.randn(2, 3, 64, 64), torch.rand(4, len(ATTRIBUTE_NAMES))
    got = session.run(None, {"images": images.numpy(), "class_attributes": attributes.numpy()})
    with torch.no_grad():
        expected = ScoringGraph(LoadedRun.from_checkpoint(checkpoint, "cpu").model)(images,
                                                                                  attributes)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=0)


def test_the_example_runs_without_torch(export, tmp_path):
    image = export["data"] / "images" / "red_circle" / "0.png"
    code = ("import runpy, sys\n"
            "sys.modules['torch'] = None  # importing torch now fails\n"
            f"sys.argv = ['onnx_predict.py', {str(export['out'])!r}, {str(image)!r}, '--top-k', '3']\n"
            f"runpy.run_path({str(REPO / 'examples' / 'onnx_predict.py')!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3 and done.stdout.startswith(" 1. ")


def test_large_weights_go_to_a_data_file_beside_the_graph(export, tmp_path, monkeypatch):
    from mgmrn.export import onnx as onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    out = tmp_path / "large.onnx"
    assert main(["export", "--format", "onnx", "--checkpoint", str(export["checkpoint"]),
                 "--out", str(out)]) == 0
    data = sorted(p.name for p in tmp_path.iterdir())
    assert data == ["large.json", "large.onnx", "large.onnx.data"]
    assert out.stat().st_size < (tmp_path / "large.onnx.data").stat().st_size
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = np.zeros((1, 3, 64, 64), np.float32)
    attributes = export["run"].description["class_attributes"].float().numpy()
    np.testing.assert_allclose(
        session.run(["class_scores"], {"images": images, "class_attributes": attributes})[0],
        export["session"].run(["class_scores"], {"images": images,
                                                 "class_attributes": attributes})[0], atol=1e-5)

"""The one inference path: evaluation, ``Predictor.predict`` and the run view's confusions score
images alike; class subsets, attention and the level mean of the attribute scores."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgmrn.checkpoint import checkpoint_inputs, data_meta
from mgmrn.config import Config
from mgmrn.data import build_data, build_test_loader
from mgmrn.data.transforms import normalize_images
from mgmrn.evaluation import named_confused_pairs
from mgmrn.inference.loaded import place_model, run_precision
from mgmrn.inference.predictor import load
from mgmrn.inference.scoring import Inference, predict_logits
from mgmrn.models import build_model
from mgmrn.precision import Precision, resolve_precision
from mgmrn.serve.run_view import RunView

CLASSES = {"red_circle": "seen", "red_square": "seen", "blue_circle": "seen",
           "blue_square": "unseen", "green_circle": "unseen", "green_square": "unseen"}
ATTRIBUTES = ["shape_circle", "shape_square", "color_red", "color_blue", "color_green"]
# the input statistics and resizing saved with the checkpoint; not ImageNet's, so that a path
# that normalised with ImageNet's statistics would give other scores
INPUTS = {"mean": [0.3, 0.5, 0.6], "std": [0.2, 0.3, 0.25], "interpolation": "bicubic"}


def tiny_config(root: Path, name: str = "mgmrn") -> Config:
    cfg = Config()
    cfg.model.name, cfg.model.backbone, cfg.model.pretrained = name, "test_resnet", False
    cfg.model.dim, cfg.model.attn_dim, cfg.model.num_parts = 32, 16, 3
    cfg.data.name, cfg.data.root, cfg.data.verify_images = "custom", str(root), False
    cfg.data.image_size, cfg.data.num_workers = 64, 0
    cfg.data.test_batch_size = 3  # several batches, the last one shorter
    return cfg


def write_dataset(root: Path) -> Path:
    """A custom dataset: four images of different sizes per class."""
    rows = ["class,split," + ",".join(ATTRIBUTES)]
    rng = np.random.default_rng(0)
    for name, split in CLASSES.items():
        shape, color = name.split("_")[1], name.split("_")[0]
        rows.append(f"{name},{split}," + ",".join(
            str(int(a in (f"shape_{shape}", f"color_{color}"))) for a in ATTRIBUTES))
        (root / "images" / name).mkdir(parents=True)
        for i, size in enumerate([(70, 64), (64, 90), (100, 80), (64, 64)]):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
    (root / "classes.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The dataset, and a checkpoint of an untrained tiny network on it, in the format of
    ``mgmrn train``."""
    root = tmp_path_factory.mktemp("inference")
    cfg = tiny_config(write_dataset(root / "data"))
    data = build_data(cfg.data, seed=cfg.seed, inputs=INPUTS)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.attribute_vectors)
    path = root / "tiny.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "data": data_meta(data),
                "epoch": 0, "input": INPUTS}, path)
    return {"cfg": cfg, "data": data, "checkpoint": path, "root": root}


def evaluation_scores(run, split: str):
    """Class scores (N, C) and labels (N,) of a test split, as ``mgmrn eval`` computes them."""
    cfg, data = run["cfg"], run["data"]
    saved = torch.load(run["checkpoint"], weights_only=True)
    model = build_model(cfg.model, data.attribute_vectors)
    model.load_state_dict(saved["model"])
    cpu = torch.device("cpu")
    precision = resolve_precision(cfg, cpu, checkpoint_inputs(saved))
    loader = build_test_loader(getattr(data, split), cfg.data)
    logits, labels, _ = predict_logits(model, loader, data.class_attributes, cpu, precision,
                                       show_progress=False)
    return logits, labels


class CountingInference:
    """An inference object that records the size of every batch it scores."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, images, *args, **kwargs):
        self.batches.append(len(images))
        return self.inner(images, *args, **kwargs)


@pytest.mark.parametrize("split", ["test_seen", "test_unseen"])
def test_evaluation_and_predict_give_the_same_scores(run, split):
    logits, _ = evaluation_scores(run, split)
    paths = getattr(run["data"], split).paths
    predictor = load(run["checkpoint"])
    classes = len(predictor.class_names)
    results = predictor.predict(paths, top_k=classes, gamma=0.0, batch_size=4)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    predicted = torch.zeros(len(paths), classes)
    for row, result in zip(predicted, results, strict=True):
        for found in result["classes"]:
            row[found["index"]] = found["score"]
    assert len(set(logits[:, 0].tolist())) == len(paths)  # images of their own scores
    torch.testing.assert_close(predicted, logits, rtol=1e-5, atol=1e-5)


def test_run_view_confusions_are_those_of_evaluation(run):
    """Computed from the checkpoint a batch at a time, with the runner's confusion function."""
    logits, labels = evaluation_scores(run, "test_unseen")
    unseen = run["data"].unseen_classes
    czsl = unseen[logits[:, unseen].argmax(dim=1)]
    expected = named_confused_pairs(czsl, labels, run["data"].class_names,
                                    run["data"].test_unseen.paths)
    folder = run["root"] / "old_run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"epoch": 0, "loss": 1.0}\n')
    predictor = load(run["checkpoint"])
    predictor.inference = counting = CountingInference(predictor.inference)
    view = RunView(folder, run["root"], predictor, threading.Lock())
    view._compute()
    assert counting.batches == [3, 3, 3, 3]  # 12 unseen test images, 3 a batch (data.test_batch_size)
    status = view.confusions["status"]
    assert status == "computed from the checkpoint on 12 unseen test images"
    assert [{k: p[k] for k in ("true", "predicted", "count", "share")}
            for p in view.confusions["pairs"]] == \
        [{k: p[k] for k in ("true", "predicted", "count", "share")} for p in expected]
    assert expected  # an untrained network confuses classes: the comparison is not empty


@pytest.fixture(scope="module")
def network(run):
    """A predictor's inference object and a batch of uint8 test images."""
    predictor = load(run["checkpoint"])
    images = torch.stack([run["data"].test_unseen[i][0] for i in range(5)])
    return predictor, images


def test_a_class_subset_gives_the_columns_of_every_class(network):
    predictor, images = network
    full = predictor.inference(images)
    subset = torch.tensor([4, 0, 2])
    part = predictor.inference(images, subset)
    assert part.logits.shape == (5, 3)
    torch.testing.assert_close(part.logits, full.logits[:, subset], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part.attributes, full.attributes)


def test_attention_leaves_the_scores_unchanged(network):
    predictor, images = network
    plain = predictor.inference(images)
    explained = predictor.inference(images, attention=True)
    assert plain.output is None and len(explained.output.attention) == 3
    torch.testing.assert_close(explained.logits, plain.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explained.attributes, plain.attributes, rtol=1e-5, atol=1e-5)


def test_scores_are_the_network_outputs_with_attributes_averaged_over_levels(network):
    predictor, images = network
    got = predictor.inference(images)
    with torch.no_grad():
        out = predictor.run.model(normalize_images(images, INPUTS), predictor.classes.attributes)
    fine, middle, coarse = out.attribute_scores
    torch.testing.assert_close(got.attributes, (fine + middle + coarse) / 3)
    torch.testing.assert_close(got.logits, sum(out.class_scores))
    assert got.logits.dtype == got.attributes.dtype == torch.float32


def test_uint8_and_normalised_float_inputs_give_the_same_scores(network):
    """Files are normalised on the device; a tensor from ``Predictor.transform`` arrives so."""
    predictor, images = network
    floats = normalize_images(images, INPUTS)
    torch.testing.assert_close(predictor.inference(floats).logits,
                               predictor.inference(images).logits, rtol=1e-6, atol=1e-6)
    pictures = predictor.inference.pictures(images)
    torch.testing.assert_close(pictures, images.float() / 255)
    torch.testing.assert_close(predictor.inference.pictures(floats), pictures, rtol=0,
                               atol=1e-6)


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_predictions_on_a_gpu_take_the_precision_of_evaluation(tmp_path):
    cfg = tiny_config(tmp_path)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    on_gpu = run_precision(cfg, cuda, INPUTS, "predict")  # resolved only: no GPU is touched
    evaluation = resolve_precision(cfg, cuda, INPUTS)
    assert (on_gpu.dtype, on_gpu.channels_last, on_gpu.inputs) == \
        (evaluation.dtype, evaluation.channels_last, evaluation.inputs) == \
        (torch.bfloat16, True, INPUTS)
    cfg.train.amp, cfg.train.channels_last = "fp16", False
    fp16 = run_precision(cfg, cuda, None, "predict")
    assert (fp16.dtype, fp16.channels_last, fp16.scaler) == (torch.float16, False, None)
    cfg.train.amp = "bf16"  # on the CPU predictions stay in fp32, whatever training used
    assert run_precision(cfg, cpu, INPUTS, "predict") == Precision(inputs=INPUTS)
    # evaluation keeps train.amp on any device, as training evaluates
    assert run_precision(cfg, cpu, INPUTS, "evaluate").dtype == torch.bfloat16


def test_place_model_gives_the_layout_of_the_precision(run):
    model = build_model(run["cfg"].model, run["data"].attribute_vectors)
    cpu = torch.device("cpu")
    last = place_model(copy.deepcopy(model), cpu, Precision(channels_last=True))
    kept = place_model(model, cpu, Precision())

    def first_conv(net):
        return next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).weight

    assert first_conv(last).is_contiguous(memory_format=torch.channels_last)
    assert not first_conv(kept).is_contiguous(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    attributes = run["data"].class_attributes
    torch.testing.assert_close(
        Inference(last, attributes, cpu, Precision(channels_last=True))(images).logits,
        Inference(kept, attributes, cpu)(images).logits, rtol=1e-4, atol=1e-4)


def test_baseline_scores_have_one_level_and_no_attention(run, tmp_path):
    cfg = tiny_config(Path(run["cfg"].data.root), "baseline")
    model = build_model(cfg.model, run["data"].attribute_vectors)
    inference = Inference(model, run["data"].class_attributes, torch.device("cpu"))
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    got = inference(images, attention=True)
    assert got.output.attention is None
    with torch.no_grad():
        out = model(normalize_images(images), run["data"].class_attributes)
    torch.testing.assert_close(got.attributes, out.attribute_scores[0])
    torch.testing.assert_close(got.logits, out.logits)


def test_explorer_attention_is_that_of_the_inference_object(run, monkeypatch):
    """The page's attention view draws the maps and the level-mean strength of the one path."""
    import io

    import mgmrn.viz
    from mgmrn.serve.app import Explorer
    from mgmrn.viz import level_attention_maps

    drawn = {}

    def record(picture, maps, names, levels, path, attribute_values=None, title=None):
        drawn.update(picture=picture, maps=maps, names=names, levels=levels,
                     values=attribute_values)
        Path(path).write_bytes(b"png")

    monkeypatch.setattr(mgmrn.viz, "plot_attention", record)
    predictor = load(run["checkpoint"])
    explorer = Explorer(predictor)
    try:
        buffer = io.BytesIO()
        Image.open(run["data"].test_unseen.paths[0]).save(buffer, "PNG")
        key = explorer.upload(buffer.getvalue(), "a.png")
        assert explorer.attention(key, 2) == b"png"
        tensor, _ = explorer._image(key)
    finally:
        explorer.close()
    scores = predictor.inference(tensor[None], attention=True)
    expected = level_attention_maps(scores.output, (64, 64), [2])[0]
    torch.testing.assert_close(drawn["maps"], expected, rtol=1e-5, atol=1e-7)
    value = predictor.predict(tensor, top_attributes=len(ATTRIBUTES))[0]["attributes"]
    assert drawn["values"] == pytest.approx([next(a["value"] for a in value if a["index"] == 2)],
                                            rel=1e-5)
    assert drawn["names"] == ["color_red"] and drawn["levels"] == ["fine", "middle", "coarse"]
    torch.testing.assert_close(drawn["picture"], predictor.inference.pictures(tensor[None])[0])

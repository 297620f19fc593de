"""Release-parity checks of the code paths users run around the network.

The checks of :mod:`tests._parity_checks` compare mgmrn's modules with the published code's
numbers; these compare what a user's run goes through next to them: the training loop of
`mgmrn train` (learning rate of every optimizer step, also across a resume), the evaluation of
`mgmrn train` and `mgmrn eval` (every published figure from the recipe's evaluation settings),
ResNet-101's batch-norm statistics, the recipes' pretrained weights, the folding of attention
onto image cells that `--explain` draws, and convert-release's refusal of backbone entries that
do not fit. Each raises ``AssertionError`` naming what differs; ``tests/parity/test_parity_paths.py``
runs them, ``tests/parity/test_parity_faults.py`` shows them failing under faults.
"""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from mgmrn.cli import main
from mgmrn.config import ModelConfig, load_config
from mgmrn.data import ZSLData
from mgmrn.data.transforms import denormalize
from mgmrn.distributed import DistEnv
from mgmrn.inference import evaluate
from mgmrn.models import build_model, model_input_config
from mgmrn.models.backbone import Backbone
from mgmrn.models.backbone_spec import describe_backbone
from mgmrn.models.mgmrn import ZSLOutput, spatial_attention
from mgmrn.precision import resolve_precision
from mgmrn.training import runner
from mgmrn.training.preemption import Preempted
from mgmrn.viz.attention import level_attention_maps

from ..helpers import write_custom
from ._parity_checks import PRESETS, release_checkpoint
from ._release import StubBackbone, float64_default, resnet_weights

# ---------------------------------------------------------------------------------------------
# the training loop of `mgmrn train`

BATCHES = 2  # per epoch: enough for an epoch to be stopped part way and resumed


def loop_config(dataset: str, folder: Path):
    """The preset's recipe as `mgmrn train --config <preset>` reads it, with a tiny network and
    data set in place of ResNet-101 and the benchmark: the ``train`` section, which alone sets
    the learning rate, is the recipe's but for the batches per epoch."""
    root = write_custom(folder / "data", n_images=4)
    cfg = load_config(PRESETS[dataset][0], [
        f"output_dir={folder / 'run'}", "device=cpu", "data.name=custom", f"data.root={root}",
        "data.image_size=32", "data.ways=2", "data.shots=1", "data.num_workers=0",
        "data.test_batch_size=8", "data.verify_images=false", "model.backbone=test_resnet",
        "model.pretrained=false", "model.dim=32", "model.attn_dim=16", "model.num_parts=2",
        f"train.batches_per_epoch={BATCHES}"])
    assert cfg.train.lr_step_at == "start", f"{PRESETS[dataset][0]}: {cfg.train.lr_step_at}"
    return cfg


def run_training_loop(cfg, monkeypatch, stop_in: tuple[int, int] | None = None):
    """`mgmrn train`'s own loop (``runner.train``) with the work of each epoch left out.

    ``train_one_epoch`` is replaced by a body that walks the epoch's batches and steps the
    optimizer once per batch (with no gradient, so nothing moves), recording the learning rate
    of each step; evaluation runs once for real, and its results stand for every later epoch's
    (no figure reaches the learning rate). With ``stop_in`` = (epoch, batch), a SIGTERM arrives
    after that batch: the runner saves a mid-epoch checkpoint and stops, and the run is resumed
    with ``--resume`` as a requeued job would be.

    Returns:
        {epoch: [learning rate of each optimizer step]}, and the per-epoch ``lr`` the runner
        logged in metrics.jsonl.
    """
    steps: dict[int, list[float]] = {}
    evaluate, evaluated = runner.evaluate_model, []

    def epoch_body(model, loader, optimizer, criterion, device, epoch, schedule,
                   precision=None, *, stop, progress, **_):
        first = progress.batches
        for batch, _ in enumerate(loader, start=first):
            steps.setdefault(epoch, []).append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            progress.batches = batch + 1
            if (epoch, batch) == stop_in:  # a cluster scheduler's preemption
                # without the runner's handler SIGTERM would end the test process itself
                assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
                signal.raise_signal(signal.SIGTERM)
            if batch + 1 < first + len(loader) and stop():
                progress.stopped = True
                break
        progress.loss_sums = [0.0] * 3
        return {"loss": 0.0, "train_images_per_s": 0.0}

    def evaluate_once(*args, **kwargs):
        if not evaluated:
            evaluated.append(evaluate(*args, **kwargs))
        return copy.deepcopy(evaluated[0])

    monkeypatch.setattr(runner, "train_one_epoch", epoch_body)
    monkeypatch.setattr(runner, "evaluate_model", evaluate_once)
    if stop_in is None:
        runner.train(cfg)
    else:
        with pytest.raises(Preempted):
            runner.train(cfg)
        runner.train(cfg, resume=True)
    log = Path(cfg.output_dir) / "metrics.jsonl"
    logged = [record["lr"] for record in map(json.loads, log.read_text().splitlines())]
    return steps, logged


def check_training_loop(full: dict, dataset: str, folder: Path, monkeypatch,
                        stop_in: tuple[int, int] | None = (8, 0)) -> None:
    """Every optimizer step of `mgmrn train --config <preset>` runs at the learning rate the
    published loop runs that epoch at, also after a resume part way through an epoch (whose
    scheduler step was taken before the stop, and must not be taken again)."""
    want = full["schedule"][dataset]
    steps, logged = run_training_loop(loop_config(dataset, folder), monkeypatch, stop_in)
    assert sorted(steps) == list(range(len(want))), f"{dataset}: epochs run {sorted(steps)}"
    for epoch, lrs in steps.items():
        for lr in lrs:
            assert lr == pytest.approx(want[epoch], rel=1e-12), (
                f"{dataset} epoch {epoch}: an optimizer step at lr {lr}, published {want[epoch]}")
    assert [len(lrs) for lrs in steps.values()] == [BATCHES] * len(want), (
        f"{dataset}: optimizer steps per epoch {[len(lrs) for lrs in steps.values()]}")
    assert logged == pytest.approx(want, rel=1e-12), f"{dataset}: logged lr {logged}"


# ---------------------------------------------------------------------------------------------
# the evaluation of `mgmrn train` and `mgmrn eval`


class PublishedScores(nn.Module):
    """Stands in for a trained network: test image i scores as image i of the published
    evaluation. The row is read from the image's pixels through a BatchNorm whose running
    statistics pass it unchanged; in train mode its batch statistics rescale the pixels, and
    other rows are read (and the running statistics move).

    Args:
        scores: (N, C) the published scores, columns in class-index order.
        inputs: the normalisation the evaluation applies to uint8 images.
    """

    def __init__(self, scores: torch.Tensor, inputs: dict):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.register_buffer("scores", scores)
        self.inputs = inputs

    def forward(self, images, class_attributes, return_attention=False) -> ZSLOutput:
        assert class_attributes.shape[0] == self.scores.shape[1]
        pixels = denormalize(self.norm(images), self.inputs) * 255
        rows = pixels.mean(dim=(1, 2, 3)).round().long().clamp(0, len(self.scores) - 1)
        logits = self.scores[rows]
        attributes = logits.new_zeros(len(rows), class_attributes.shape[1])
        return ZSLOutput([attributes], [logits], logits)


class RowImages(torch.utils.data.Dataset):
    """Test images as the test transform gives them (uint8), each filled with its row number."""

    def __init__(self, rows: range, labels: torch.Tensor):
        self.rows, self.labels = rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return torch.full((3, 4, 4), self.rows[i], dtype=torch.uint8), int(self.labels[i])


def published_evaluation_data(metrics: dict) -> tuple[ZSLData, torch.Tensor]:
    """The published evaluation's images as a data set, and its scores (N, C) in class order."""
    m_in = metrics["inputs"]
    scores = torch.cat([m_in["ts_scores"], m_in["tu_scores"]])
    in_class_order = torch.empty_like(scores)
    in_class_order[:, m_in["train_test_id"]] = scores
    n_seen, n_unseen = len(m_in["ts_labels"]), len(m_in["tu_labels"])
    assert n_seen + n_unseen <= 256, "a row number must fit in a uint8 pixel"
    classes = scores.shape[1]
    data = ZSLData(
        name="published", class_names=[f"class{c}" for c in range(classes)],
        attribute_names=["attribute"], class_attributes=torch.zeros(classes, 1),
        attribute_vectors=torch.zeros(1, 1), seen_classes=m_in["seen_ids"],
        unseen_classes=m_in["unseen_ids"], train=[],
        test_seen=RowImages(range(n_seen), m_in["ts_labels"]),
        test_unseen=RowImages(range(n_seen, n_seen + n_unseen), m_in["tu_labels"]),
        train_labels=np.zeros(0, dtype=np.int64))
    return data, in_class_order


def check_evaluation(release: dict, recipe: str) -> None:
    """``evaluate_model``, as `mgmrn train` and `mgmrn eval` call it with the recipe's
    evaluation settings (``eval.gamma_step``, ``eval.ausuc_order``) and ``eval.gamma`` at the
    published best gamma, on a network left in train mode: every published figure."""
    metrics = release["metrics"]
    want = metrics["outputs"]
    cfg = load_config(recipe, ["data.num_workers=0"])
    cfg.eval.gamma = want["best_gamma"]
    device = torch.device("cpu")
    precision = resolve_precision(cfg, device, model_input_config(cfg.model))
    data, scores = published_evaluation_data(metrics)
    net = PublishedScores(scores, precision.inputs).train()  # as training leaves it
    results = evaluate.evaluate_model(net, data, cfg, device, precision, DistEnv())
    figures = {"CZSL": (results.czsl_acc, want["zsl_acc"]), "S": (results.gzsl_seen, want["S"]),
               "U": (results.gzsl_unseen, want["U"]), "H": (results.gzsl_h, want["H"]),
               "AUSUC": (results.ausuc, want["AUSUC"]),
               "S at gamma 0": (results.gzsl_uncalibrated.seen, want["S0"]),
               "U at gamma 0": (results.gzsl_uncalibrated.unseen, want["U0"]),
               "H at gamma 0": (results.gzsl_uncalibrated.h, want["H0"])}
    fixed = results.fixed_gamma
    figures.update({"S at the fixed gamma": (fixed.seen, want["S"]),
                    "U at the fixed gamma": (fixed.unseen, want["U"]),
                    "H at the fixed gamma": (fixed.h, want["H"])})
    differing = {name: (got, 100 * published) for name, (got, published) in figures.items()
                 if abs(got - 100 * published) > 1e-9}
    assert not differing, f"{recipe}: (ours, published) {differing}"
    assert results.gamma == pytest.approx(want["best_gamma"], abs=1e-9), f"gamma {results.gamma}"
    # the sweep visits the published points: the same gamma grid
    curve = results.curve
    points = sorted(zip(np.array(curve.seen) / 100, np.array(curve.unseen) / 100))
    published = sorted(map(tuple, want["ausuc_points"].tolist()))
    assert len(points) == len(published), f"{len(points)} sweep points, published {len(published)}"
    np.testing.assert_allclose(points, published, atol=1e-12, err_msg="sweep points")
    assert not net.training and torch.equal(net.norm.running_mean, torch.zeros(3)), (
        "the network was evaluated in train mode")


# ---------------------------------------------------------------------------------------------
# ResNet-101's batch-norm statistics and its pretrained weights

# nn.BatchNorm2d's defaults, taken by the published resnet.py and torchvision's ResNet: written
# out here so that a change inside PyTorch, which would move torchvision's numbers too, shows
PUBLISHED_BATCH_NORM = {"momentum": 0.1, "eps": 1e-5}


def check_resnet101_running_statistics(full: dict) -> None:
    """One train-mode pass of the recipe's ResNet-101 over the fixture's image (the full
    fixture's regenerated weights, float64): every batch norm normalises with the batch's
    statistics and ``eps`` and moves its running statistics by ``momentum``, by hand from its
    input; and the running statistics equal those of torchvision's ResNet-101 after the same
    pass."""
    cfg = load_config("cub-release")
    weights = resnet_weights(full)
    with float64_default(), torch.device("meta"):  # no initialisation: every weight is loaded
        ours = Backbone(cfg.model.backbone, pretrained=False, finetune=cfg.model.finetune,
                        model_args=cfg.model.backbone_args)
        reference = torchvision.models.resnet101()
    ours.to_empty(device="cpu").body.load_state_dict(weights)
    norms = {name: m for name, m in ours.body.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert len(norms) == 104
    seen, before = {}, {name: (m.running_mean.clone(), m.running_var.clone())
                        for name, m in norms.items()}
    hooks = [m.register_forward_hook(
        lambda m, i, o, name=name: seen.update({name: (i[0].clone(), o.clone())}))
        for name, m in norms.items()]
    image = full["backbone"]["image"]
    with torch.no_grad():
        ours.train()(image)
    for hook in hooks:
        hook.remove()
    momentum, eps = PUBLISHED_BATCH_NORM["momentum"], PUBLISHED_BATCH_NORM["eps"]
    for name, m in norms.items():
        x, y = seen[name]
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        unbiased = var * x[:, 0].numel() / (x[:, 0].numel() - 1)
        mean0, var0 = before[name]
        expect = {"running_mean": (1 - momentum) * mean0 + momentum * mean,
                  "running_var": (1 - momentum) * var0 + momentum * unbiased}
        for stat, value in expect.items():
            err = (getattr(m, stat) - value).abs().max().item()
            assert err < 1e-12, f"{name}.{stat} after one pass: max |diff| {err:.3g}"
        assert m.num_batches_tracked.item() == 1, f"{name}.num_batches_tracked"
        normalised = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + eps)
        err = (normalised * m.weight[:, None, None] + m.bias[:, None, None] - y).abs().max().item()
        assert err < 1e-10, f"{name} output in train mode: max |diff| {err:.3g}"
    fc = {"fc.weight": torch.zeros(1000, 2048, dtype=torch.float64),
          "fc.bias": torch.zeros(1000, dtype=torch.float64)}
    reference.to_empty(device="cpu").load_state_dict({**weights, **fc})
    with torch.no_grad():
        reference.train()(image)
    torchvision_state = reference.state_dict()
    for key, value in ours.body.state_dict().items():
        if "running" in key or "num_batches" in key:
            err = (value.double() - torchvision_state[key].double()).abs().max().item()
            assert err < 1e-12, f"{key} differs from torchvision's: max |diff| {err:.3g}"


# the published resnet.py downloads torchvision's original ImageNet-1k ResNet-101 (from
# download.pytorch.org); timm's tag tv_in1k holds torchvision's IMAGENET1K_V1 weights, tv2_in1k
# those of torchvision's later training recipe
RESNET_RECIPES = ("cub", "sun", "awa2", "cub-release", "sun-release", "awa2-release")


def check_default_weights() -> None:
    """The benchmark recipes' backbone resolves to torchvision's IMAGENET1K_V1 weights."""
    for recipe in RESNET_RECIPES:
        cfg = load_config(recipe)
        assert cfg.model.backbone == "resnet101" and cfg.model.pretrained, recipe
        name = describe_backbone(cfg.model.backbone, cfg.model.backbone_args).name
        assert name == "resnet101.tv_in1k", f"{recipe}: model.backbone resolves to {name}"
        url = timm.models.get_pretrained_cfg(name).url
        want = torchvision.models.ResNet101_Weights.IMAGENET1K_V1.url
        assert url == want, f"{recipe}: weights {url}, torchvision's IMAGENET1K_V1 are {want}"


# ---------------------------------------------------------------------------------------------
# attention folded onto image cells (`--explain`)


def plain_net(release: dict) -> nn.Module:
    """The ``cub`` recipe's network (region tokens, mgmrn's switches) at the small fixture's
    sizes on its stub backbone, in float64."""
    recipe, cfg = load_config("cub").model, release["config"]
    model_cfg = ModelConfig(**{**vars(recipe), "pretrained": False, "dim": cfg["D"],
                               "attn_dim": cfg["M"], "num_parts": cfg["K"]})
    torch.manual_seed(0)
    return build_model(model_cfg, release["inputs"]["w2v"],
                       backbone=StubBackbone(cfg["stage_channels"])).double().eval()


def _token(tokens: torch.Tensor, vector: torch.Tensor, what: str) -> int:
    """The position of ``vector`` among the decoder's ``tokens`` (T, D): exactly one."""
    found = (tokens == vector).all(dim=1).nonzero().flatten().tolist()
    assert len(found) == 1, f"{what}: found at token positions {found}"
    return found[0]


def _fold(out: ZSLOutput, level: int, position: int, size: tuple[int, int]):
    """One-hot attention on token ``position`` of ``level``, folded onto the level's grid
    (h, w) and, as `--explain` draws it, onto the image (H, W)."""
    onehots = [torch.zeros(1, 1, a.shape[-1], dtype=torch.float64) for a in out.attention]
    onehots[level][..., position] = 1.0
    grid = spatial_attention(onehots[level], out.layouts[level], out.assignments[level])[0, 0]
    shown = ZSLOutput(out.attribute_scores, out.class_scores, out.logits, onehots, out.layouts,
                      out.assignments)
    return grid, level_attention_maps(shown, size)[0, level, 0]


def _assert_in_cell(image_map: torch.Tensor, cell: tuple[int, int], grid: tuple[int, int],
                    what: str) -> None:
    """The heaviest pixel of ``image_map`` lies in ``cell`` of a ``grid`` over the image."""
    (h, w), (height, width) = grid, image_map.shape
    y, x = divmod(int(image_map.argmax()), width)
    assert (y * h // height, x * w // width) == cell, (
        f"{what}: the heaviest pixel ({y}, {x}) is in cell {(y * h // height, x * w // width)}, "
        f"not {cell} of the {h}x{w} grid")


def check_attention_folding(net: nn.Module, image: torch.Tensor,
                            class_attributes: torch.Tensor) -> None:
    """For each level, one-hot attention on the token of a known cell of its own map, of a
    known cell of its borrowed (SCAM) map and on each region token, folded as `--explain` folds
    it, lands on that cell (the region tokens: on their part's assignment map)."""
    captured: dict = {}
    hooks = [decoder.register_forward_pre_hook(
        lambda m, args, level=level: captured.update({("tokens", level): args[0][0]}))
        for level, decoder in enumerate(net.decoders)]
    hooks += [module.register_forward_hook(
        lambda m, i, o, level=level: captured.update({("own", level): o}))
        for level, module in enumerate(net.granularity)]
    hooks.append(net.refinement.register_forward_hook(
        lambda m, i, o: captured.update(borrowed=o)))
    with torch.no_grad():
        out = net(image, class_attributes, return_attention=True)
    for hook in hooks:
        hook.remove()
    size = tuple(image.shape[-2:])
    for level, name in enumerate(net.levels):
        tokens, layout = captured[("tokens", level)], out.layouts[level]
        own, regions, assignments = (t[0] for t in captured[("own", level)])
        h, w = layout.own
        assert own.shape[1:] == (h, w), f"{name}: own map {tuple(own.shape[1:])}, layout {(h, w)}"
        for cell in ((0, 0), (0, w - 1), (h - 1, 1), (h // 2, w // 2)):
            what = f"{name} level, own cell {cell}"
            grid, shown = _fold(out, level, _token(tokens, own[:, cell[0], cell[1]], what), size)
            want = torch.zeros(h, w, dtype=grid.dtype)
            want[cell] = 1.0
            assert torch.equal(grid, want), f"{what}: folded onto {grid.nonzero().tolist()}"
            _assert_in_cell(shown, cell, (h, w), what)
        borrowed = captured["borrowed"][level]
        assert (borrowed is None) == (layout.borrowed is None), f"{name}: borrowed map"
        if borrowed is not None:
            bh, bw = layout.borrowed
            assert borrowed.shape[2:] == (bh, bw), f"{name}: borrowed map {borrowed.shape}"
            for cell in ((0, bw - 1), (bh - 1, 0), (bh // 2, bw // 2)):
                what = f"{name} level, borrowed cell {cell}"
                position = _token(tokens, borrowed[0, :, cell[0], cell[1]], what)
                grid, shown = _fold(out, level, position, size)
                # the cells of the own grid that the borrowed cell covers hold most of its mass
                rows = slice(cell[0] * h // bh, (cell[0] + 1) * h // bh)
                cols = slice(cell[1] * w // bw, (cell[1] + 1) * w // bw)
                assert grid[rows, cols].sum() > 0.5 and grid.sum() == pytest.approx(1.0), (
                    f"{what}: {grid[rows, cols].sum():.3f} of its mass on the cells it covers")
                _assert_in_cell(shown, cell, (bh, bw), what)
        assert regions.shape[0] == layout.regions, f"{name}: {regions.shape[0]} region tokens"
        for k in range(layout.regions):
            what = f"{name} level, region token {k}"
            grid, _ = _fold(out, level, _token(tokens, regions[k], what), size)
            # at half size the bilinear resize is the 2x2 mean
            part = nn.functional.adaptive_avg_pool2d(assignments[k][None], (h, w))[0]
            torch.testing.assert_close(grid, part / part.sum(), rtol=0, atol=1e-9,
                                       msg=f"{what}: not folded onto part {k}'s assignments")


# ---------------------------------------------------------------------------------------------
# convert-release and backbone entries that do not fit


def check_convert_release_refuses_backbone_entries(folder: Path, release: dict, capsys) -> None:
    """A published checkpoint whose backbone has entries the recipe's backbone lacks (a deeper
    ResNet's fourth stage) or lacks some (batch-norm running statistics) is refused, by name,
    in one line, and nothing is written. ``folder`` holds the data set and recipe of
    :func:`tests._parity_checks.write_dataset` and ``write_recipe``."""
    deeper = timm.create_model("resnet18", layers=[1, 1, 1, 2], channels=(8, 16, 24, 32))
    extra = {f"backbone.{k}": v for k, v in deeper.state_dict().items()
             if k.startswith("layer4.1.")}
    cases = [({"extra": extra}, f"unexpected: {', '.join(extra)} ({len(extra)})"),
             ({"drop": ["backbone.layer4.0.bn2.running_var", "backbone.layer1.0.bn1.running_mean"]},
              "missing: backbone.layer1.0.bn1.running_mean, backbone.layer4.0.bn2.running_var (2)")]
    for change, message in cases:
        release_checkpoint(folder / "release.pth", release, **change)
        out = folder / "converted.pt"
        code = main(["convert-release", str(folder / "release.pth"), "--config",
                     str(folder / "recipe.yaml"), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and message in err, f"exit status {code}, message {err!r}"
        assert "the recipe's model.backbone (resnet18" in err, err
        assert len(err.strip().splitlines()) == 1 and not out.exists(), err

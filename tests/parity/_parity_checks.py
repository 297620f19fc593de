"""The release-parity checks shared by the parity tests and the fault catalogue.

Each ``check_*`` function runs one comparison with the published code's numbers and raises
``AssertionError`` naming what differs. ``tests/parity/test_parity.py``, ``test_parity_full.py`` and
``test_convert_release.py`` run them as tests; ``tests/parity/test_parity_faults.py`` runs them with one
fault made at a time and asserts that they fail. Fixtures and the published network are in
:mod:`tests._release`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

import mgmrn
import mgmrn.models
from mgmrn.cli import main
from mgmrn.config import load_config
from mgmrn.models import build_model, compile_heads
from mgmrn.models.release import RELEASE_SWITCHES, published_names, release_key
from mgmrn.training import runner
from mgmrn.training.engine import train_one_epoch
from mgmrn.training.losses import ZSLCriterion

from ._release import (
    ATOL,
    StubBackbone,
    assert_close,
    load_fixture,
    release_lambda,
    release_net,
    to_release_names,
)

# ---------------------------------------------------------------------------------------------
# the small fixtures (D=32, D=64): forward, losses, gradients, iterations

# gradients that are pure rounding noise in the published code (constant under the softmax, or
# of the identity grouping unit): compared with an absolute tolerance only
NOISE = ("group.", "KeyW")


def forward_with_intermediates(net, x, seen_att):
    captured = {}
    net.backbone.register_forward_hook(lambda m, i, o: captured.update(stages=o))
    for level, module in enumerate(net.granularity):
        module.register_forward_hook(lambda m, i, o, level=level: captured.update({level: o[0]}))
    net.refinement.register_forward_hook(lambda m, i, o: captured.update(borrowed=o))
    out = net(x, seen_att)
    return out, captured


def check_forward(release: dict, mode: str) -> None:
    """Stage maps, level maps, both SCAM outputs, every level's scores and their sum."""
    net = release_net(release)
    net.train(mode == "train")
    inputs, inter, fwd = release["inputs"], release["intermediates"], release["forward"]
    with torch.no_grad():
        out, got = forward_with_intermediates(net, inputs["x"], inputs["seen_att"])
    for name, tensor in zip(("c3", "c4", "c5"), got["stages"]):
        assert_close(tensor, inter[name], f"backbone stage {name}")
    for level, name in enumerate(("s3", "s4", "s5")):
        assert_close(got[level], inter[name], f"level map {name}")
    assert_close(got["borrowed"][0], inter["lateral1"], "SCAM of the fine level")
    assert_close(got["borrowed"][1], inter["lateral2"], "SCAM of the middle level")
    assert got["borrowed"][2] is None
    for level in range(3):
        assert_close(out.attribute_scores[level], fwd[f"v2s{level + 1}"], f"v2s{level + 1}")
        assert_close(out.class_scores[level], fwd[f"score{level + 1}"], f"score{level + 1}")
    assert_close(out.logits, fwd["score"], "summed score")


def check_losses_and_gradients(release: dict, compiled: bool = False) -> None:
    """Every level's loss and the gradient of every parameter for the summed losses; with
    ``compiled``, through heads compiled as by ``train.compile=regions``."""
    net = release_net(release)
    if compiled:
        assert compile_heads(net) == 8
    inputs = release["inputs"]
    criterion = ZSLCriterion(inputs["seen_att"], release_lambda())
    losses = criterion(net(inputs["x"], inputs["seen_att"]), inputs["labels"])
    for level, loss in enumerate(losses):
        assert_close(loss, release["fused_losses"][f"loss{level + 1}"], f"loss{level + 1}")
    sum(losses).backward()
    names = to_release_names(release["fused_grads"])
    for key, param in net.named_parameters():
        want = release["fused_grads"][names[key]]
        assert param.grad is not None, key
        atol = 1e-12 if any(n in names[key] for n in NOISE) else ATOL
        assert_close(param.grad, want, f"gradient of {names[key]}", atol)


def runner_optimizer(net, lr: float) -> torch.optim.Optimizer:
    """The optimizer ``mgmrn train --config cub-release`` builds, at the fixture's learning rate
    (0.05: larger than the recipe's, so that two iterations move the weights visibly)."""
    cfg = load_config("cub-release")
    cfg.train.lr = lr
    optimizer, _ = runner.build_optimizer(net, cfg, torch.device("cpu"))
    return optimizer


def run_two_iterations(release, schedule: str, finetune: bool = True):
    """train_one_epoch over the fixture's two batches, one batch per call: per-batch results."""
    cfg, inputs = release["config"], release["inputs"]
    net = release_net(release)
    net.backbone.requires_grad_(finetune)
    optimizer = runner_optimizer(net, cfg["lr"])
    assert (optimizer.defaults["momentum"], optimizer.defaults["weight_decay"]) == (
        cfg["momentum"], cfg["weight_decay"])
    names = to_release_names(release["state_dict"])
    stepped = []
    optimizer.register_step_post_hook(lambda opt, *_: stepped.append(sorted(
        names[k] for k, p in net.named_parameters() if p.grad is not None)))
    criterion = ZSLCriterion(inputs["seen_att"], release_lambda())
    losses, states = [], []
    for i, (x, y) in enumerate([(inputs["x"], inputs["labels"]), (inputs["x2"], inputs["labels2"])]):
        stats = train_one_epoch(net, [(x, y)], optimizer, criterion, torch.device("cpu"), i,
                                schedule, show_progress=False)
        losses.append([stats[f"loss_{level}"] for level in net.levels])
        states.append({names[k]: v.detach().clone() for k, v in net.named_parameters()})
    return torch.tensor(losses, dtype=torch.float64), states, stepped


def assert_state(got: dict, want: dict, what: str, atol: float = ATOL) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert_close(got[name], want[name], f"{what}: {name}", atol)


def check_alternating(release: dict) -> None:
    """Two iterations of the published alternating schedule through ``train_one_epoch``."""
    alt = release["alternating"]
    losses, states, stepped = run_two_iterations(release, "alternating")
    assert_close(losses, alt["losses"], "alternating losses [iteration, round]")
    torch.testing.assert_close(alt["Lcls"] + 0.1 * alt["Lreg"], alt["losses"], rtol=0, atol=1e-12)
    assert_state(states[0], alt["state_dict_iter1"], "after iteration 1")
    assert_state(states[1], alt["state_dict_iter2"], "after iteration 2")
    # every round steps exactly the parameters the published round steps
    want = [sorted(names) for iteration in alt["updated_params"] for names in iteration]
    assert stepped == want


# ---------------------------------------------------------------------------------------------
# the full-size fixture: initial weights, optimizer, schedule, recipes

PRESETS = {"CUB": ("cub-release", 312), "SUN": ("sun-release", 102), "AWA2": ("awa2-release", 85)}
PLAIN = {"CUB": "cub", "SUN": "sun", "AWA2": "awa2"}
WORD_DIM = 300  # the published word vectors
SIGMAS = 5  # tolerance, in standard errors


class StageStub(nn.Module):
    """Stands in for ResNet-101 when only the heads are built: its stage channels, no weights."""

    channels = [512, 1024, 2048]

    def forward(self, x):  # pragma: no cover - never run
        raise NotImplementedError


def preset_config(dataset: str):
    cfg = load_config(PRESETS[dataset][0])
    cfg.model.pretrained = False  # no download: the heads are what is compared
    return cfg


def check_initial_weights(full: dict, dataset: str) -> None:
    """Every published head parameter of the preset, built at full size by mgmrn's own
    ``build_model``: shape, mean and std within 5 standard errors of the published draw, constants
    exactly, and for uniform initialisations the bounds."""
    cfg = preset_config(dataset)
    num_attributes = PRESETS[dataset][1]
    assert (cfg.model.dim, cfg.model.attn_dim) == (2048, 1024)
    torch.manual_seed(214)
    net = build_model(cfg.model, torch.randn(num_attributes, WORD_DIM), backbone=StageStub())
    params = dict(net.named_parameters())
    published = full["init"][dataset]
    assert sorted(published) == sorted(published_names())
    problems = []
    for name, stats in published.items():
        key = release_key(name)
        value = params.pop(key).detach()
        numel, std = stats["numel"], stats["std"]
        if value.numel() != numel or value.reshape(stats["shape"]).shape != tuple(stats["shape"]):
            problems.append(f"{name} -> {key}: shape {tuple(value.shape)} != {stats['shape']}")
            continue
        if std == 0.0:  # constants: GroupNorm's affine weight 1 and bias 0, smoothing 0
            if not (value == stats["min"]).all():
                problems.append(f"{name} -> {key}: not the constant {stats['min']}")
            continue
        error = std / math.sqrt(2 * numel)
        got_std, got_mean = (v.item() for v in torch.std_mean(value))
        if abs(got_std - std) > SIGMAS * error:
            problems.append(f"{name} -> {key}: std {got_std:.5g} vs published {std:.5g} "
                            f"({abs(got_std - std) / error:.1f} standard errors)")
        if abs(got_mean - stats["mean"]) > SIGMAS * std / math.sqrt(numel):
            problems.append(f"{name} -> {key}: mean {got_mean:.3g} vs published {stats['mean']:.3g}")
        bound = max(-stats["min"], stats["max"])
        if abs(bound / (std * math.sqrt(3)) - 1) < 0.02:  # uniform: its sample max is its bound
            slack = 10 / numel  # the gap of a uniform sample's max below its bound is ~1/numel
            low, high = value.aminmax()
            got = max(-low.item(), high.item())
            if not bound * (1 - slack) <= got <= bound * (1 + slack):
                problems.append(f"{name} -> {key}: uniform bound {got:.5g} vs published {bound:.5g}")
    assert not problems, "\n".join(problems)
    # and the mapping covers every head parameter
    assert sorted(params) == [], f"head parameters the published model does not have: {params}"


HYPER = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")


def check_optimizer(full: dict, dataset: str) -> None:
    """The optimizer `mgmrn train` builds for the preset: the published type, settings and
    parameters (every head parameter, through the name mapping, and the whole backbone)."""
    cfg = preset_config(dataset)
    with torch.device("meta"):  # names and shapes are enough: nothing is computed
        net = build_model(cfg.model, torch.zeros(PRESETS[dataset][1], WORD_DIM))
    optimizer, _ = runner.build_optimizer(net, cfg, torch.device("cpu"))
    published = full["optimizer"]
    assert type(optimizer).__name__ == published["type"] == "SGD"
    assert len(optimizer.param_groups) == len(published["groups"]) == 1
    group, want = optimizer.param_groups[0], published["groups"][0]["hyper"]
    want = {**want, "lr": full["recipes"][dataset]["lr"]}  # recorded for CUB; each recipe's own
    for key in HYPER:
        assert group[key] == want[key], f"{dataset}: {key} {group[key]} != published {want[key]}"
    names = {id(p): n for n, p in net.named_parameters()}
    stepped = [names[id(p)] for p in group["params"]]
    heads = sorted(release_key(n, "backbone.body.") for n in published["groups"][0]["params"])
    backbone = sorted(n for n in names.values() if n.startswith("backbone."))
    assert len(stepped) == len(set(stepped))
    assert sorted(n for n in stepped if not n.startswith("backbone.")) == heads
    assert sorted(n for n in stepped if n.startswith("backbone.")) == backbone  # fine-tuned
    assert full["recipes"][dataset]["finetune_backbone"] and backbone


def runner_schedule(cfg) -> list[float]:
    """The learning rate of every epoch, as `mgmrn train`'s loop sets it (one step per epoch)."""
    weight = nn.Parameter(torch.zeros(1))
    optimizer, scheduler = runner.build_optimizer(nn.ParameterList([weight]), cfg, torch.device("cpu"))
    lrs = []
    for _ in range(cfg.train.epochs):
        runner.scheduler_epoch_start(scheduler, cfg)
        lrs.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.zeros(1)
        optimizer.step()
        runner.scheduler_epoch_end(scheduler, cfg)
    return lrs


def check_schedule(full: dict, dataset: str) -> None:
    want = full["schedule"][dataset]
    got = runner_schedule(preset_config(dataset))
    assert len(got) == len(want) == 30
    for epoch, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=1e-12), f"{dataset} epoch {epoch}: lr {g} != {w}"


def recipe_values(cfg) -> dict:
    """The published recipe's keys, read from an mgmrn config."""
    return dict(seed=cfg.seed, scale=cfg.model.tau, lambda_reg=cfg.train.lam,
                image_size=cfg.data.image_size, ways=cfg.data.ways, shots=cfg.data.shots,
                semantic=cfg.data.semantic, batches_per_epoch=cfg.train.batches_per_epoch,
                epochs=cfg.train.epochs, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                momentum=cfg.train.momentum, lr_gamma=cfg.train.lr_gamma,
                lr_step=cfg.train.lr_step, test_batch=cfg.data.test_batch_size,
                finetune_backbone=cfg.model.finetune)


def check_recipes(full: dict) -> None:
    """Every published value in the matching ``*-release`` recipe, and in the plain recipe,
    which claims the published values for all but the switches."""
    for dataset, (name, _) in PRESETS.items():
        published = full["recipes"][dataset]
        # fixed in mgmrn's loss and transforms: CE weight 1, MSE of normalised vectors,
        # random crop of the resized image in training
        assert (published["lambda_cls"], published["reg_type"], published["reg_norm"],
                published["train_aug"]) == (1.0, "MSE", True, "resize_random_crop")
        for recipe in (name, PLAIN[dataset]):
            cfg = load_config(recipe)
            got = recipe_values(cfg)
            differing = {k: (v, published[k]) for k, v in got.items() if v != published[k]}
            assert not differing, f"{recipe}: (ours, published) {differing}"
            assert cfg.train.optimizer == "sgd", recipe
        release = load_config(name)
        assert release.data.test_resize == RELEASE_SWITCHES["data.test_resize"] == "crop"
        assert published["test_aug"] == "resize_crop"


# ---------------------------------------------------------------------------------------------
# convert-release: published checkpoints and the recipes that read them


def write_dataset(root: Path, release) -> None:
    """A custom-format set with the fixture's 12 attributes, 16-d word vectors, 6 + 4 classes."""
    att = torch.rand(10, 12, generator=torch.Generator().manual_seed(0))
    header = "class,split," + ",".join(f"a{i}" for i in range(12))
    rows = [f"c{c},{'seen' if c < 6 else 'unseen'}," + ",".join(f"{v:.3f}" for v in att[c].tolist())
            for c in range(10)]
    root.mkdir()
    (root / "classes.csv").write_text("\n".join([header, *rows]) + "\n")
    np.save(root / "attribute_vectors.npy", release["inputs"]["w2v"].float().numpy())
    rng = np.random.default_rng(0)
    for c in range(10):
        folder = root / "images" / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def write_recipe(path: Path, root: Path) -> None:
    """A ``demo-release`` recipe for the set of :func:`write_dataset` whose backbone is the
    small ResNet of :func:`release_checkpoint`."""
    path.write_text(f"""base: demo-release
model:
  backbone: resnet18
  backbone_args: {{layers: [1, 1, 1, 1], channels: [8, 16, 24, 32]}}
  dim: 32
  attn_dim: 16
  num_parts: 5
data:
  name: custom
  root: {root}
  image_size: 64
  test_batch_size: 8
""")


def release_checkpoint(path: Path, release, drop=(), extra=None, reshape=None) -> dict:
    """A published-format checkpoint: the fixture's heads and a small ResNet under ``backbone.``
    with torchvision's names; ``drop``, ``extra`` and ``reshape`` spoil it. Returns its state."""
    torch.manual_seed(1)
    resnet = timm.create_model("resnet18", layers=[1, 1, 1, 1], channels=(8, 16, 24, 32))
    state = {k: v.float() for k, v in release["state_dict"].items() if not k.startswith("backbone.")}
    state.update({f"backbone.{k}": v for k, v in resnet.state_dict().items()})
    for key in drop:
        del state[key]
    state.update(extra or {})
    for key, shape in (reshape or {}).items():
        state[key] = torch.zeros(shape)
    torch.save({"model": state}, path)
    return state


def write_stub_recipe(path: Path, root: Path, config: dict) -> None:
    path.write_text(f"""base: demo-release
model:
  dim: {config["D"]}
  attn_dim: {config["M"]}
  num_parts: {config["K"]}
  tau: {config["scale"]}
data:
  name: custom
  root: {root}
""")


def check_convert_release_scores(tmp_path: Path, monkeypatch, size: str, layout: str,
                                 capsys) -> None:
    """`mgmrn convert-release` of the fixture's published weights (its stub backbone under
    ``backbone.``, as the published train.py saves a model) -> a checkpoint that `mgmrn.load`
    reads and that computes the published scores to 1e-9 in float64. ``layout``: ``published``
    (``{"model": state}``), ``module-prefixed`` (as ``DataParallel`` saves it) or ``bare``."""
    release = load_fixture(size)
    config = release["config"]
    # the network of the recipe gets the fixture's stub backbone in place of timm's
    monkeypatch.setattr(mgmrn.models, "Backbone",
                        lambda *args, **kwargs: StubBackbone(config["stage_channels"]))
    write_dataset(tmp_path / "data", release)
    write_stub_recipe(tmp_path / "recipe.yaml", tmp_path / "data", config)
    state = {k: v.float() for k, v in release["state_dict"].items()}  # float32, as saved
    if layout == "module-prefixed":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state if layout == "bare" else {"model": state}, tmp_path / "release.pth")
    out = tmp_path / "converted.pt"
    assert main(["convert-release", str(tmp_path / "release.pth"), "--config",
                 str(tmp_path / "recipe.yaml"), "--out", str(out)]) == 0, capsys.readouterr().err
    # the fixture's weights are float32 values: float32 storage loses nothing
    net = mgmrn.load(out).model.double()
    net.train(False)
    inputs, forward = release["inputs"], release["forward"]
    with torch.no_grad():
        scores = net(inputs["x"], inputs["seen_att"])
    for level in range(3):
        assert_close(scores.class_scores[level], forward[f"score{level + 1}"], f"score{level + 1}")
    assert_close(scores.logits, forward["score"], "summed score")

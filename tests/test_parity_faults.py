"""The parity suite can fail: each fault below, made on its own, breaks the check aimed at it.

A fault is one small change to mgmrn's code or recipes of the kind a reviewer might make by
mistake, applied by monkeypatching (undone after each test). Each test runs the parity check the
fault targets (the same function the parity tests run) and asserts that it fails; where a check
would pass on the D=32 fixture, that is asserted too, to show why the D=64 fixture exists.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch import nn

import mgmrn.commands.convert
import mgmrn.config
from mgmrn.models import decoder, granularity, refinement
from mgmrn.training import runner

from . import _parity_checks as checks
from ._release import load_fixture


@pytest.fixture(scope="module")
def full():
    return load_fixture("full")


def fails(check, *args, **kwargs) -> str:
    """Run a parity check that must fail; its message."""
    with pytest.raises(AssertionError) as failure:
        check(*args, **kwargs)
    return str(failure.value)


def forward(size: str) -> None:
    checks.check_forward(load_fixture(size), "eval")


def alternating(size: str = "d32") -> None:
    checks.check_alternating(load_fixture(size))


def patch_sgd(monkeypatch, **fault) -> None:
    """The runner's SGD built with ``fault`` in place of some of its settings."""
    sgd = torch.optim.SGD

    def faulty(params, **settings):
        return sgd(params, **{**settings, **fault})

    monkeypatch.setattr(torch.optim, "SGD", faulty)


@pytest.mark.parametrize("fault", [dict(nesterov=True), dict(momentum=0.8),
                                   dict(dampening=0.1), dict(weight_decay=1e-4)],
                         ids=["nesterov", "momentum", "dampening", "weight-decay"])
def test_fault_sgd_settings_of_the_runner(monkeypatch, full, fault):
    patch_sgd(monkeypatch, **fault)
    key = next(iter(fault))
    assert f"{key} " in fails(checks.check_optimizer, full, "CUB")
    fails(alternating)


def test_fault_groupnorm_one_channel_per_group(monkeypatch):
    monkeypatch.setattr(granularity, "map_norm",
                        lambda kind, channels: granularity.GroupNorm(channels, channels))
    forward("d32")  # at D=32, GroupNorm(32, 32) is one channel per group too: not seen there
    assert "level map s3" in fails(forward, "d64")


def test_fault_groupnorm_epsilon(monkeypatch):
    monkeypatch.setattr(granularity, "map_norm", lambda kind, channels: granularity.GroupNorm(
        math.gcd(32, channels), channels, eps=1e-6))
    assert "level map" in fails(forward, "d32")


def test_fault_scam_projection_initialisation(monkeypatch, full):
    monkeypatch.setattr(refinement, "c2_xavier_fill",
                        lambda conv: nn.init.xavier_uniform_(conv.weight))
    message = fails(checks.check_initial_weights, full, "CUB")
    # the fine level's 4096 -> 2048 projection; for the middle level's square 2048 -> 2048 one,
    # xavier_uniform and kaiming_uniform(a=1) draw from the same uniform distribution
    assert "lateral_conv1.conv.weight" in message and "lateral_conv2" not in message


def test_fault_part_centres_drawn_as_absolute_values(monkeypatch, full):
    init = granularity.RegionGrouping.__init__

    def absolute(self, channels, num_parts=5, published_init=False):
        init(self, channels, num_parts, published_init=False)

    monkeypatch.setattr(granularity.RegionGrouping, "__init__", absolute)
    assert "s5.group.weight" in fails(checks.check_initial_weights, full, "AWA2")


def test_fault_attention_scaled(monkeypatch):
    init = decoder.AttributeDecoder.__init__

    def scaled(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.scale = 1 / math.sqrt(self.query.out_features)

    monkeypatch.setattr(decoder.AttributeDecoder, "__init__", scaled)
    assert "v2s1" in fails(forward, "d32")


def test_fault_halving_by_2x2_mean(monkeypatch):
    monkeypatch.setattr(granularity, "_halve_align_corners", granularity._halve)
    assert "level map s3" in fails(forward, "d32")


def test_fault_learning_rate_stepped_at_the_end_of_each_epoch(monkeypatch, full):
    monkeypatch.setattr(runner, "scheduler_epoch_start", lambda scheduler, cfg, resumed=False: None)
    monkeypatch.setattr(runner, "scheduler_epoch_end", lambda scheduler, cfg: scheduler.step())
    for dataset in ("CUB", "SUN", "AWA2"):
        assert "epoch 9" in fails(checks.check_schedule, full, dataset)


def patch_recipe(monkeypatch, tmp_path, name: str, old: str, new: str) -> None:
    """The bundled recipes, with ``old`` replaced by ``new`` in ``name``.yaml."""
    folder = tmp_path / "configs"
    shutil.copytree(mgmrn.config.CONFIG_DIR, folder)
    path = folder / f"{name}.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    monkeypatch.setattr(mgmrn.config, "CONFIG_DIR", folder)


def test_fault_learning_rate_step_moved_in_the_recipe(monkeypatch, tmp_path, full):
    patch_recipe(monkeypatch, tmp_path, "cub", "lr_step: 10", "lr_step: 9")
    assert "epoch 8" in fails(checks.check_schedule, full, "CUB")
    assert "lr_step" in fails(checks.check_recipes, full)


def test_fault_tau_changed_in_cub_yaml(monkeypatch, tmp_path, full):
    patch_recipe(monkeypatch, tmp_path, "cub", "tau: 20", "tau: 25")
    assert "scale" in fails(checks.check_recipes, full)
    assert "score1" in fails(forward, "d32")  # the small fixtures were made at CUB's scale


def test_fault_lambda_changed_in_cub_yaml(monkeypatch, tmp_path, full):
    patch_recipe(monkeypatch, tmp_path, "cub", "lam: 0.1", "lam: 0.2")
    assert "lambda_reg" in fails(checks.check_recipes, full)
    assert "loss1" in fails(checks.check_losses_and_gradients, load_fixture("d32"))


@pytest.mark.parametrize("recipe, old, new", [("sun", "tau: 25", "tau: 20"),
                                              ("sun", "lam: 1.0", "lam: 0.1"),
                                              ("awa2", "seed: 1514", "seed: 214"),
                                              ("awa2", "ways: 16", "ways: 8")])
def test_fault_published_value_changed_in_sun_or_awa2_yaml(monkeypatch, tmp_path, full, recipe,
                                                           old, new):
    patch_recipe(monkeypatch, tmp_path, recipe, old, new)
    assert f"{recipe}-release" in fails(checks.check_recipes, full)


def test_fault_module_prefix_kept_by_convert_release(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(mgmrn.commands.convert, "strip_data_parallel", lambda state: state)
    message = fails(checks.check_convert_release_scores, tmp_path, monkeypatch, "d32",
                    "module-prefixed", capsys)
    assert "unexpected: module." in message

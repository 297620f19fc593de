"""The parity suite can fail: each fault below, made on its own, breaks the check aimed at it.

A fault is one small change to mgmrn's code or recipes of the kind a reviewer might make by
mistake, applied by monkeypatching (undone after each test): a function replaced, a recipe
edited, or a function compiled again from its own source with a line changed
(:func:`edit_source`); a few are changes inside PyTorch, which the parity checks must not take
on trust. Each test runs the parity check the fault targets (the same function the parity tests
run) and asserts that it fails; where another check passes under the fault, that is asserted
too, to show why the failing one exists (the D=64 fixture, the runner's own loop, the folding
of attention).
"""

from __future__ import annotations

import inspect
import math
import shutil
import textwrap
import weakref

import pytest
import torch
from torch import nn

import mgmrn.commands.convert
import mgmrn.config
from mgmrn.evaluation import protocols
from mgmrn.inference import evaluate, scoring
from mgmrn.models import backbone, backbone_spec, decoder, granularity, refinement, release
from mgmrn.models import mgmrn as network
from mgmrn.training import runner

from . import _parity_checks as checks
from . import _parity_paths as paths
from ._release import load_fixture, release_net


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


def edit_source(monkeypatch, owner, name: str, *edits: tuple[str, str]):
    """``owner.name`` (a module's function or a class's method) compiled again from its own
    source with each ``(old, new)`` edit made, as a slip in that file would leave it, and put in
    place of the original for this test. Returns the edited function, for modules that imported
    the original by name."""
    function = getattr(owner, name)
    source = textwrap.dedent(inspect.getsource(function))
    for old, new in edits:
        assert source.count(old) == 1, f"{name}: {old!r} is not once in its source"
        source = source.replace(old, new)
    # compiled as its module is, with postponed annotations (``annotations`` is the feature that
    # this file's own ``from __future__ import annotations`` binds)
    code = compile(source, inspect.getsourcefile(function), "exec",
                   flags=annotations.compiler_flag, dont_inherit=True)
    namespace: dict = {}
    exec(code, function.__globals__, namespace)
    edited = namespace[function.__name__]
    monkeypatch.setattr(owner, name, edited)
    return edited


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


# ---------------------------------------------------------------------------------------------
# the code users run next to the network: the training loop, evaluation, the backbone's batch
# norms and weights, convert-release, the folding of attention


def test_fault_learning_rate_step_moved_after_the_epoch_in_the_training_loop(monkeypatch, tmp_path,
                                                                             full):
    start = "            scheduler_epoch_start(scheduler, cfg, resumed=bool(progress.batches))\n"
    end = "            scheduler_epoch_end(scheduler, cfg)\n"
    edit_source(monkeypatch, runner, "_train", (start, ""), (end, end + start))
    checks.check_schedule(full, "CUB")  # a loop written in the test does not see it
    assert "CUB epoch 9" in fails(paths.check_training_loop, full, "CUB", tmp_path, monkeypatch)


def test_fault_resumed_epoch_steps_the_learning_rate_again(monkeypatch, tmp_path, full):
    edit_source(monkeypatch, runner, "_train",
                ("resumed=bool(progress.batches)", "resumed=False"))
    paths.check_training_loop(full, "CUB", tmp_path / "whole", monkeypatch, stop_in=None)
    message = fails(paths.check_training_loop, full, "CUB", tmp_path / "resumed", monkeypatch)
    assert "CUB epoch 8" in message


def evaluation() -> None:
    paths.check_evaluation(load_fixture("d32"), "cub-release")


def test_fault_ausuc_order_not_passed_by_evaluate_model(monkeypatch):
    edit_source(monkeypatch, evaluate, "evaluate_model",
                (", ausuc_order=cfg.eval.ausuc_order", ""))
    message = fails(evaluation)
    assert "AUSUC" in message and "'H'" not in message


def test_fault_evaluation_without_eval_mode(monkeypatch):
    edit_source(monkeypatch, scoring.Inference, "__init__",
                ("self.model = model.eval()", "self.model = model"))
    assert "CZSL" in fails(evaluation)


def test_fault_fixed_gamma_stacking_sign(monkeypatch):
    edited = edit_source(monkeypatch, protocols, "zsl_figures",
                         ("gamma=fixed_gamma)", "gamma=-fixed_gamma)"))
    monkeypatch.setattr(evaluate, "zsl_figures", edited)
    message = fails(evaluation)
    assert "H at the fixed gamma" in message and "'H'" not in message


def test_fault_gamma_step_changed(monkeypatch):
    init = mgmrn.config.EvalConfig.__init__
    defaults = tuple(0.02 if d == 0.01 else d for d in init.__defaults__)
    monkeypatch.setattr(init, "__defaults__", defaults)
    assert mgmrn.config.load_config("cub-release").eval.gamma_step == 0.02
    assert "AUSUC" in fails(evaluation)


def test_fault_batch_norm_momentum_in_the_backbone(monkeypatch, full):
    init = backbone.Backbone.__init__

    def slow_statistics(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for module in self.body.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.01

    monkeypatch.setattr(backbone.Backbone, "__init__", slow_statistics)
    assert ".running_mean after one pass" in fails(paths.check_resnet101_running_statistics, full)


def test_fault_default_weights_tag(monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(backbone_spec, "DEFAULT_PRETRAINED_TAG", "tv2_in1k")
        backbone_spec._describe.cache_clear()  # resolved names are cached
        assert "resolves to resnet101.tv2_in1k" in fails(paths.check_default_weights)
    backbone_spec._describe.cache_clear()


def test_fault_mapped_but_absent_entries_dropped_by_convert_release(monkeypatch, tmp_path, capsys):
    edit_source(monkeypatch, release, "convert_release_state_dict",
                ("            unexpected.append(name)\n            continue\n"
                 "        if value.numel()",
                 "            continue\n        if value.numel()"))
    small = load_fixture("d32")
    checks.write_dataset(tmp_path / "data", small)
    checks.write_recipe(tmp_path / "recipe.yaml", tmp_path / "data")
    message = fails(paths.check_convert_release_refuses_backbone_entries, tmp_path, small, capsys)
    assert "exit status 0" in message


def test_fault_borrowed_tokens_before_the_own_map(monkeypatch):
    edit_source(monkeypatch, network.MgMRN, "forward", (
        "parts = [tokens(level_map)] + ([tokens(extra)] if extra is not None else [])",
        "parts = ([tokens(extra)] if extra is not None else []) + [tokens(level_map)]"))
    forward("d32")  # attention is blind to the order of its tokens: the scores are the same
    small = load_fixture("d32")
    message = fails(paths.check_attention_folding, release_net(small).eval(),
                    small["inputs"]["x"][:1], small["inputs"]["seen_att"])
    assert "fine level, own cell (0, 0)" in message


# ---------------------------------------------------------------------------------------------
# faults inside PyTorch: the checks compare with published numbers or behaviour written out,
# not only with PyTorch's own modules, which such a fault would move too


def test_fault_in_pytorch_batch_norm_momentum(monkeypatch, full):
    batch_norm = torch.nn.functional.batch_norm

    def slow_statistics(input, running_mean, running_var, weight=None, bias=None,
                        training=False, momentum=0.1, eps=1e-5):
        return batch_norm(input, running_mean, running_var, weight, bias, training, 0.01, eps)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", slow_statistics)
    assert ".running_mean after one pass" in fails(paths.check_resnet101_running_statistics, full)


def test_fault_in_pytorch_module_eval_does_nothing(monkeypatch):
    monkeypatch.setattr(nn.Module, "eval", lambda self: self)
    assert "CZSL" in fails(evaluation)


def test_fault_in_pytorch_lr_scheduler_skips_its_first_step(monkeypatch, tmp_path, full):
    step = torch.optim.lr_scheduler.StepLR.step
    calls = weakref.WeakKeyDictionary()

    def skipping(self, *args, **kwargs):
        calls[self] = calls.get(self, 0) + 1
        if calls[self] == 2:  # the first after the one its constructor takes
            return None
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler.StepLR, "step", skipping)
    assert "CUB epoch 9" in fails(checks.check_schedule, full, "CUB")
    assert "CUB epoch 9" in fails(paths.check_training_loop, full, "CUB", tmp_path, monkeypatch)

"""Release parity through the code users run: `mgmrn train`'s loop, its evaluation, ResNet-101's
batch norms and weights, the `--explain` folding of attention, convert-release's refusals.

The published numbers (``../shared/parity/release_full.pt``'s schedule and ResNet-101, the small
fixtures' evaluation figures; see ``../shared/parity/README.md``) are reproduced through the
functions a run calls, not through re-implementations of them: the checks are in
:mod:`tests.parity._parity_paths`, and ``tests/parity/test_parity_faults.py`` shows each failing under faults.
"""

from __future__ import annotations

import pytest

from ._parity_checks import PRESETS, write_dataset, write_recipe
from ._parity_paths import (
    check_attention_folding,
    check_convert_release_refuses_backbone_entries,
    check_default_weights,
    check_evaluation,
    check_resnet101_running_statistics,
    check_training_loop,
    plain_net,
)
from ._release import load_fixture, release_net


@pytest.fixture(scope="module")
def full():
    return load_fixture("full")


@pytest.mark.parametrize("dataset", PRESETS)
def test_parity_training_loop_steps_at_the_published_learning_rates(full, dataset, tmp_path,
                                                                    monkeypatch):
    """`mgmrn train`'s own loop, stopped by SIGTERM in epoch 9 after its first batch and resumed:
    every optimizer step at the published rate of its epoch, none twice."""
    check_training_loop(full, dataset, tmp_path, monkeypatch, stop_in=(8, 0))


@pytest.mark.parametrize("recipe", ["cub-release", "sun-release", "awa2-release"])
def test_parity_evaluation_figures_through_evaluate_model(recipe):
    check_evaluation(load_fixture("d32"), recipe)


def test_parity_resnet101_running_statistics_after_a_train_mode_pass(full):
    check_resnet101_running_statistics(full)


def test_parity_recipes_take_torchvisions_resnet101_weights():
    check_default_weights()


@pytest.mark.parametrize("grouping", ["published", "regions"])
def test_parity_attention_folds_onto_the_cell_of_its_token(grouping):
    release = load_fixture("d32")
    net = release_net(release).eval() if grouping == "published" else plain_net(release)
    inputs = release["inputs"]
    check_attention_folding(net, inputs["x"][:1], inputs["seen_att"])


def test_parity_convert_release_refuses_backbone_entries_that_do_not_fit(tmp_path, capsys):
    release = load_fixture("d32")
    write_dataset(tmp_path / "data", release)
    write_recipe(tmp_path / "recipe.yaml", tmp_path / "data")
    check_convert_release_refuses_backbone_entries(tmp_path, release, capsys)

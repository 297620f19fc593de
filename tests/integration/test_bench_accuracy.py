"""benchmarks/accuracy.py: the runs it makes, the validation-gamma protocol, and its table."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from mgmrn.cli import main as mgmrn_main

from ..helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/accuracy.py")


def test_each_recipe_is_the_command_a_user_would_type(bench, tmp_path):
    cell = bench.Cell("parts", "baseline", "val", 2)
    cmd = cell.command(tmp_path, ["train.epochs=1"])
    assert cmd[1:6] == ["-m", "mgmrn", "train", "--config", "parts"]
    assert {"seed=2", "data.split=val", "model.name=baseline", "train.epochs=1",
            f"output_dir={tmp_path / 'parts' / 'baseline-val-seed2'}"} <= set(cmd)
    release = bench.Cell("demo", "release", "trainval", 0).command(tmp_path, [])
    assert release[5] == "demo-release" and "model.name=baseline" not in release


def test_summaries_give_the_mean_and_range_and_say_when_seeds_are_missing(bench):
    assert bench.summarise([80.0, 90.0, 85.0]) == "85.0 (80.0-90.0)"
    assert bench.summarise([70.25]) == "70.2"
    assert bench.summarise([60.0, None, 70.0]) == "65.0 (60.0-70.0) [2 seeds]"
    assert bench.summarise([None, None]) == "-"


def _in_process(job, command):
    cmd = command.line()
    assert cmd[:3] == [sys.executable, "-m", "mgmrn"]
    command.log.parent.mkdir(parents=True, exist_ok=True)
    return mgmrn_main(cmd[3:])


def test_runs_apply_the_validation_gamma_to_the_test_split_and_tabulate(bench, tmp_path,
                                                                        monkeypatch, capsys):
    monkeypatch.setattr(bench.launch.CommandJob, "execute", _in_process)
    tiny = [f"data.root={tmp_path / 'data'}", "data.demo.image_size=32", "data.image_size=32",
            "data.demo.num_shapes=3", "data.demo.num_colors=3", "data.demo.num_patterns=2",
            "data.demo.num_unseen=4", "data.demo.images_per_class=6", "data.ways=4",
            "data.shots=2", "data.num_workers=0", "data.test_batch_size=16", "model.dim=32",
            "model.attn_dim=16", "model.num_parts=2", "train.epochs=1",
            "train.batches_per_epoch=2", "data.verify_images=false"]
    root = tmp_path / "acc"
    args = ["--sets", "demo", "--recipes", "default", "--seeds", "0", "--root", str(root),
            # in this process: submitit's debug executor, or the fallback without submitit
            "--launcher", "debug" if importlib.util.find_spec("submitit") else "local",
            *(f"--set={o}" for o in tiny)]
    assert bench.main(args) == 0
    trainval = root / "demo" / "default-trainval-seed0"
    val = json.loads((root / "demo" / "default-val-seed0" / "results.json").read_text())
    assert val["split"] == "val"
    at_val = json.loads((trainval / "valgamma" / "results.json").read_text())
    assert at_val["fixed_gamma"]["gamma"] == pytest.approx(val["chosen_on_validation"]["gamma"])
    results = json.loads((trainval / "results.json").read_text())
    assert at_val["czsl_acc"] == pytest.approx(results["czsl_acc"])  # the same checkpoint
    table = json.loads((root / "table.json").read_text())
    columns = table["runs"]["demo"]["default"]
    assert columns["CZSL"] == [pytest.approx(results["czsl_acc"])]
    assert columns["H (val gamma)"] == [pytest.approx(at_val["fixed_gamma"]["h"])]
    printed = capsys.readouterr().out
    assert "| demo | default |" in printed and "commit " in printed
    assert (root / "table.md").read_text().startswith("commit ")
    # a second call redoes nothing: every run and evaluation is found finished
    monkeypatch.setattr(bench.launch.CommandJob, "execute", lambda *a: pytest.fail("ran again"))
    assert bench.main(args) == 0


def test_the_pretrained_and_scratch_rows_fine_tune_or_train_end_to_end(bench, tmp_path):
    pretrained = bench.Cell("parts", "pretrained", "trainval", 1).command(tmp_path, [])
    assert pretrained[5] == "parts-pretrained" and "model.name=baseline" not in pretrained
    baseline = bench.Cell("demo", "pretrained-baseline", "val", 0).command(tmp_path, [])
    assert baseline[5] == "demo-pretrained" and "model.name=baseline" in baseline
    scratch = bench.Cell("parts", "scratch-baseline", "val", 0).command(tmp_path, [])
    assert scratch[5] == "parts" and {"model.finetune=true", "model.name=baseline"} <= set(scratch)
    assert "model.finetune=true" not in bench.Cell("parts", "default", "val", 0).command(tmp_path, [])


def test_the_guard_runs_what_mgmrn_train_runs_by_default(bench, tmp_path):
    from mgmrn.config import DEFAULT_RECIPE

    configs = {bench.Cell("parts", r, "trainval", 0).command(tmp_path, [])[5]
               for r in bench.DEFAULT_RECIPES}
    assert DEFAULT_RECIPE in configs and "parts-pretrained" in configs

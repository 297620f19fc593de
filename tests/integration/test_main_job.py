"""The main job end to end through the command's own entry point, on a tiny demo set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mgmrn.checkpoint import load_checkpoint
from mgmrn.cli import main

from ..helpers import needs_cxx, tiny

KEYS = {"czsl_acc", "gzsl_seen", "gzsl_unseen", "gzsl_h", "ausuc", "gamma", "data"}
DATA_KEYS = {"n_seen_classes", "n_unseen_classes", "n_train", "n_test_seen", "n_test_unseen"}


def test_train_then_eval_through_the_command(tmp_path, capsys):
    assert main(["train", *tiny(tmp_path, "run")]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert KEYS <= results.keys() and DATA_KEYS <= results["data"].keys()
    # 3 shapes x 3 colours x 2 patterns = 18 classes, 4 unseen; 6 images each, 20% seen held out
    assert results["data"]["n_seen_classes"] == 14 and results["data"]["n_unseen_classes"] == 4
    assert results["data"]["n_test_unseen"] == 24
    assert results["data"]["n_train"] + results["data"]["n_test_seen"] == 14 * 6
    for key in ("czsl_acc", "gzsl_seen", "gzsl_unseen", "gzsl_h"):
        assert 0.0 <= results[key] <= 100.0
    assert results["calibration"].endswith("(oracle)")
    # prediction's default gamma travels in the checkpoint, with where it was chosen
    assert load_checkpoint(run / "checkpoints" / "last.pt")["calibration"] == {
        "gamma": results["gamma"], "split": "trainval", "source": "test set (oracle)"}
    # the confused unseen pairs account for the CZSL mistakes (6 test images per unseen class)
    for pair in results["unseen_confusions"]:
        assert pair["true"] != pair["predicted"] and pair["count"] == pair["share"] * 6
        assert {Path(e).parent.name for e in pair["examples"]} == {pair["true"]}
    for name, accuracy in results["czsl_per_class"].items():
        wrong = sum(p["count"] for p in results["unseen_confusions"] if p["true"] == name)
        assert wrong <= round((100 - accuracy) * 6 / 100)
        if len(results["unseen_confusions"]) < 10:  # not cut: every mistake is in a pair
            assert wrong == round((100 - accuracy) * 6 / 100)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    assert (run / "config.yaml").is_file()
    assert "CZSL accuracy" in capsys.readouterr().out

    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--out", str(out),
                 "eval.gamma=0.5"]) == 0
    evaluated = json.loads(out.read_text())
    # evaluation is deterministic: the last checkpoint reproduces the last epoch's figures
    for key in ("czsl_acc", "gzsl_h", "ausuc", "gamma"):
        assert evaluated[key] == pytest.approx(results[key])
    assert evaluated["fixed_gamma"]["gamma"] == 0.5
    assert evaluated["data"] == results["data"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    assert main(["train", *tiny(tmp_path, "straight")]) == 0
    assert main(["train", *tiny(tmp_path, "stopped", "train.epochs=1")]) == 0
    assert main(["train", "--resume", "--resume-changes",
                 *tiny(tmp_path, "stopped", "train.epochs=2")]) == 0
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert resumed["epoch"] == straight["epoch"] == 1
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    lines = (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]


def test_existing_run_is_never_overwritten(tmp_path, capsys):
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1")]) == 0
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1")]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "output_dir" in err
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_auto_resume_restarts_a_run_stopped_before_its_first_checkpoint(tmp_path):
    """A job killed after its first metrics line but before its first last.pt starts again,
    and its metrics log keeps one record per epoch."""
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1")]) == 0
    run = tmp_path / "run"
    first = json.loads((run / "metrics.jsonl").read_text())
    for name in ("checkpoints/last.pt", "results.json"):  # as if killed before they were written
        (run / name).unlink()
    assert main(["train", *tiny(tmp_path, "run", "train.auto_resume=true")]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[0]["loss"] == pytest.approx(first["loss"])  # the same seed, begun again
    # without auto_resume the same folder is still refused, and so is a finished run's
    (run / "checkpoints" / "last.pt").unlink()
    assert main(["train", *tiny(tmp_path, "run")]) == 2
    assert (run / "results.json").exists()
    assert main(["train", *tiny(tmp_path, "run", "train.auto_resume=true")]) == 2
    assert [json.loads(line)["epoch"] for line in
            (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_run_stopped_before_its_first_checkpoint_begins_again_with_resume(tmp_path, capsys):
    """The refusal of a new run names --resume, which begins the run again; temporary files of
    killed writes are removed."""
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1")]) == 0
    run = tmp_path / "run"
    for name in ("checkpoints/last.pt", "results.json"):  # as if killed writing last.pt
        (run / name).unlink()
    (run / "checkpoints" / ".last.pt.x8e2k1.tmp").write_bytes(b"half a checkpoint")
    (run / ".results.json.p0q9r8.tmp").write_text("{")
    capsys.readouterr()
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"mgmrn train: error: run folder '{run}' holds a run stopped before "
                           f"its first checkpoint was complete (metrics.jsonl, best.pt); begin it "
                           f"again with --resume, or choose a new folder with "
                           f"output_dir=<new folder>")
    assert main(["train", "--resume", *tiny(tmp_path, "run", "train.epochs=1")]) == 0
    assert [json.loads(line)["epoch"] for line in
            (run / "metrics.jsonl").read_text().splitlines()] == [0]
    assert not list(run.rglob("*.tmp"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_baseline_is_an_option_of_the_same_command(tmp_path):
    assert main(["train", *tiny(tmp_path, "base", "model.name=baseline", "train.epochs=1")]) == 0
    results = json.loads((tmp_path / "base" / "results.json").read_text())
    assert results["model"] == "baseline" and KEYS <= results.keys()


def test_validation_split_reports_its_gamma_as_such(tmp_path):
    assert main(["train", *tiny(tmp_path, "val", "data.split=val", "train.epochs=1")]) == 0
    results = json.loads((tmp_path / "val" / "results.json").read_text())
    assert results["split"] == "val" and "validation" in results["calibration"]
    # a fifth of the 14 seen classes (rounded) play the unseen part
    assert results["data"]["n_unseen_classes"] + results["data"]["n_seen_classes"] == 14
    protocol = results["release_protocol"]
    assert protocol["chosen_on"] == "validation split"
    assert results["chosen_on_validation"] == {"epoch": protocol["gzsl_epoch"],
                                               "gamma": protocol["gamma"]}


def test_release_recipe_end_to_end_with_the_papers_protocol(tmp_path, capsys):
    # GroupNorm(32) as published needs more than one cell per group: 64 px gives 2x2 coarse maps
    args = tiny(tmp_path, "release", "data.image_size=64", "train.epochs=3", "train.lr_step=1")
    assert main(["train", "--config", "demo-release", *args]) == 0
    run = tmp_path / "release"
    results = json.loads((run / "results.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the published order: the scheduler steps before each epoch, so the decay comes one epoch early
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 1e-4, 1e-5])
    protocol = results["release_protocol"]
    assert protocol["chosen_on"] == "test set (as the paper reports)"
    for key, epoch in (("czsl_acc", "czsl_epoch"), ("ausuc", "ausuc_epoch")):
        values = [r[key] for r in records]
        assert protocol[key] == max(values) and protocol[epoch] == values.index(max(values))
    h = [r["gzsl_h"] for r in records]
    best = h.index(max(h))
    assert protocol["gzsl_h"] == max(h) and protocol["gzsl_epoch"] == best
    assert (protocol["gzsl_seen"], protocol["gzsl_unseen"], protocol["gamma"]) == (
        records[best]["gzsl_seen"], records[best]["gzsl_unseen"], records[best]["gamma"])
    # the top-level figures are the last epoch's
    assert results["czsl_acc"] == records[-1]["czsl_acc"]
    saved = load_checkpoint(run / "checkpoints" / "best.pt")
    assert saved["epoch"] == best
    out = capsys.readouterr().out
    assert "last epoch (epoch 3)" in out and "best over epochs, chosen on the test set" in out


def test_learning_rate_steps_after_each_epoch_by_default(tmp_path):
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=3", "train.lr_step=1",
                                "train.eval_every=0")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx([1e-2, 1e-3, 1e-4])


@pytest.mark.slow  # compiles the heads; tests/unit/test_models.py checks compiled = eager
@needs_cxx
def test_compiled_heads_train_and_their_checkpoint_evaluates_uncompiled(tmp_path, caplog):
    caplog.set_level("INFO", logger="mgmrn")
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1", "train.compile=regions")]) == 0
    assert "compiled 8 head modules" in caplog.text
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                 "--out", str(out)]) == 0
    evaluated = json.loads(out.read_text())
    # the eager network from the same weights: equal up to rounding (at most one image flips)
    assert evaluated["czsl_acc"] == pytest.approx(results["czsl_acc"], abs=100 / 24 + 1e-6)

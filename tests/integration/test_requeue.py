"""A stop at any point of start-up requeues (exit 75), and ``--resume`` is safe to pass always."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest
import torch

from mgmrn import checkpoint as ckpt_io
from mgmrn.cli import main
from mgmrn.data import build as data_build
from mgmrn.io import locks
from mgmrn.models import backbone_spec
from mgmrn.training import runner
from mgmrn.training.preemption import REQUEUE_EXIT

from ..helpers import tiny

STARTING = ("mgmrn train: stopped by SIGTERM while starting, before training began: nothing to "
            "save yet; run the same command again (exit status 75 asks the scheduler to requeue)")


def signal_inside(patch, owner, name: str) -> None:
    """Send SIGTERM to this process from inside ``owner.name``, then let it go on."""
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    patch.setattr(owner, name, wrapped)


PREPARE = runner.prepare_run_folder  # the function itself, which a test below patches

# each phase of start-up, in order; the first and the checkpoint load run under an
# `except Exception` that used to turn the stop into a wrong diagnosis with exit status 2
PHASES = {
    "checking the backbone's image size": (backbone_spec, "_any_size_model"),
    "taking the folder's lock": (locks, "run_folder_lock"),
    "checking the run folder": (runner, "prepare_run_folder"),
    "building the data": (data_build, "build_data"),
    "building the model": (runner, "build_model"),
    "building the optimizer": (runner, "build_optimizer"),
    "saving the config": (runner, "save_config"),
    "opening the metrics log": (runner, "MetricsLog"),
    "building the loader": (runner, "build_train_loader"),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_sigterm_in_each_phase_of_start_up_exits_75_with_nothing_to_resume(
        tmp_path, capsys, monkeypatch, phase):
    backbone_spec._fits.cache_clear()  # so that the size check runs its model again
    backbone_spec._any_size_model.cache_clear()
    before = signal.getsignal(signal.SIGTERM)
    signal_inside(monkeypatch, *PHASES[phase])
    assert main(["train", *tiny(tmp_path, "run")]) == REQUEUE_EXIT
    assert capsys.readouterr().err.strip().splitlines()[-1] == STARTING
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert signal.getsignal(signal.SIGTERM) is before
    # the same command again is not refused: nothing left in the way
    assert PREPARE(tmp_path / "run", resume=False) is None


def test_a_stop_swallowed_by_a_broad_handler_still_stops_before_training(tmp_path, capsys,
                                                                         monkeypatch):
    original = runner.build_train_loader

    def swallowing(*args, **kwargs):
        try:  # as a library's `except BaseException: pass` around an optional import would
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException:  # noqa: BLE001, S110
            pass
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "build_train_loader", swallowing)
    assert main(["train", *tiny(tmp_path, "run")]) == REQUEUE_EXIT
    assert capsys.readouterr().err.strip().splitlines()[-1] == STARTING
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run."""
    tmp_path = tmp_path_factory.mktemp("requeue")
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1")]) == 0
    return tmp_path


def test_sigterm_while_resume_loads_the_checkpoint_exits_75_not_damaged(finished, capsys,
                                                                         monkeypatch):
    run = finished / "run"
    kept = {name: (run / name).read_bytes()
            for name in ("checkpoints/last.pt", "results.json", "config.yaml")}
    signal_inside(monkeypatch, torch, "load")
    assert main(["train", "--resume", *tiny(finished, "run", "train.epochs=1")]) == REQUEUE_EXIT
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == STARTING
    assert "damaged" not in err and "cannot be loaded" not in err
    assert {name: (run / name).read_bytes() for name in kept} == kept
    monkeypatch.undo()
    assert ckpt_io.load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 0


def test_resume_on_a_folder_without_a_checkpoint_starts_from_the_beginning(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    # a requeue script passes --resume every time, also to the first try, or to a run killed in
    # its first epoch (its folder holds only config.yaml)
    assert main(["train", "--resume", *tiny(tmp_path, "fresh", "train.epochs=1")]) == 0
    assert "beginning the run" in caplog.text
    (tmp_path / "killed" / "checkpoints").mkdir(parents=True)
    (tmp_path / "killed" / "config.yaml").write_text(
        (tmp_path / "fresh" / "config.yaml").read_text().replace(
            str(tmp_path / "fresh"), str(tmp_path / "killed")))
    assert main(["train", "--resume", *tiny(tmp_path, "killed", "train.epochs=1")]) == 0
    records = [json.loads(line) for line in
               (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0]


@pytest.mark.parametrize("change", ["train.epochs=2", "data.demo.num_unseen=3", "train.lr=0.5"])
def test_resume_changing_the_schedule_or_the_data_is_refused(finished, capsys, change):
    run = finished / "run"
    kept = {name: (run / name).read_bytes()
            for name in ("checkpoints/last.pt", "results.json", "config.yaml")}
    assert main(["train", "--resume", *tiny(finished, "run", "train.epochs=1", change)]) == 2
    key, value = change.split("=")
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(
        f"mgmrn train: error: --resume: {run / 'config.yaml'}: {key} is ")
    assert f"not {value}" in err and "--resume-changes" in err
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_resume_with_changes_allowed_by_its_flag(finished, tmp_path):
    # on a copy: the finished run of the fixture stays as it was
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace(str(finished / "run"), str(run)))
    assert main(["train", "--resume", "--resume-changes",
                 *tiny(tmp_path, "run", "train.epochs=2")]) == 0
    assert json.loads((run / "results.json").read_text())["epochs"] == 2

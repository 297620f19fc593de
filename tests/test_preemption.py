"""Stopping on SIGTERM, SIGUSR1 or Ctrl-C: finish the step, checkpoint mid-epoch, resume exactly."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from mgmrn.checkpoint import load_checkpoint
from mgmrn.cli import main
from mgmrn.data import samplers
from mgmrn.preemption import REQUEUE_EXIT, StopOnSignal

from .test_main_job import tiny


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_signals_become_a_request_to_stop(sig):
    before = signal.getsignal(sig)
    with StopOnSignal() as stopper:
        assert not stopper.should_stop()
        os.kill(os.getpid(), sig)
        assert stopper.should_stop() and stopper.describe() == signal.Signals(sig).name
        if sig == signal.SIGINT:  # a second Ctrl-C does not wait
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), sig)
    assert signal.getsignal(sig) is before


def signal_at(monkeypatch, sig, epoch: int, index: int) -> None:
    """Send ``sig`` to this process when the sampler draws batch ``index`` of ``epoch``."""
    original = samplers._SeededBatchSampler.batch

    def batch(self, e, i):
        if (e, i) == (epoch, index):
            os.kill(os.getpid(), sig)
        return original(self, e, i)

    monkeypatch.setattr(samplers._SeededBatchSampler, "batch", batch)


def test_sigterm_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, capsys,
                                                                    monkeypatch):
    args = ["train.epochs=2", "train.batches_per_epoch=4", "train.eval_every=0"]
    assert main(["train", *tiny(tmp_path, "straight", *args)]) == 0
    with monkeypatch.context() as patch:
        signal_at(patch, signal.SIGTERM, epoch=1, index=2)
        assert main(["train", *tiny(tmp_path, "stopped", *args)]) == REQUEUE_EXIT
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("mgmrn train")]
    assert len(said) == 1 and "Traceback" not in err  # the rest are progress bars
    assert "SIGTERM" in said[0] and "epoch 2/2 after batch 3/4" in said[0]
    assert "--resume" in said[0] and str(REQUEUE_EXIT) in said[0]
    last = tmp_path / "stopped" / "checkpoints" / "last.pt"
    saved = load_checkpoint(last)
    # the signal came while batch 2 was fetched: that step finished, then training stopped
    assert saved["epoch"] == 0 and saved["mid_epoch"]["epoch"] == 1
    assert saved["mid_epoch"]["batches"] == 3
    assert main(["train", "--resume", *tiny(tmp_path, "stopped", *args)]) == 0
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(last)
    assert "mid_epoch" not in resumed and resumed["epoch"] == 1
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    # every epoch logged once, with the losses of the uninterrupted run
    runs = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text()
             .splitlines()] for run in ("straight", "stopped")]
    assert [r["epoch"] for r in runs[1]] == [0, 1]
    for a, b in zip(*runs):
        assert a["loss"] == b["loss"] and a["loss_coarse"] == b["loss_coarse"]

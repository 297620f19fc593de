"""Stopping on SIGTERM, SIGUSR1 or Ctrl-C: finish the step, checkpoint mid-epoch, resume exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mgmrn.checkpoint import load_checkpoint
from mgmrn.cli import main
from mgmrn.data import samplers
from mgmrn.data import verify as checks
from mgmrn.training import runner
from mgmrn.training.preemption import REQUEUE_EXIT, StopOnSignal
from mgmrn.viz.curves import CURVE_FILE, PER_CLASS_FILE

from ..helpers import tiny


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


STARTING = ("while starting, before training began: nothing to save yet; run the same command "
            "again (exit status 75 asks the scheduler to requeue)")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_during_the_start_up_image_check_exits_for_requeue(tmp_path, capsys, monkeypatch,
                                                                  sig):
    before = signal.getsignal(sig)
    real = checks.find_bad_images

    def check_then_signal(paths, threads=None):
        os.kill(os.getpid(), sig)  # the scheduler's signal arrives in the middle of the check
        return real(paths, threads)

    monkeypatch.setattr(checks, "find_bad_images", check_then_signal)
    assert main(["train", *tiny(tmp_path, "run", "data.verify_images=true")]) == REQUEUE_EXIT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"mgmrn train: stopped by {signal.Signals(sig).name} {STARTING}"
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert signal.getsignal(sig) is before


@pytest.mark.skipif(not os.path.exists("/proc/self/wchan"), reason="needs Linux's /proc")
def test_sigterm_to_a_real_process_stalled_in_its_start_up_exits_75(tmp_path):
    """The data folder's record is a FIFO nobody writes: start-up waits on it (the kernel says
    so in /proc/<pid>/wchan) until the signal."""
    (tmp_path / "demo").mkdir()
    os.mkfifo(tmp_path / "demo" / "demo.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mgmrn", "train", *tiny(tmp_path, "run")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wchan = f"/proc/{proc.pid}/wchan"
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            with open(wchan) as fh:
                if fh.read().strip() == "wait_for_partner":  # blocked opening the FIFO
                    break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == REQUEUE_EXIT
    assert err.strip().splitlines()[-1] == f"mgmrn train: stopped by SIGTERM {STARTING}"
    assert not (tmp_path / "run").exists()  # the folder made for the lock, left empty: removed


ARGS = ("train.epochs=2", "train.batches_per_epoch=4", "train.eval_every=0")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A run never stopped; the tests below share its demo data folder."""
    tmp_path = tmp_path_factory.mktemp("preemption")
    assert main(["train", *tiny(tmp_path, "straight", *ARGS)]) == 0
    return tmp_path


def signal_at(patch, sig, epoch: int, index: int) -> None:
    """Send ``sig`` to this process as the sampler draws batch ``index`` of ``epoch``."""
    original = samplers._SeededBatchSampler.batch

    def batch(self, e, i):
        if (e, i) == (epoch, index):
            os.kill(os.getpid(), sig)
        return original(self, e, i)

    patch.setattr(samplers._SeededBatchSampler, "batch", batch)


@pytest.mark.parametrize("epoch, index, where, done", [
    (1, 2, "in epoch 2/2 after batch 3/4", {"epoch": 0, "mid": (1, 3)}),
    # at the last batch of an epoch: the epoch ends as usual and training stops after it
    (0, 3, "before epoch 2/2", {"epoch": 0, "mid": None}),
])
def test_signal_then_resume_equals_the_uninterrupted_run(straight, capsys, monkeypatch, epoch,
                                                         index, where, done):
    tmp_path, run = straight, f"stopped-{epoch}-{index}"
    with monkeypatch.context() as patch:
        signal_at(patch, signal.SIGTERM, epoch, index)
        assert main(["train", *tiny(tmp_path, run, *ARGS)]) == REQUEUE_EXIT
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("mgmrn train")]
    assert len(said) == 1 and "Traceback" not in err  # the rest are progress bars
    assert f"stopped by SIGTERM {where}" in said[0]
    assert "--resume" in said[0] and str(REQUEUE_EXIT) in said[0]
    last = tmp_path / run / "checkpoints" / "last.pt"
    saved = load_checkpoint(last)
    # a signal as a batch is fetched: that step finishes, then training stops
    assert saved["epoch"] == done["epoch"]
    mid = saved.get("mid_epoch")
    assert (mid["epoch"], mid["batches"]) == done["mid"] if done["mid"] else mid is None
    if done["mid"]:  # fewer batches per epoch than were done: refused, naming the run's own
        assert main(["train", "--resume", "--resume-changes",
                     *tiny(tmp_path, run, *ARGS, "train.batches_per_epoch=2")]) == 2
        assert capsys.readouterr().err.strip().endswith(
            f"checkpoint '{last}' stopped in epoch 2 after batch 3, more than "
            f"train.batches_per_epoch=2; resume with the run's own train.batches_per_epoch (at least "
            f"3)")
    assert main(["train", "--resume", *tiny(tmp_path, run, *ARGS)]) == 0
    expected = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(last)
    assert "mid_epoch" not in resumed and resumed["epoch"] == 1
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    # every epoch logged once, with the losses of the uninterrupted run
    runs = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text()
             .splitlines()] for name in ("straight", run)]
    assert [r["epoch"] for r in runs[1]] == [0, 1]
    for a, b in zip(*runs):
        assert a["loss"] == b["loss"] and a["loss_coarse"] == b["loss_coarse"]


def test_signal_while_the_run_finishes_lets_it_finish(straight, capsys, caplog, monkeypatch):
    """A SIGTERM as the results are written (after the last checkpoint) no longer kills the
    command with 143: the run finishes, says so, and exits 0."""
    real = runner.write_eval_figures

    def figures_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "write_eval_figures", figures_then_signal)
    run = straight / "finishing"
    with caplog.at_level("WARNING", logger="mgmrn.training.runner"):
        assert main(["train", *tiny(straight, "finishing", *ARGS)]) == 0
    assert json.loads((run / "results.json").read_text())["epochs"] == 2
    assert (run / CURVE_FILE).is_file() and (run / PER_CLASS_FILE).is_file()
    assert any("SIGTERM arrived while the run was finishing" in r.getMessage()
               for r in caplog.records)

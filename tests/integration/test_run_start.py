"""What a run finds at its start, not after its first epoch: a busy folder, an unwritable one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mgmrn.cli import main
from mgmrn.io.locks import run_folder_lock

from ..helpers import REPO, tiny


def test_unwritable_checkpoints_folder_is_found_before_the_first_epoch(tmp_path, capsys,
                                                                       monkeypatch):
    folder = tmp_path / "run" / "checkpoints"
    real = tempfile.mkstemp

    def refused_in_checkpoints(*args, **kwargs):  # as a folder of another user, or mode 0555
        if Path(kwargs.get("dir") or ".").resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refused_in_checkpoints)
    assert main(["train", *tiny(tmp_path, "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(
        f"mgmrn train: error: cannot write '{folder / 'last.pt'}': Permission denied (")
    assert "make the folder writable" in err and "intact" not in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no epoch was spent first


def test_a_failed_first_checkpoint_does_not_claim_an_intact_previous_one(tmp_path, capsys,
                                                                         monkeypatch):
    real = torch.save

    def disk_full(obj, f, *rest, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *rest, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full)
    assert main(["train", *tiny(tmp_path, "run", "train.eval_every=0")]) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in said and "intact" not in said
    assert said.endswith("training stopped, no last.pt was written yet: begin the run again with "
                         "--resume")


def test_a_busy_run_folder_is_refused_before_torch_and_timm_load(tmp_path):
    code = ("import sys; from mgmrn.cli import main; "
            f"rc = main(['train', *{tiny(tmp_path, 'run')!r}]); "
            "print(rc, 'torch' in sys.modules, 'timm' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with run_folder_lock(tmp_path / "run"):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert f"'{tmp_path / 'run'}' is in use by another mgmrn train (pid {os.getpid()})" in done.stderr

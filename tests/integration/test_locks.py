"""One process per folder: the lock of ``mgmrn train`` and ``mgmrn data download``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mgmrn.io.locks import TRAIN_LOCK, FolderBusyError, folder_lock

from ..helpers import first_to_exit, tiny

HOLDER = """
import sys
from mgmrn.io.locks import folder_lock
with folder_lock(sys.argv[1], ".x.lock", "mgmrn train"):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
"""


def test_second_holder_is_refused_naming_the_pid_and_the_folder(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert (folder / ".x.lock").read_text() == f"{holder.pid}\n"
        with pytest.raises(FolderBusyError) as err, folder_lock(folder, ".x.lock", "mgmrn train"):
            pass
        assert str(err.value) == (f"'{folder}' is in use by another mgmrn train (pid "
                                  f"{holder.pid}); wait for it to finish, or stop it, or use "
                                  f"another folder")
    finally:
        holder.stdin.close()
        holder.wait()
    assert not folder.exists()  # released: the lock file removed, and the folder made for it
    with folder_lock(folder, ".x.lock", "mgmrn train") as path:
        assert path.read_text() == f"{os.getpid()}\n"
        with folder_lock(folder, ".x.lock", "mgmrn train"):  # re-entrant in one process
            (folder / "metrics.jsonl").write_text("")
        assert path.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.jsonl"]


def test_two_trainings_on_one_folder_one_stops_at_once_and_a_kill_leaves_no_lock(tmp_path):
    """Two real processes started together; the holder, killed, leaves a lock file but no lock."""
    args = tiny(tmp_path, "run", "train.epochs=100000", "train.eval_every=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "mgmrn", "train", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        second = first_to_exit(procs, 240)
        first = procs[1 - procs.index(second)]
        _, err = second.communicate()
        assert second.returncode == 2
        folder = tmp_path / "run"
        assert err.strip().splitlines()[-1] == (
            f"mgmrn train: error: '{folder}' is in use by another mgmrn train (pid {first.pid}); "
            f"wait for it to finish, or stop it, or use another folder")
        assert first.poll() is None  # the holder goes on
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert (folder / TRAIN_LOCK).read_text() == f"{first.pid}\n"  # left by the kill: no lock held
    with folder_lock(folder, TRAIN_LOCK, "mgmrn train"):
        pass

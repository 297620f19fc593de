"""benchmarks/launch.py: the sweeps' runs through submitit (local, debug, Slurm), finished runs
not redone, a preempted training resumed through mgmrn's --resume and exit status 75."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest

from ..helpers import load_script

# a stand-in for `mgmrn train`: argv ... train FOLDER [--resume]; with STOP, the first attempt
# saves last.pt and exits 75; with WAIT, it waits for SIGTERM, then saves last.pt and exits 75
STAND_IN = """
import json, os, signal, sys, time
from pathlib import Path
folder = Path(sys.argv[-1])
last = folder / "checkpoints" / "last.pt"
def stop(*_):
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_text("state")
    sys.exit(75)
signal.signal(signal.SIGTERM, stop)
resumed = "--resume" in sys.argv
if not resumed and os.environ.get("STOP"):
    stop()
if not resumed and os.environ.get("WAIT"):
    print("waiting", flush=True)
    while True:
        time.sleep(0.05)
folder.mkdir(parents=True, exist_ok=True)
(folder / "results.json").write_text(json.dumps({"resumed": resumed}))
"""


@pytest.fixture(scope="module")
def launch():
    return load_script("benchmarks/launch.py")


@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return script


def _command(launch, script, folder: Path, **env):
    return launch.Command([sys.executable, str(script), "train", str(folder)],
                          folder.with_suffix(".log"), folder / "results.json",
                          folder / "checkpoints" / "last.pt", env=env)


def _args(tmp_path, launcher="local", **options):
    values = {"launcher": launcher, "jobs": 2, "partition": None, "gpus": 1, "cpus": 4,
              "time": 10, "array_parallelism": 8, "jobs_folder": str(tmp_path / "submitit")}
    return Namespace(**(values | options))


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_the_local_executor_runs_each_command_and_skips_finished_ones(launch, stand_in,
                                                                      tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="submitit is missing: pip install 'mgmrn[cluster]'")
    commands = [_command(launch, stand_in, tmp_path / f"run{i}") for i in range(3)]
    assert launch.launch(commands, _args(tmp_path), tmp_path) == [0, 0, 0]
    assert all(not _results(tmp_path / f"run{i}")["resumed"] for i in range(3))
    # a second sweep submits nothing: every run is finished
    monkeypatch.setattr(launch, "make_executor", lambda *a: pytest.fail("submitted again"))
    assert launch.launch(commands, _args(tmp_path), tmp_path) == []


def test_a_training_that_exits_75_is_resumed_with_resume(launch, stand_in, tmp_path):
    pytest.importorskip("submitit", reason="submitit is missing: pip install 'mgmrn[cluster]'")
    command = _command(launch, stand_in, tmp_path / "run", STOP="1")
    assert launch.launch([command], _args(tmp_path, "debug"), tmp_path) == [0]
    assert _results(tmp_path / "run") == {"resumed": True}
    assert command.line()[3] == "--resume"  # the next attempt would resume too


def test_submitits_checkpoint_stops_the_training_and_the_requeued_job_resumes(launch, stand_in,
                                                                             tmp_path):
    pytest.importorskip("submitit", reason="submitit is missing: pip install 'mgmrn[cluster]'")
    command = _command(launch, stand_in, tmp_path / "run", WAIT="1")
    job, statuses = launch.CommandJob(), []
    thread = threading.Thread(target=lambda: statuses.append(job(command)))
    thread.start()
    deadline = time.monotonic() + 180  # a loaded machine starts a process slowly
    while "waiting" not in (command.log.read_text() if command.log.exists() else ""):
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.05)
    # submitit's preemption warning (SIGUSR2) does not kill the training...
    job._process.send_signal(signal.SIGUSR2)
    time.sleep(0.3)
    assert job._process.poll() is None
    # ...submitit's checkpoint stops it with a resumable checkpoint, and requeues the job
    requeued = job.checkpoint(command)
    thread.join(180)
    assert statuses == [75] and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "run" / "results.json").exists()  # not resumed in the stopped job
    assert isinstance(requeued.function, launch.CommandJob) and requeued.args == (command,)
    assert requeued.function(*requeued.args) == 0
    assert _results(tmp_path / "run") == {"resumed": True}


def test_without_submitit_local_runs_one_after_the_other_and_slurm_says_what_to_install(
        launch, stand_in, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    commands = [_command(launch, stand_in, tmp_path / f"run{i}") for i in range(2)]
    assert launch.launch(commands, _args(tmp_path), tmp_path) == [0, 0]
    assert "one after the other" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"--launcher slurm needs submitit: pip install "
                                         r"'mgmrn\[cluster\]'"):
        launch.launch([_command(launch, stand_in, tmp_path / "x")], _args(tmp_path, "slurm"),
                      tmp_path)


def test_slurm_gets_one_job_array_with_the_resources_asked_for(launch, stand_in, tmp_path,
                                                              monkeypatch):
    submitit = pytest.importorskip("submitit", reason="submitit is missing: pip install 'mgmrn[cluster]'")
    made = {}

    class Job:
        job_id = "123_0"

        def result(self):
            return 0

    class FakeAutoExecutor:
        def __init__(self, folder, cluster):
            made.update(folder=folder, cluster=cluster)

        def update_parameters(self, **parameters):
            made["parameters"] = parameters

        def map_array(self, fn, commands):
            made["lines"] = [c.line() for c in commands]
            return [Job() for _ in commands]

    monkeypatch.setattr(submitit, "AutoExecutor", FakeAutoExecutor)
    commands = [launch.Command([sys.executable, "-m", "mgmrn", "train", f"seed={i}"],
                               tmp_path / f"{i}.log", tmp_path / f"{i}.json", tmp_path / "last.pt")
                for i in range(3)]
    args = _args(tmp_path, "slurm", partition="gpu", gpus=4, time=600, array_parallelism=2)
    assert launch.launch(commands, args, tmp_path) == [0, 0, 0]
    assert made["cluster"] == "slurm"
    asked = {"slurm_partition": "gpu", "gpus_per_node": 4, "timeout_min": 600,
             "slurm_array_parallelism": 2}
    assert {key: made["parameters"][key] for key in asked} == asked
    # one training per job, over its four GPUs
    assert made["lines"][0] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                "--nproc_per_node=4", "-m", "mgmrn", "train", "seed=0"]


def test_the_ablation_tabulates_what_its_runs_wrote(launch, tmp_path, monkeypatch, capsys):
    ablation = load_script("benchmarks/ablation.py")
    seen = []

    def finish(job, command):  # a stand-in run: the figures of a results.json
        seen.append(command.line())
        command.done.parent.mkdir(parents=True, exist_ok=True)
        command.done.write_text(json.dumps({"czsl_acc": 50.0, "gzsl_h": 40.0, "ausuc": 30.0}))
        return 0

    monkeypatch.setattr(ablation.launch.CommandJob, "execute", finish)
    monkeypatch.setitem(sys.modules, "submitit", None)  # the sequential fallback, in process
    assert ablation.main(["--proxy", "demo", "--seeds", "0", "--root", str(tmp_path),
                          "--only", "release", "test_resize=ratio"]) == 0
    assert [line[3] for line in seen] == ["train", "eval"]
    assert "| release (1 seeds) | 50.0 ± 0.0 | 40.0 ± 0.0 | 30.0 ± 0.0 |" in capsys.readouterr().out


def test_the_slurm_executor_takes_the_resources_asked_for(launch, tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="submitit is missing: pip install 'mgmrn[cluster]'")
    args = _args(tmp_path, "slurm", partition="gpu", gpus=4, cpus=16, time=600,
                 array_parallelism=3)
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun: not a Slurm cluster
    with pytest.raises(SystemExit, match='--launcher slurm: Could not detect "srun"'):
        launch.make_executor(args, tmp_path / "jobs")
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "srun").chmod(0o755)
    executor = launch.make_executor(args, tmp_path / "jobs")
    assert executor._executor.parameters == {
        "time": 600, "gpus_per_node": 4, "ntasks_per_node": 1, "cpus_per_task": 16, "nodes": 1,
        "array_parallelism": 3, "signal_delay_s": 120, "partition": "gpu"}


def test_a_requeued_job_whose_run_finished_meanwhile_runs_nothing(launch, stand_in, tmp_path,
                                                                  monkeypatch):
    command = _command(launch, stand_in, tmp_path / "run")
    command.done.parent.mkdir(parents=True)
    command.done.write_text("{}")
    monkeypatch.setattr(launch.CommandJob, "execute", lambda *a: pytest.fail("ran again"))
    assert launch.CommandJob()(command) == 0


def test_a_failure_raises_unless_the_job_is_being_stopped(launch, tmp_path, monkeypatch):
    command = launch.Command([sys.executable, "-c", "import sys; sys.exit(-15)"],
                             tmp_path / "x.log", tmp_path / "x.json")
    with pytest.raises(RuntimeError, match="exited 241"):
        launch.CommandJob()(command)
    job = launch.CommandJob()
    job._stopping = True  # checkpoint() sent the signal: the requeued job takes over
    assert job(command) == 241

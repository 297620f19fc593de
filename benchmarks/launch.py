"""Running the benchmarks' commands: here, or on a Slurm cluster, through submitit.

The sweeps (``accuracy.py``, ``ablation.py``) describe each run as a :class:`Command` (an
``mgmrn`` command line, its log, the file it leaves when finished) and hand the list to
:func:`launch`:

- ``--launcher local``: submitit's ``LocalExecutor`` (each command under a job process of its own,
  ``--jobs`` at a time); without submitit, one after the other in this process;
- ``--launcher slurm``: submitit's ``AutoExecutor``, the commands as one job array
  (``map_array``, ``--array-parallelism`` at a time) on ``--partition`` with ``--gpus`` each;
- ``--launcher debug``: submitit's ``DebugExecutor`` (in this process, for a debugger).

Commands whose finished file exists are not submitted again. A job that is preempted or reaches
its time limit is requeued: submitit calls :meth:`CommandJob.checkpoint`, which asks the
training to stop (SIGTERM: mgmrn writes a resumable ``last.pt`` and exits 75), and the requeued
job continues it with ``mgmrn train --resume``. A command that exits 75 by itself (a signal from
elsewhere) is resumed at once the same way. With ``--gpus`` above 1 on Slurm, each training runs
under ``torchrun`` over the job's GPUs.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: mgmrn's exit status after a signal stopped training with a resumable checkpoint
#: (mgmrn.training.preemption.REQUEUE_EXIT; not imported, so that a sweep runs without mgmrn)
REQUEUE_EXIT = 75
LAUNCHERS = ("local", "slurm", "debug")


@dataclass
class Command:
    """One run of a sweep.

    Attributes:
        argv: the command line.
        log: where its output goes.
        done: the file it leaves when finished; a command whose file exists is not run.
        resume_from: for a training, its ``last.pt``: when present, ``--resume`` is added.
        threads: OMP_NUM_THREADS of the command (None: unset).
        processes: processes of a training (one per GPU): above 1 it runs under torchrun.
    """

    argv: list[str]
    log: Path
    done: Path
    resume_from: Path | None = None
    threads: int | None = None
    processes: int = 1
    env: dict = field(default_factory=dict)

    def line(self) -> list[str]:
        """The command line of this attempt: a training with a ``last.pt`` resumes it; one of
        several processes runs under torchrun."""
        argv = list(self.argv)
        if self.resume_from is not None and self.resume_from.is_file() and "--resume" not in argv:
            train = argv.index("train")
            argv = [*argv[:train + 1], "--resume", *argv[train + 1:]]
        if self.processes > 1 and argv[1:3] == ["-m", "mgmrn"]:
            argv = [argv[0], "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={self.processes}", *argv[1:]]
        return argv


def _without_sigusr2() -> None:
    # submitit warns of preemption with SIGUSR2, which mgmrn does not handle: the command must
    # not die of it; the job process turns it into SIGTERM (see CommandJob.checkpoint)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


try:
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # the sequential fallback needs neither
    Checkpointable, DelayedSubmission = object, None


class CommandJob(Checkpointable):
    """A submitit job running one :class:`Command` to its end, resuming it after exit 75.

    Args:
        max_resumes: how often a command stopped by a signal is resumed in the same job.
    """

    def __init__(self, max_resumes: int = 3):
        self.max_resumes = max_resumes
        self._process: subprocess.Popen | None = None
        self._stopping = False

    def __getstate__(self) -> dict:  # what a requeued job is rebuilt from: no live process
        return {"max_resumes": self.max_resumes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __call__(self, command: Command) -> int:
        """Run ``command`` (resuming its training when it can); returns its exit status."""
        if command.done.is_file():  # finished before this job was requeued
            return 0
        for _ in range(self.max_resumes + 1):
            status = self.execute(command)
            if status != REQUEUE_EXIT or self._stopping:
                break
            print(f"{' '.join(command.argv)} stopped with status {REQUEUE_EXIT}: resuming",
                  flush=True)
        # stopped by checkpoint(): the requeued job resumes it, or finds it finished (a signal
        # after its last epoch ends the process with -SIGTERM, its results written)
        if self._stopping:
            return status
        if status not in (0, REQUEUE_EXIT):
            raise RuntimeError(f"{' '.join(command.argv)} exited {status}; see {command.log}")
        return status

    def execute(self, command: Command) -> int:
        """One attempt: the command's output to its log; returns its exit status."""
        line = command.line()
        print("+", " ".join(line), flush=True)
        env = dict(os.environ, **command.env)
        if command.threads:
            env["OMP_NUM_THREADS"] = str(command.threads)
        command.log.parent.mkdir(parents=True, exist_ok=True)
        with command.log.open("a") as out:
            preexec = _without_sigusr2 if hasattr(signal, "SIGUSR2") else None
            self._process = subprocess.Popen(line, env=env, stdout=out, stderr=subprocess.STDOUT,
                                             preexec_fn=preexec)
            try:
                return self._process.wait()
            finally:
                self._process = None

    def checkpoint(self, command: Command):
        """Called by submitit on preemption or time-out: stop the command at its next step
        (SIGTERM: mgmrn saves a resumable ``last.pt`` and exits 75; torchrun passes it on to
        every process) and requeue the job, which resumes it."""
        self._stopping = True
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait()
        return DelayedSubmission(CommandJob(self.max_resumes), command)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The launcher's options, shared by the sweeps."""
    group = parser.add_argument_group("where the runs go (submitit)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="local",
                       help="local: on this machine (default); slurm: a Slurm job array; "
                            "debug: in this process, one after the other")
    group.add_argument("--jobs", type=int, default=1, help="local: runs at a time")
    group.add_argument("--partition", default=None, help="slurm: the partition")
    group.add_argument("--gpus", type=int, default=1,
                       help="slurm: GPUs per run (a training spans them with torchrun)")
    group.add_argument("--cpus", type=int, default=8, help="slurm: CPU cores per run")
    group.add_argument("--time", type=int, default=24 * 60, metavar="MINUTES",
                       help="time limit of a job; a run not done by then is requeued and resumes")
    group.add_argument("--array-parallelism", type=int, default=64,
                       help="slurm: runs of the array at a time")
    group.add_argument("--jobs-folder", default=None,
                       help="submitit's logs and pickles (default: <root>/submitit)")


def make_executor(args: argparse.Namespace, folder: Path):
    """The submitit executor of ``args.launcher``; None for the sequential fallback (local
    without submitit).

    Raises:
        SystemExit: slurm or debug asked for without submitit installed, or slurm off a cluster.
    """
    try:
        import submitit
    except ImportError:
        if args.launcher != "local":
            sys.exit(f"--launcher {args.launcher} needs submitit: pip install 'mgmrn[cluster]'")
        return None
    _pickle_by_value()
    if args.launcher == "debug":
        return submitit.DebugExecutor(folder=folder)
    if args.launcher == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=args.time)
        return executor
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as err:  # no srun: not on a Slurm cluster
        sys.exit(f"--launcher slurm: {err}")
    executor.update_parameters(timeout_min=args.time, gpus_per_node=args.gpus,
                               tasks_per_node=1, cpus_per_task=args.cpus, nodes=1,
                               slurm_array_parallelism=args.array_parallelism,
                               slurm_signal_delay_s=120,
                               **({"slurm_partition": args.partition} if args.partition else {}))
    return executor


def _pickle_by_value() -> None:
    """The job and its command travel to the job process by value: this file is not on its
    path there (a compute node, or submitit's own process)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def launch(commands: list[Command], args: argparse.Namespace, folder: Path) -> list[int]:
    """Run the commands not yet done and wait for them; returns their exit statuses.

    Raises:
        RuntimeError: a command failed (the first, naming its log); the others ran.
    """
    todo = [c for c in commands if not c.done.is_file()]
    if not todo:
        return []
    if args.launcher == "slurm" and args.gpus > 1:
        for command in todo:
            command.processes = args.gpus if command.resume_from is not None else 1
    executor = make_executor(args, Path(args.jobs_folder or folder / "submitit"))
    if executor is None:
        print("submitit is not installed: running the commands one after the other "
              "(pip install 'mgmrn[cluster]' for parallel and Slurm runs)", flush=True)
        return [CommandJob()(c) for c in todo]
    # the local executor starts every job it is given at once: hand it --jobs at a time
    wave = len(todo) if args.launcher == "slurm" else max(1, args.jobs)
    statuses, failures = [], []
    for start in range(0, len(todo), wave):
        jobs = executor.map_array(CommandJob(), todo[start:start + wave])
        if args.launcher == "slurm":
            print(f"submitted {len(jobs)} jobs (array {jobs[0].job_id.split('_')[0]}); "
                  f"waiting for them", flush=True)
        for job in jobs:
            try:
                statuses.append(job.result())
            except Exception as err:  # noqa: BLE001 - one failed run must not hide the others
                failures.append(str(err).strip().splitlines()[-1])
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(todo)} runs failed; first: {failures[0]}")
    return statuses

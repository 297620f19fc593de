"""Stopping on a scheduler's signal: finish the step, checkpoint, exit with a requeue status.

Cluster schedulers preempt a job by sending SIGTERM (Slurm, Kubernetes) or a chosen signal such as
SIGUSR1 (Slurm's ``--signal``) some time before killing it. While training, :class:`StopOnSignal`
turns SIGTERM, SIGUSR1 and SIGINT (Ctrl-C) into a request: training stops after the current step,
writes a resumable mid-epoch checkpoint, and the command exits with :data:`REQUEUE_EXIT`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: Exit status after a signal stopped training and a resumable checkpoint was written: 75 is
#: EX_TEMPFAIL of sysexits.h ("temporary failure, try again"); Slurm requeues a job that exits
#: with it when slurm.conf sets ``RequeueExit=75``, and torchrun restarts its workers on any
#: non-zero status. 0 would tell a scheduler the job is done, 1 and 2 that it failed.
REQUEUE_EXIT = 75

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None),
                            signal.SIGINT) if s is not None)


class Preempted(BaseException):  # noqa: N818 - names what happened, it is not a failure
    """Training stopped on a signal after writing a resumable checkpoint (or before writing any).

    A ``BaseException``, like ``KeyboardInterrupt``: the stop is raised from a signal handler at
    any point of start-up, and the ``except Exception`` of a checkpoint loader, a config check or
    a library's optional import must not turn it into "the checkpoint is damaged" (exit 2) or
    swallow it. :func:`mgmrn.cli.main` maps it to :data:`REQUEUE_EXIT`.

    Attributes:
        checkpoint: the checkpoint to resume from.
    """

    def __init__(self, message: str, checkpoint):
        super().__init__(message)
        self.checkpoint = checkpoint


class StopOnSignal:
    """A context in which SIGTERM, SIGUSR1 and SIGINT ask training to stop, not kill it.

    A second Ctrl-C stops at once (KeyboardInterrupt). Under torchrun :meth:`should_stop` is a
    collective: every rank calls it at the same points of the loop, and all of them stop at the
    same step when any of them got a signal, so that their checkpoint is consistent.

    Args:
        distributed: agree across the processes of the default group.
    """

    def __init__(self, distributed: bool = False):
        self.received: str | None = None
        self._elsewhere: str | None = None
        self.distributed = distributed
        self._group = None
        import torch.distributed as dist  # here, so that the module imports without torch

        if distributed and dist.get_backend() != "gloo":
            # the flag is a CPU tensor: agree over gloo, without a device round trip per step
            self._group = dist.new_group(backend="gloo")
        self._previous: dict = {}

    def __enter__(self) -> StopOnSignal:
        # a start-up stop that some handler swallowed is still a stop: the loop's first check
        # honours it
        self.received = _starting.received
        if threading.current_thread() is threading.main_thread():  # signals reach only that one
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            # once training is over, a signal no longer stops the command "while starting"
            signal.signal(sig, signal.SIG_DFL if handler is _stop_while_starting else handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def should_stop(self) -> bool:
        """Whether to stop now: this process (or, under torchrun, any process) got a signal."""
        if not self.distributed:
            return self.received is not None
        import torch
        import torch.distributed as dist

        # the largest signal number any process got (0: none), so that all can name it
        flag = torch.tensor([signal.Signals[self.received].value if self.received else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        if flag.item() and self.received is None:
            self._elsewhere = signal.Signals(int(flag.item())).name
        return bool(flag.item())

    @property
    def group(self):
        """The process group of CPU collectives (None: the default group)."""
        return self._group

    def describe(self) -> str:
        """The signal that stopped training, as its name (e.g. ``SIGTERM``)."""
        if self.received:
            return self.received
        return f"{self._elsewhere} to another process" if self._elsewhere else "no signal"


STARTUP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None),
                                    getattr(signal, "SIGUSR1", None)) if s is not None)


class _Starting:
    """The signal received during start-up, kept in case the error it raised was swallowed."""

    received: str | None = None


_starting = _Starting()


def stopped_while_starting(name: str) -> Preempted:
    """The stop of a command that had written nothing to resume from yet."""
    return Preempted(f"stopped by {name} while starting, before training began: nothing to save "
                     f"yet; run the same command again (exit status {REQUEUE_EXIT} asks the "
                     f"scheduler to requeue)", None)


def _stop_while_starting(signum, frame) -> None:
    _starting.received = signal.Signals(signum).name
    raise stopped_while_starting(_starting.received)


@contextlib.contextmanager
def stop_while_starting() -> Iterator[None]:
    """A context in which SIGTERM and SIGUSR1 stop the command at once with :data:`REQUEUE_EXIT`.

    For the start-up of training (imports, the image check, which takes minutes on CUB): without
    it a scheduler's signal kills the process with status 143, which a requeue-on-75 scheduler
    takes for a failure. :class:`StopOnSignal` takes over while training runs.
    """
    previous = {}
    _starting.received = None
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop_while_starting) for sig in STARTUP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _starting.received = None

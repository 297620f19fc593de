"""One process at a time per folder: an exclusive OS file lock that dies with its process.

``mgmrn data download`` locks its root and ``mgmrn train`` its ``output_dir``: two processes
writing one folder corrupt each other's files (a shared extraction folder, one ``.part`` appended
twice, two runs' epochs in one ``metrics.jsonl``). The lock is ``fcntl.flock`` on a file in the
folder, which the kernel drops when the process ends however it ends, so a killed run never leaves
a stale lock. The file holds the holder's pid, for the second process's message, and is removed on
release.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from mgmrn.errors import MgmrnError

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder is not locked
    fcntl = None


TRAIN_LOCK = ".mgmrn-train.lock"  # in output_dir while a run trains
DOWNLOAD_LOCK = ".mgmrn-download.lock"  # in data.root while a download fills it
_held: dict[Path, int] = {}  # lock files this process holds -> how many ``with`` deep


class FolderBusyError(MgmrnError, RuntimeError):
    """Another process holds the folder's lock; the message names its pid and the folder."""


def _holder(path: Path) -> str:
    """The pid written in the lock file, waiting a moment for a holder that has just taken it."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text or time.monotonic() > deadline:
            return text or "unknown"
        time.sleep(0.02)


@contextlib.contextmanager
def folder_lock(folder: str | Path, name: str, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the body of a ``with``; a folder made for it is
    removed again if it is left empty. Within one process the lock is re-entrant: the command
    line takes it before the slow imports, and the function it calls finds it held.

    Args:
        folder: the folder to use alone.
        name: the lock file's name inside it, e.g. ``.mgmrn-train.lock``.
        what: the command, for the message, e.g. ``mgmrn train``.

    Raises:
        FolderBusyError: another process holds the lock; raised at once, without waiting.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder.resolve() / name
    if fcntl is None or path in _held:
        _held[path] = _held.get(path, 0) + 1
        try:
            yield path
        finally:
            _held[path] -= 1
            if not _held[path]:
                del _held[path]
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusyError(
                f"'{folder}' is in use by another {what} (pid {_holder(path)}); wait for it to "
                f"finish, or stop it, or use another folder") from None
        # the file may have been removed by a holder releasing it between our open and flock:
        # a lock on a removed file locks nothing, so take it again on the file now in place
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    _held[path] = 1
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        del _held[path]
        with contextlib.suppress(OSError):
            path.unlink()
            if created:  # made for the lock and left empty (a refused run): not left behind
                folder.rmdir()
        os.close(fd)


def run_folder_lock(output_dir: str | Path) -> contextlib.AbstractContextManager:
    """``mgmrn train``'s lock on its ``output_dir``; under torchrun the main process (``RANK``
    0) holds it for all, the others get an empty context."""
    if os.environ.get("RANK", "0") not in ("", "0"):
        return contextlib.nullcontext()
    return folder_lock(output_dir, TRAIN_LOCK, "mgmrn train")


def download_lock(root: str | Path) -> contextlib.AbstractContextManager:
    """``mgmrn data download``'s lock on its root."""
    return folder_lock(root, DOWNLOAD_LOCK, "mgmrn data download")

"""Atomic file writes: a file is always either its old or its new content, never a torn mix.

Checkpoints, ``results.json`` and rewrites of ``metrics.jsonl`` all go through :func:`write_atomic`.
A write that fails (no space left, quota, permission) raises a :class:`DiskWriteError` whose one
line names the file, the reason and the free space of its folder; the old file is left as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mgmrn.errors import MgmrnError

TMP_SUFFIX = ".tmp"  # of the temporary files, named .<file>.<random>.tmp next to their file


class DiskWriteError(MgmrnError, RuntimeError):
    """A file could not be written; the message names it, the reason and the free space."""


def free_space(folder: str | Path) -> str:
    """Free space of the file system holding ``folder``, e.g. ``'1.2 GiB free of 500.0 GiB'``."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "free space unknown"
    return f"{format_size(usage.free)} free of {format_size(usage.total)}"


def format_size(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.1 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def write_error(path: str | Path, err: OSError) -> DiskWriteError:
    """A one-line :class:`DiskWriteError` for ``err`` raised while writing ``path``."""
    path = Path(path)
    reason = err.strerror or str(err) or type(err).__name__
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some of your quota",
            errno.EACCES: "make the folder writable", errno.EPERM: "make the folder writable",
            errno.EROFS: "use a writable folder"}.get(err.errno, "check the folder")
    return DiskWriteError(f"cannot write '{path}': {reason} ({free_space(path.parent)} in "
                          f"'{path.parent}'); {hint}")


def check_writable(path: str | Path) -> None:
    """Raise the :class:`DiskWriteError` that writing ``path`` would raise for its folder's
    permissions (read-only, not ours, a read-only file system), now: a run finds an unwritable
    ``checkpoints/`` before its first epoch, not after it. Nothing is left behind."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise write_error(path, err) from err


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the new file.

    The bytes go to a temporary file in the same folder, are flushed to disk, and replace
    ``path`` by a rename, which is atomic on POSIX file systems: a crash at any moment leaves a
    complete file behind, and a failed write leaves the old one.

    Args:
        path: the file to write.
        data: bytes, text (written as UTF-8), or a function writing to a binary file object.

    Raises:
        DiskWriteError: the write failed (full disk, quota, permissions); nothing was replaced.
    """
    path = Path(path)
    tmp = recorded = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a file is as the user's umask says
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                recorded = _Recorded(f)
                data(recorded)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    except RuntimeError as err:  # torch.save turns a failed write into RuntimeError("enforce fail")
        cause = recorded.error if recorded is not None else None
        if cause is None:
            cause = OSError(None, f"the writer failed: {str(err).strip().splitlines()[0]}")
        raise write_error(path, cause) from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


class _Recorded:
    """The file a writer function gets, keeping the first error of a failed write: torch.save
    swallows it and raises a RuntimeError of its own, which names neither file nor reason."""

    def __init__(self, file: BinaryIO):
        self._file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def _umask() -> int:
    """The process's umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that writes killed part way left in ``folder``; the removed.

    Only for a folder no other process writes (a run folder under its lock).
    """
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

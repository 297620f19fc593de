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


class DiskWriteError(RuntimeError):
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
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def _size(n: float) -> str:
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
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


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

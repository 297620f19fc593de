"""Safe, all-or-nothing extraction of one folder of a tar or zip archive.

Every member is written by this module to a path it computed itself, never by the archive
library: a member named with ``..``, an absolute path or a drive letter refuses the whole archive,
and links and device files are skipped, so nothing is written outside the destination. Extraction
goes to a temporary folder next to the destination, a marker file is written inside it, and the
folder is renamed into place whole: a destination either does not exist or is complete, and an
interrupted extraction leaves only the temporary folder, which the next run deletes and redoes.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from mgmrn.errors import MgmrnError

log = logging.getLogger(__name__)

MARKER = ".mgmrn-download"  # inside an extracted folder: written before it takes its final name
CHUNK = 1 << 20


class ArchiveError(MgmrnError, RuntimeError):
    """An archive that cannot be extracted safely or completely."""


def member_parts(name: str, archive: Path) -> tuple[str, ...]:
    """The path parts of an archive member, refusing names that would leave the extraction folder.

    Args:
        name: the member's name as stored.
        archive: the archive, named in the error.
    """
    clean = name.replace("\\", "/")
    parts = tuple(p for p in PurePosixPath(clean).parts if p not in ("", "."))
    if clean.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise ArchiveError(f"{archive}: member {name!r} would be written outside the extraction "
                           f"folder; the archive is refused")
    return parts


def _tar_members(archive: Path) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    with open(archive, "rb") as raw:
        gz = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else None
        raw.seek(0)
        # tarfile stops without a word at a damaged header after the first member, so a
        # truncated archive would pass for a short one: the gzip layer is read to its end below,
        # where it checks its CRC-32 and length
        with tarfile.open(fileobj=gz or raw, mode="r|" if gz else "r|*") as tar:
            for info in tar:
                if info.isdir():
                    yield info.name, True, None
                elif info.isfile():
                    yield info.name, False, tar.extractfile(info)
                else:
                    log.warning("%s: skipping %s, which is not a file or folder", archive,
                                info.name)
        while gz is not None and gz.read(CHUNK):
            pass


def _zip_members(archive: Path) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                yield info.filename, True, None
            else:
                # reading a zip member to its end checks its CRC-32
                with zf.open(info) as fh:
                    yield info.filename, False, fh


def _members(archive: Path) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    if zipfile.is_zipfile(archive):
        return _zip_members(archive)
    if tarfile.is_tarfile(archive):
        return _tar_members(archive)
    raise ArchiveError(f"{archive} is neither a zip nor a tar archive")


def extract_folder(archive: Path, member: str, destination: Path, marker: dict) -> int:
    """Extract the folder ``member`` of ``archive`` to ``destination``, all or nothing.

    Args:
        archive: a .zip, .tar, .tar.gz or .tgz file.
        member: the archive's top folder to keep, e.g. ``CUB_200_2011``; the rest is skipped.
        destination: the final folder; must not exist yet.
        marker: what to record in the marker file inside ``destination``.

    Returns:
        The number of files written.
    """
    work = destination.parent / f".mgmrn-extract-{destination.name}"
    if work.exists():  # left by an interrupted extraction: redone from the start
        shutil.rmtree(work)
    work.mkdir(parents=True)
    prefix = tuple(PurePosixPath(member).parts)
    written = 0
    try:
        bar = tqdm(desc=f"extracting {archive.name}", unit=" files", leave=False)
        for name, is_dir, stream in _members(archive):
            parts = member_parts(name, archive)
            if parts[:len(prefix)] != prefix:
                continue
            path = work.joinpath(*parts)
            if is_dir:
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
            written += 1
            bar.update()
        bar.close()
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as err:
        shutil.rmtree(work, ignore_errors=True)
        raise ArchiveError(f"{archive} is damaged ({type(err).__name__}: {err})") from err
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    kept = work.joinpath(*prefix)
    if not kept.is_dir() or not written:
        shutil.rmtree(work, ignore_errors=True)
        raise ArchiveError(f"{archive} holds no files under {member}/; is it the right file?")
    (kept / MARKER).write_text(json.dumps(dict(marker, files=written), indent=1) + "\n")
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.rename(kept, destination)
    shutil.rmtree(work)
    return written


def extracted_marker(folder: Path) -> dict | None:
    """The marker of a folder extracted by :func:`extract_folder`, or None if it has none."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

"""``mgmrn data download``: the benchmark archives from their official pages, into ``data.root``.

An archive passes through three states, and only a finished state takes a final name::

    DIR/downloads/<file>.part    being fetched; a later run resumes it with an HTTP Range request
    DIR/downloads/<file>         fetched and verified; its sha256 is in DIR/mgmrn-download.json
    DIR/<destination>/           extracted whole (see archives.py), with a marker file inside

A second run finds every destination marked and does nothing. A destination that exists without
a marker was put there by someone else: it is left as it is and its archive is not fetched.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from ..locks import folder_lock
from .archives import ArchiveError, extract_folder, extracted_marker

log = logging.getLogger(__name__)

MANIFEST = "mgmrn-download.json"
LOCK = ".mgmrn-download.lock"  # held while a download runs: one process per root
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file that could not be fetched or verified; the message says where to put it by hand."""


@dataclass(frozen=True)
class Source:
    """One archive of the download table.

    Attributes:
        name: the name on the command line.
        url: the official address.
        page: the page that publishes that address (and the checksum, where there is one).
        size: expected size in bytes, or None where none is known.
        md5: the published md5, or None where none is published.
        member: the archive's folder that is kept; the rest of the archive is skipped.
        destination: where that folder goes under DIR: the layout ``data.root`` expects.
    """

    name: str
    url: str
    page: str
    size: int | None
    md5: str | None
    member: str
    destination: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


SOURCES = (
    # The page publishes neither size nor checksum: the length the server announces is checked,
    # and the zip's own CRC-32 of every member while extracting.
    Source("xlsa17", "http://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip",
           "https://www.mpi-inf.mpg.de/departments/computer-vision-and-machine-learning/research/"
           "zero-shot-learning/zero-shot-learning-the-good-the-bad-and-the-ugly",
           None, None, "xlsa17", "xlsa17"),
    # CaltechDATA's record page publishes the md5; the size is the length the server sends,
    # the same in independent download scripts.
    Source("cub", "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
           "https://data.caltech.edu/records/65de6-vp158",
           1150585339, "97eceeb196236b17998738112f37df78", "CUB_200_2011", "CUB_200_2011"),
    # No size or checksum published; the archive's top folder is images/, which the xlsa17 paths
    # of SUN expect under SUN/.
    Source("sun", "https://cs.brown.edu/people/gmpatter/Attributes/SUNAttributeDB_Images.tar.gz",
           "https://cs.brown.edu/people/gmpatter/sunattributes.html",
           None, None, "images", "SUN/images"),
    # No size or checksum published; zip CRC-32s are checked while extracting.
    Source("awa2", "https://cvml.ist.ac.at/AwA2/AwA2-data.zip", "https://cvml.ist.ac.at/AwA2/",
           None, None, "Animals_with_Attributes2", "Animals_with_Attributes2"),
)
# every benchmark needs the xlsa17 splits besides its images
CHOICES = {"xlsa17": ("xlsa17",), "cub": ("xlsa17", "cub"), "sun": ("xlsa17", "sun"),
           "awa2": ("xlsa17", "awa2"), "all": ("xlsa17", "cub", "sun", "awa2")}


def sources_for(names: list[str], mirror: str | None = None) -> list[Source]:
    """The table's entries for ``names`` (each once, in table order), with ``mirror`` as base.

    Args:
        names: keys of :data:`CHOICES`.
        mirror: a base address serving every file under its own name, replacing the official ones.
    """
    wanted = {n for name in names for n in CHOICES[name]}
    chosen = [s for s in SOURCES if s.name in wanted]
    if mirror:
        base = mirror.rstrip("/")
        chosen = [Source(s.name, f"{base}/{s.filename}", s.page, s.size, s.md5, s.member,
                         s.destination) for s in chosen]
    return chosen


def _by_hand(source: Source, target: Path) -> str:
    return f"download it by hand (see {source.page}) to {target} and run this command again"


def _request(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "mgmrn-data-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """Fetch ``url`` into ``part``, continuing from its current length where the server allows."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _request(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        if (err.headers.get("Content-Range") or "") == f"bytes */{offset}":
            return  # the .part already holds the whole file (stopped before its rename)
        part.unlink()  # longer than the file: not a prefix of it
        offset, response = 0, _request(url, 0, timeout)
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header: restart from zero
        elif offset and not (response.headers.get("Content-Range") or "").startswith(
                f"bytes {offset}-"):
            part.unlink()
            raise ConnectionError(f"the server answered the range from byte {offset} with "
                                  f"{response.headers.get('Content-Range')!r}; restarting")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name.removesuffix(".part"), leave=False) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    got = part.stat().st_size
    if total is not None and got < total:
        raise ConnectionError(f"the connection closed after {got} of {total} bytes")


def fetch(source: Source, target: Path, timeout: float, retries: int, wait: float) -> None:
    """Download ``source`` to ``target`` through ``target.part``, resuming after a cut or a stall.

    Args:
        source: the table entry.
        target: the final file; written only by renaming the complete ``.part``.
        timeout: seconds without data after which a connection counts as stalled.
        retries: further tries after a failed one (each resumes where the last stopped).
        wait: seconds before the first retry, doubled for each further one.

    Raises:
        DownloadError: one line naming the address and where to put the file by hand.
    """
    part = target.with_name(target.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(source.url, part, timeout)
            os.replace(part, target)
            return
        except urllib.error.HTTPError as err:
            reason = f"HTTP {err.code} {err.reason}"
            if err.code < 500:  # 404, 403: asking again will not help
                break
        except TimeoutError:
            reason = f"no data for {timeout:g} s"
        except urllib.error.URLError as err:
            reason = str(err.reason)
        except (ConnectionError, http.client.HTTPException) as err:
            reason = str(err) or type(err).__name__
        if attempt < retries:
            log.warning("%s: %s; trying again (%d of %d)", source.url, reason, attempt + 1, retries)
            time.sleep(wait * 2 ** attempt)
    kept = (f" {part} holds the {part.stat().st_size} bytes fetched so far and the next run "
            f"resumes it; or" if part.is_file() and part.stat().st_size else "")
    raise DownloadError(f"cannot download {source.url} ({reason}, {attempt + 1} "
                        f"tr{'y' if attempt == 0 else 'ies'});{kept} {_by_hand(source, target)}")


def file_digests(path: Path) -> dict[str, str | int]:
    """Size, md5 and sha256 of a file, read once (with a progress bar: archives are large)."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                      unit_divisor=1024, desc=f"verifying {path.name}",
                                      leave=False) as bar:
        while chunk := fh.read(CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
            bar.update(len(chunk))
    return {"bytes": path.stat().st_size, "md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def set_aside(path: Path) -> Path:
    """Rename a refused file to a free ``<name>.rejected[-N]`` next to it (never deleted)."""
    aside = path.with_name(path.name + ".rejected")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.rejected-{n}")
    os.replace(path, aside)
    return aside


def verify(source: Source, path: Path) -> dict:
    """Check a fetched archive against the table; a mismatch sets it aside and raises.

    Returns:
        Its digests and how it was verified, for the manifest.
    """
    digests = file_digests(path)
    problem = None
    if source.size is not None and digests["bytes"] != source.size:
        problem = f"{digests['bytes']} bytes, expected {source.size}"
    elif source.md5 is not None and digests["md5"] != source.md5:
        problem = f"md5 {digests['md5']}, expected {source.md5} (published on {source.page})"
    if problem:
        aside = set_aside(path)
        raise DownloadError(f"{source.url}: the file fetched has {problem}; it is refused and "
                            f"kept as {aside}; delete it and run again, or "
                            f"{_by_hand(source, path)}")
    how = ("published md5 and size" if source.md5 else
           "length as served; archive checked while extracting")
    return dict(digests, verified=how)


def record(root: Path, filename: str, entry: dict) -> None:
    """Add or update the manifest entry of one archive, atomically (temporary file, rename)."""
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        manifest = {}
    manifest.setdefault(filename, {}).update(entry)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def prepare(source: Source, root: Path, timeout: float = 60.0, retries: int = 3,
            wait: float = 1.0, keep_archive: bool = False) -> str:
    """Fetch, verify and extract one source unless its destination is already there.

    Returns:
        What was done, for the summary table.
    """
    destination = root / source.destination
    if destination.exists():
        if extracted_marker(destination) is not None:
            return "already there"
        return "present, not from mgmrn data download: left as it is"
    archive = root / "downloads" / source.filename
    archive.parent.mkdir(parents=True, exist_ok=True)
    fetched = not archive.is_file()  # else it was put there by hand, or kept from an earlier run
    if fetched:
        fetch(source, archive, timeout, retries, wait)
    entry = verify(source, archive)
    entry.update(dataset=source.name, url=source.url, page=source.page,
                 fetched=datetime.now(timezone.utc).isoformat(timespec="seconds") if fetched
                 else "found in place")
    record(root, source.filename, entry)
    try:
        files = extract_folder(archive, source.member, destination,
                               {"archive": source.filename, "sha256": entry["sha256"]})
    except ArchiveError as err:
        aside = set_aside(archive)
        raise DownloadError(f"{err}; it is kept as {aside}; delete it and run again, or "
                            f"{_by_hand(source, archive)}") from err
    record(root, source.filename, {"extracted_to": source.destination, "files": files})
    if not keep_archive:
        archive.unlink()
    return f"extracted {files} files"


def download(names: list[str], root: str | Path, mirror: str | None = None,
             timeout: float = 60.0, retries: int = 3, wait: float = 1.0,
             keep_archives: bool = False) -> list[tuple[str, str, str]]:
    """``mgmrn data download``: every source ``names`` need, one after another.

    Args:
        names: keys of :data:`CHOICES` (``cub``, ``sun``, ``awa2``, ``xlsa17``, ``all``).
        root: DIR, the future ``data.root``.
        mirror: base address replacing the official ones.
        timeout: seconds without data before a connection counts as stalled.
        retries: further tries of a failed transfer.
        wait: seconds before the first retry.
        keep_archives: keep the archives in DIR/downloads after extraction.

    Returns:
        (name, destination, what was done) per source.
    """
    root = Path(root)
    rows = []
    with folder_lock(root, LOCK, "mgmrn data download"):
        for source in sources_for(names, mirror):
            done = prepare(source, root, timeout, retries, wait, keep_archives)
            rows.append((source.name, str(root / source.destination), done))
    downloads = root / "downloads"
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()
    return rows

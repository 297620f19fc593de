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
from tqdm.contrib.logging import logging_redirect_tqdm

from mgmrn.data.download.archives import ArchiveError, extract_folder, extracted_marker
from mgmrn.errors import MgmrnError
from mgmrn.io.atomic import format_size, write_error
from mgmrn.io.locks import download_lock

log = logging.getLogger(__name__)

MANIFEST = "mgmrn-download.json"
PROGRESS = 1 << 20  # bytes a failed connection must have delivered to reset the retry count
CHUNK = 1 << 20


class DownloadError(MgmrnError, RuntimeError):
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


def _content_type(response) -> str:
    """The media type, lower case (types are case-insensitive: ``Text/HTML`` is HTML)."""
    return (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _is_html(response) -> bool:
    return _content_type(response) in ("text/html", "application/xhtml+xml")


def _answer(response, length: int | None) -> str:
    """What a refused answer was, for the message."""
    kind = _content_type(response) or "no type"
    size = f"{length:,} bytes" if length is not None else "unknown length"
    if _is_html(response):
        return f"an HTML page of {size}: a captive portal or proxy?"
    return f"a file of {size} ({kind})"


def _check_answer(response, url: str, part: Path, offset: int, size: int | None) -> None:
    """Refuse from the headers an answer that cannot be the file: an HTML page, a length other
    than the known size, a whole file shorter than the part already held. Nothing is written."""
    length = response.headers.get("Content-Length")
    length = int(length) if length is not None else None
    ranged = offset and response.status == 206
    served = length + offset if ranged and length is not None else length
    content_range = response.headers.get("Content-Range") or ""
    if ranged and "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        served = int(content_range.rsplit("/", 1)[1])
    problem = None
    if _is_html(response):
        problem = "is not an archive"
    elif size is not None and served is not None and served != size:
        problem = f"is a file of {served:,} bytes, not the {size:,} bytes expected"
    elif offset and not ranged and length is not None and length < offset:
        problem = f"is shorter than the {offset:,} bytes already fetched"
    if problem is None:
        return
    kept = f"; {part} ({offset:,} bytes) is kept as it was" if offset else "; nothing was written"
    asked = f"the resume from byte {offset:,}" if offset else "the request"
    raise DownloadError(f"{url}: the answer to {asked} ({_answer(response, length)}) {problem}"
                        f"{kept}; try again later, from another network or with --mirror, or "
                        f"use a file you hold with --from-file")


def _fetch_once(url: str, part: Path, timeout: float, size: int | None = None) -> None:
    """Fetch ``url`` into ``part``, continuing from its current length where the server allows.

    Args:
        size: the file's known size (None: unknown); an answer of another size is refused.
    """
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
        _check_answer(response, url, part, offset, size)
        held, into = offset, part
        if offset and response.status != 206:
            # the server ignored the Range header and sends the whole answer: into a file of
            # its own, which replaces the .part only once it holds more (a short page sent
            # without a length must not replace the bytes fetched so far)
            offset, into = 0, part.with_name(part.name + ".restart")
        elif offset and not (response.headers.get("Content-Range") or "").startswith(
                f"bytes {offset}-"):
            part.unlink()
            raise ConnectionError(f"the server answered the range from byte {offset} with "
                                  f"{response.headers.get('Content-Range')!r}; restarting")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        try:
            _stream(response, into, offset, total, part.name.removesuffix(".part"))
        except BaseException:
            if into != part:
                _keep_longer(into, part, held)
            raise
        if into != part and not _keep_longer(into, part, held):
            raise DownloadError(
                f"{url}: the answer to the resume from byte {held:,} (a whole file of "
                f"{into.stat().st_size if into.is_file() else 0:,} bytes, "
                f"{_content_type(response) or 'no type'}) is shorter than the {held:,} bytes "
                f"already fetched; {part} ({held:,} bytes) is kept as it was; try again later, "
                f"from another network or with --mirror, or use a file you hold with --from-file")
    got = part.stat().st_size
    if total is not None and got < total:
        raise ConnectionError(f"the connection closed after {got} of {total} bytes")


def _stream(response, into: Path, offset: int, total: int | None, desc: str) -> None:
    """Append the answer's bytes to ``into`` (written from the start when ``offset`` is 0)."""
    try:
        with open(into, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=desc, leave=False) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        if isinstance(err, (ConnectionError, TimeoutError)):  # the network's, not the disk's
            raise
        # a full disk or quota: name the file and the free space, not only the root
        fetched = into.stat().st_size if into.is_file() else 0
        raise DownloadError(f"{write_error(into, err)}; the {fetched:,} bytes fetched are kept "
                            f"and the next run resumes them") from err


def _keep_longer(restart: Path, part: Path, held: int) -> bool:
    """Keep whichever of ``restart`` (the answer to a resume the server refused) and ``part``
    (``held`` bytes) holds more, under the name ``part``; whether ``restart`` did."""
    longer = restart.is_file() and restart.stat().st_size > held
    if longer:
        os.replace(restart, part)
    else:
        restart.unlink(missing_ok=True)
    return longer


def fetch(source: Source, target: Path, timeout: float, retries: int, wait: float) -> None:
    """Download ``source`` to ``target`` through ``target.part``, resuming after a cut or a stall.

    Args:
        source: the table entry.
        target: the final file; written only by renaming the complete ``.part``.
        timeout: seconds without data after which a connection counts as stalled.
        retries: further tries after failures in a row (each resumes where the last stopped); a
            connection that delivered :data:`PROGRESS` bytes or more starts the count again.
        wait: seconds before the first retry, doubled for each further one.

    Raises:
        DownloadError: one line naming the address and where to put the file by hand.
    """
    part = target.with_name(target.name + ".part")
    failures = tries = 0
    while True:
        before = part.stat().st_size if part.is_file() else 0
        tries += 1
        try:
            _fetch_once(source.url, part, timeout, source.size)
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
        after = part.stat().st_size if part.is_file() else 0
        # a connection that delivered data was worth its try: only failures in a row count
        failures = 1 if after - before >= PROGRESS else failures + 1
        if failures > retries:
            break
        log.warning("%s: %s; trying again (%d of %d%s)", source.url, reason, failures, retries,
                    " since the last progress" if tries > failures else "")
        time.sleep(wait * 2 ** (failures - 1))
    kept = (f" {part} holds the {part.stat().st_size} bytes fetched so far and the next run "
            f"resumes it; or" if part.is_file() and part.stat().st_size else "")
    raise DownloadError(f"cannot download {source.url} ({reason}, {tries} "
                        f"tr{'y' if tries == 1 else 'ies'});{kept} {_by_hand(source, target)}")


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
    """Rename a refused file to ``<name>.rejected`` next to it, replacing an older refused copy
    (and the ``.rejected-N`` copies of earlier versions): at most one per archive."""
    aside = path.with_name(path.name + ".rejected")
    for older in path.parent.glob(f"{path.name}.rejected-*"):
        older.unlink(missing_ok=True)
    os.replace(path, aside)
    return aside


def _aside_note(aside: Path) -> str:
    return (f"it is kept as {aside} ({format_size(aside.stat().st_size)} of disk, which may be "
            f"deleted); if it is a re-packed copy you trust, use it with --from-file {aside}")


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
                            f"{_aside_note(aside)}; or {_by_hand(source, path)}")
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
            wait: float = 1.0, keep_archive: bool = False, from_file: Path | None = None) -> str:
    """Fetch, verify and extract one source unless its destination is already there.

    Args:
        from_file: an archive held here to extract instead (see :func:`use_file`).

    Returns:
        What was done, for the summary table.
    """
    destination = root / source.destination
    if destination.exists():
        if extracted_marker(destination) is not None:
            return "already there"
        return "present, not from mgmrn data download: left as it is"
    if from_file is not None:
        return use_file(source, root, Path(from_file))
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
        raise DownloadError(f"{err}; {_aside_note(aside)}; or {_by_hand(source, archive)}") from err
    record(root, source.filename, {"extracted_to": source.destination, "files": files})
    if not keep_archive:
        archive.unlink()
    return f"extracted {files} files"


def use_file(source: Source, root: Path, path: Path) -> str:
    """Extract ``path``, an archive held here (a re-packed or otherwise obtained copy), in place
    of ``source``'s download. Its checksum is not compared with the published one (a warning
    says so); everything else is checked as for a download. ``path`` is never moved or deleted.
    """
    if not path.is_file():
        raise DownloadError(f"--from-file: {path} is not a file")
    log.warning("--from-file: %s is used as %s without comparing its checksum with the published "
                "one (%s); its members are still checked while extracting", path,
                source.filename, source.page)
    entry = file_digests(path)
    record(root, source.filename, dict(entry, dataset=source.name, url=source.url,
                                       page=source.page, fetched=f"from file {path}",
                                       verified="--from-file: checksum not compared"))
    try:
        files = extract_folder(path, source.member, root / source.destination,
                               {"archive": path.name, "sha256": entry["sha256"]})
    except ArchiveError as err:
        raise DownloadError(f"{err}; {path} is left as it was") from err
    record(root, source.filename, {"extracted_to": source.destination, "files": files})
    return f"extracted {files} files from {path} (checksum not compared)"


def download(names: list[str], root: str | Path, mirror: str | None = None,
             timeout: float = 60.0, retries: int = 3, wait: float = 1.0,
             keep_archives: bool = False,
             from_file: str | Path | None = None) -> list[tuple[str, str, str]]:
    """``mgmrn data download``: every source ``names`` need, one after another.

    Args:
        names: keys of :data:`CHOICES` (``cub``, ``sun``, ``awa2``, ``xlsa17``, ``all``).
        root: DIR, the future ``data.root``.
        mirror: base address replacing the official ones.
        timeout: seconds without data before a connection counts as stalled.
        retries: further tries of a failed transfer.
        wait: seconds before the first retry.
        keep_archives: keep the archives in DIR/downloads after extraction.
        from_file: an archive held here for the one dataset named (not ``all``), used instead of
            its download without comparing checksums; the xlsa17 splits it needs are fetched.

    Returns:
        (name, destination, what was done) per source.
    """
    root = Path(root)
    named = None
    if from_file is not None:
        if len(set(names)) != 1 or names[0] == "all":
            raise DownloadError(f"--from-file takes one dataset name (cub, sun, awa2 or xlsa17), "
                                f"the one its archive holds; got {' '.join(names)}")
        named = CHOICES[names[0]][-1]
    rows = []
    # log lines go above the progress bars instead of breaking them
    with download_lock(root), logging_redirect_tqdm():  # one process per root
        for source in sources_for(names, mirror):
            log.info("%s: %s", source.name, "from " + str(from_file) if source.name == named
                     else source.url)
            done = prepare(source, root, timeout, retries, wait, keep_archives,
                           from_file if source.name == named else None)
            rows.append((source.name, str(root / source.destination), done))
    downloads = root / "downloads"
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()
    return rows

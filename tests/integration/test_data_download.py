"""``mgmrn data download`` against a local HTTP server on 127.0.0.1 serving tiny archives with the
real internal layouts: a full download and check, cut and stalled transfers, a wrong checksum, a
404, no server at all, unsafe archives, an interrupted extraction, and a second run doing nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mgmrn.cli import main
from mgmrn.config import DataConfig
from mgmrn.data.audit import check_data
from mgmrn.data.download import fetch as dl
from mgmrn.data.download.archives import MARKER, ArchiveError, extract_folder
from mgmrn.io.locks import DOWNLOAD_LOCK

from ..helpers import first_to_exit
from ..xlsa17_fixture import COUNTS, write_archives, write_tree


class Server:
    """Serves ``files`` with HTTP Range support; can cut, stall, 404 or ignore Range per file.

    Attributes:
        requests: (path, Range header or None) of every request, in order.
        cut: file -> bytes after which the next transfer of it is cut off (once), or a list of
            such positions, one per transfer.
        stall: file -> seconds to go silent after the first bytes of every transfer.
        ignore_range: answer every request with the whole file (200).
        gate: an event every answer waits for (None: answer at once).
        portal: a page answered to every request with 200, as a captive portal does.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = dict(files), []
        self.cut, self.stall, self.ignore_range, self.gate = {}, {}, False, None
        self.portal: bytes | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                server.requests.append((self.path, self.headers.get("Range")))
                server.respond(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        if self.gate is not None:
            self.gate.wait(120)
        name = handler.path.rsplit("/", 1)[-1]
        if self.portal is not None:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html; charset=utf-8")
            handler.send_header("Content-Length", str(len(self.portal)))
            handler.end_headers()
            handler.wfile.write(self.portal)
            return
        if name not in self.files:
            handler.send_error(404, "Not Found")
            return
        data, start = self.files[name], 0
        ranged = handler.headers.get("Range")
        if ranged and not self.ignore_range:
            start = int(ranged.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        body = data[start:]
        if name in self.cut:  # promise the whole length, send part of it, hang up
            cuts = self.cut[name] if isinstance(self.cut[name], list) else [self.cut[name]]
            at = cuts.pop(0)
            if not isinstance(self.cut[name], list) or not cuts:
                del self.cut[name]
            handler.wfile.write(body[:at - start])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if name in self.stall:
            handler.wfile.write(body[:100])
            handler.wfile.flush()
            time.sleep(self.stall[name])
            return
        handler.wfile.write(body)

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    source = tmp_path_factory.mktemp("source")
    for name in ("cub", "sun", "awa2"):
        write_tree(source, name)
    return write_archives(source, tmp_path_factory.mktemp("archives"))


@pytest.fixture
def server(archives, monkeypatch):
    """The server, and the download table pointing at the tiny archives' own sizes and md5s."""
    table = []
    for source in dl.SOURCES:
        data = archives[source.filename]
        table.append(dataclasses.replace(source, size=len(data) if source.size else None,
                                         md5=hashlib.md5(data).hexdigest() if source.md5 else None))
    monkeypatch.setattr(dl, "SOURCES", tuple(table))
    srv = Server(archives)
    yield srv
    srv.close()


def fetch_all(root: Path, server: Server, names=("all",), **kwargs):
    kwargs = {"timeout": 5.0, "retries": 0, "wait": 0.0, **kwargs}
    return dl.download(list(names), root, mirror=server.url, **kwargs)


def final_names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_full_download_then_check(tmp_path, server, archives):
    root = tmp_path / "zsl"
    rows = fetch_all(root, server)
    assert [r[0] for r in rows] == ["xlsa17", "cub", "sun", "awa2"]
    assert all(r[2].startswith("extracted") for r in rows)
    # the real archives' folders land in the layout data.root expects; strays stay out
    assert (root / "xlsa17/data/CUB/att_splits.mat").is_file()
    assert (root / "CUB_200_2011/images/001.Alpha/001.Alpha_0.jpg").is_file()
    assert (root / "SUN/images/a/abbey/abbey_0.jpg").is_file()
    assert (root / "Animals_with_Attributes2/JPEGImages/zebra/zebra_0.jpg").is_file()
    assert not (root / "attributes.txt").exists() and not (root / "images").exists()
    assert not list(root.glob("downloads/*")) and not list(root.rglob("*.part"))
    manifest = json.loads((root / dl.MANIFEST).read_text())
    for name, data in archives.items():
        assert manifest[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest[name]["bytes"] == len(data)
    assert manifest["CUB_200_2011.tgz"]["verified"] == "published md5 and size"
    # data check passes on what was fetched, with the packaged word vectors
    for name in ("cub", "sun", "awa2"):
        checks = check_data(DataConfig(name=name, root=str(root)), expected=COUNTS, threads=2)
        assert [c for c in checks if c.status == "FAIL"] == []
        vectors = next(c for c in checks if c.name == "attribute vectors")
        assert "packaged copy" in vectors.detail


def test_second_run_does_nothing(tmp_path, server):
    root = tmp_path / "zsl"
    fetch_all(root, server, names=["cub"])
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    server.requests.clear()
    rows = fetch_all(root, server, names=["cub"])
    assert [r[2] for r in rows] == ["already there", "already there"]
    assert server.requests == []
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


@pytest.mark.parametrize("retries", [1, 0])
def test_cut_transfer_resumes_with_range(tmp_path, server, archives, retries):
    root = tmp_path / "zsl"
    size = len(archives["CUB_200_2011.tgz"])
    server.cut["CUB_200_2011.tgz"] = size // 2
    if retries == 0:  # this run fails, keeping the bytes it got; the next run resumes
        with pytest.raises(dl.DownloadError) as err:
            fetch_all(root, server, names=["cub"])
        assert "CUB_200_2011.tgz.part holds the" in str(err.value)
        assert (root / "downloads/CUB_200_2011.tgz.part").stat().st_size == size // 2
        assert not (root / "downloads/CUB_200_2011.tgz").exists()
        assert not (root / "CUB_200_2011").exists()
    fetch_all(root, server, names=["cub"], retries=retries)
    cub = [r for p, r in server.requests if p.endswith("CUB_200_2011.tgz")]
    assert cub == [None, f"bytes={size // 2}-"]
    manifest = json.loads((root / dl.MANIFEST).read_text())
    assert manifest["CUB_200_2011.tgz"]["sha256"] == hashlib.sha256(
        archives["CUB_200_2011.tgz"]).hexdigest()
    assert (root / "CUB_200_2011/images/002.Beta/002.Beta_2.jpg").is_file()


@pytest.mark.parametrize("extra", [0, 7])
def test_part_holding_the_whole_file_or_more(tmp_path, server, archives, extra):
    """A .part as long as the file is complete (416 says so); a longer one is fetched anew."""
    root = tmp_path / "zsl"
    (root / "downloads").mkdir(parents=True)
    data = archives["CUB_200_2011.tgz"]
    (root / "downloads/CUB_200_2011.tgz.part").write_bytes(data + b"x" * extra)
    fetch_all(root, server, names=["cub"])
    cub = [r for p, r in server.requests if p.endswith("CUB_200_2011.tgz")]
    assert cub == [f"bytes={len(data) + extra}-"] + ([None] if extra else [])
    assert (root / "CUB_200_2011/images/001.Alpha").is_dir()


def test_server_ignoring_range_restarts_from_zero(tmp_path, server):
    root = tmp_path / "zsl"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads/CUB_200_2011.tgz.part").write_bytes(b"junk that is not the start")
    server.ignore_range = True
    fetch_all(root, server, names=["cub"])  # the md5 check would refuse a junk prefix
    assert (root / "CUB_200_2011/images").is_dir()


def test_wrong_checksum_is_refused_and_kept_aside(tmp_path, server, monkeypatch):
    table = tuple(dataclasses.replace(s, md5="0" * 32) if s.name == "cub" else s
                  for s in dl.SOURCES)
    monkeypatch.setattr(dl, "SOURCES", table)
    root = tmp_path / "zsl"
    with pytest.raises(dl.DownloadError) as err:
        fetch_all(root, server, names=["cub"])
    message = str(err.value)
    assert "\n" not in message and f"expected {'0' * 32}" in message
    assert "CUB_200_2011.tgz.rejected" in message and "data.caltech.edu/records" in message
    assert (root / "downloads/CUB_200_2011.tgz.rejected").is_file()
    assert not (root / "downloads/CUB_200_2011.tgz").exists()
    assert not (root / "CUB_200_2011").exists()


def test_404_names_the_address_and_where_to_put_the_file(tmp_path, server):
    del server.files["AwA2-data.zip"]
    root = tmp_path / "zsl"
    with pytest.raises(dl.DownloadError) as err:
        fetch_all(root, server, names=["awa2"], retries=3)
    message = str(err.value)
    assert f"cannot download {server.url}/AwA2-data.zip (HTTP 404 Not Found, 1 try)" in message
    assert f"to {root / 'downloads' / 'AwA2-data.zip'} and run this command again" in message
    assert "\n" not in message
    assert (root / "xlsa17").is_dir()  # fetched before the failure, and complete
    assert not (root / "Animals_with_Attributes2").exists()
    assert not list(root.glob("downloads/AwA2*"))


def test_stall_times_out_instead_of_hanging(tmp_path, server):
    server.stall["xlsa17.zip"] = 5.0
    root = tmp_path / "zsl"
    start = time.monotonic()
    with pytest.raises(dl.DownloadError, match=r"no data for 0.3 s, 2 tries"):
        fetch_all(root, server, names=["xlsa17"], timeout=0.3, retries=1)
    assert time.monotonic() - start < 4.0
    assert (root / "downloads/xlsa17.zip.part").is_file()
    assert not (root / "downloads/xlsa17.zip").exists() and not (root / "xlsa17").exists()


def test_no_server_at_all(tmp_path, server):
    url = server.url
    server.close()  # nothing listens on that port any more
    with pytest.raises(dl.DownloadError, match=r"cannot download .*xlsa17.zip \(.*refused"):
        dl.download(["xlsa17"], tmp_path, mirror=url, retries=0)


def test_interrupted_extraction_is_redone_and_archive_in_place_is_used(tmp_path, server,
                                                                       archives):
    root = tmp_path / "zsl"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads/CUB_200_2011.tgz").write_bytes(archives["CUB_200_2011.tgz"])
    leftover = root / ".mgmrn-extract-CUB_200_2011" / "CUB_200_2011" / "images"
    leftover.mkdir(parents=True)
    (leftover / "half_written.jpg").write_bytes(b"\xff\xd8")
    fetch_all(root, server, names=["cub"], keep_archives=True)
    assert [p for p, _ in server.requests] == ["/mirror/xlsa17.zip"]  # CUB was in place
    assert not (root / ".mgmrn-extract-CUB_200_2011").exists()
    assert not list((root / "CUB_200_2011").rglob("half_written.jpg"))
    assert json.loads((root / "CUB_200_2011" / MARKER).read_text())["files"] == 13
    assert (root / "downloads/CUB_200_2011.tgz").is_file()  # --keep-archives
    assert json.loads((root / dl.MANIFEST).read_text())["CUB_200_2011.tgz"]["fetched"] == \
        "found in place"


def test_folder_made_by_someone_else_is_left_alone(tmp_path, server):
    root = tmp_path / "zsl"
    (root / "CUB_200_2011").mkdir(parents=True)
    (root / "CUB_200_2011" / "mine.txt").write_text("user data")
    rows = fetch_all(root, server, names=["cub"])
    assert rows[1][2].startswith("present, not from mgmrn data download")
    assert final_names(root / "CUB_200_2011") == {"mine.txt"}
    assert not any(p.endswith("CUB_200_2011.tgz") for p, _ in server.requests)


def _tar_with(path: Path, name: str) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for member in ("CUB_200_2011/images/a.jpg", name):
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))


@pytest.mark.parametrize("name", ["CUB_200_2011/../../evil.txt", "/tmp/evil.txt"])
def test_path_traversal_refuses_the_archive(tmp_path, name):
    archive = tmp_path / "bad.tgz"
    _tar_with(archive, name)
    with pytest.raises(ArchiveError, match="outside the extraction folder"):
        extract_folder(archive, "CUB_200_2011", tmp_path / "root" / "CUB_200_2011", {})
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "root" / "CUB_200_2011").exists()
    assert not list((tmp_path / "root").iterdir())


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_damaged_archive_is_set_aside(tmp_path, server, archives, monkeypatch, damage):
    """Without a published checksum, a damaged archive is caught while extracting."""
    data = archives["CUB_200_2011.tgz"]
    keep = len(data) * 3 // 4
    server.files["CUB_200_2011.tgz"] = data[:keep] + (bytes(len(data) - keep) if damage == "zeroed"
                                                      else b"")
    root = tmp_path / "zsl"
    monkeypatch.setattr(dl, "SOURCES", tuple(dataclasses.replace(s, md5=None, size=None)
                                             for s in dl.SOURCES))
    with pytest.raises(dl.DownloadError, match=r"CUB_200_2011.tgz is damaged .*kept as"):
        fetch_all(root, server, names=["cub"])
    assert (root / "downloads/CUB_200_2011.tgz.rejected").is_file()
    assert not (root / "CUB_200_2011").exists() and not list(root.glob(".mgmrn-extract-*"))


def test_cli_download_and_error_line(tmp_path, server, capsys):
    root = tmp_path / "zsl"
    assert main(["data", "download", "xlsa17", "--root", str(root), "--mirror", server.url,
                 "--retries", "0"]) == 0
    assert "extracted" in capsys.readouterr().out
    del server.files["CUB_200_2011.tgz"]
    assert main(["data", "download", "cub", "--root", str(root), "--mirror", server.url,
                 "--retries", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mgmrn data download: error: cannot download ") and "\n" not in err


def test_two_downloads_into_one_root_one_stops_at_once(tmp_path, server):
    """Two real processes started together: the second names the first's pid and the folder."""
    server.gate = threading.Event()  # the lock holder waits on the server until the other ended
    root = tmp_path / "zsl"
    command = [sys.executable, "-m", "mgmrn", "data", "download", "xlsa17", "--root", str(root),
               "--mirror", server.url, "--retries", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    try:
        second = first_to_exit(procs)
        first = procs[1 - procs.index(second)]
        server.gate.set()
        _, err = second.communicate()
        assert second.returncode == 2
        assert err.strip() == (f"mgmrn data download: error: '{root}' is in use by another mgmrn "
                               f"data download (pid {first.pid}); wait for it to finish, or stop "
                               f"it, or use another folder")
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert "extracted" in out
    finally:
        server.gate.set()
        for proc in procs:
            proc.kill()
            proc.wait()
    assert [p for p, _ in server.requests] == ["/mirror/xlsa17.zip"]
    assert (root / "xlsa17/data/CUB/att_splits.mat").is_file()
    assert not (root / DOWNLOAD_LOCK).exists() and not list(root.glob(".mgmrn-extract-*"))


def _half_part(root: Path, archives) -> tuple[Path, bytes]:
    """A .part holding the first half of the CUB archive, as a cut transfer leaves it."""
    (root / "downloads").mkdir(parents=True)
    part = root / "downloads/CUB_200_2011.tgz.part"
    half = archives["CUB_200_2011.tgz"][:len(archives["CUB_200_2011.tgz"]) // 2]
    part.write_bytes(half)
    return part, half


def test_captive_portal_page_never_replaces_a_part(tmp_path, server, archives):
    root = tmp_path / "zsl"
    part, half = _half_part(root, archives)
    server.portal = b"<html>" + b"x" * 2035 + b"</html>"  # 2,048 bytes
    (root / "xlsa17").mkdir()  # there already: only CUB is asked for
    with pytest.raises(dl.DownloadError) as err:
        fetch_all(root, server, names=["cub"], retries=3)
    message = str(err.value)
    assert f"the answer to the resume from byte {len(half):,} (an HTML page of 2,048 bytes: a " \
           f"captive portal or proxy?) is not an archive; {part} ({len(half):,} bytes) is kept " \
           f"as it was" in message
    assert "--from-file" in message and "\n" not in message
    assert part.read_bytes() == half  # not retried either: the same page would come back
    assert len(server.requests) == 1


def test_whole_file_of_another_size_answering_a_resume_never_replaces_a_part(tmp_path, server,
                                                                             archives):
    root = tmp_path / "zsl"
    part, half = _half_part(root, archives)
    size = len(archives["CUB_200_2011.tgz"])
    server.files["CUB_200_2011.tgz"] += b"\0" * 10  # a re-packed copy, served without Range
    server.ignore_range = True
    with pytest.raises(dl.DownloadError, match=rf"\(a file of {size + 10:,} bytes \(no type\)\) "
                                               rf"is a file of {size + 10:,} bytes, not the "
                                               rf"{size:,} bytes expected"):
        fetch_all(root, server, names=["cub"])
    assert part.read_bytes() == half


def test_known_size_differing_from_the_served_one_is_refused_before_any_byte(tmp_path, server,
                                                                             archives):
    root = tmp_path / "zsl"
    size = len(archives["CUB_200_2011.tgz"])
    server.files["CUB_200_2011.tgz"] = archives["CUB_200_2011.tgz"][:-7]
    with pytest.raises(dl.DownloadError, match=rf"is a file of {size - 7:,} bytes, not the "
                                               rf"{size:,} bytes expected; nothing was written"):
        fetch_all(root, server, names=["cub"], retries=3)
    assert [p for p, _ in server.requests].count("/mirror/CUB_200_2011.tgz") == 1
    assert not list(root.glob("downloads/CUB*"))


def test_one_rejected_copy_per_archive_which_from_file_can_use(tmp_path, server, archives,
                                                               monkeypatch, caplog):
    monkeypatch.setattr(dl, "SOURCES", tuple(dataclasses.replace(s, md5="0" * 32)
                                             if s.name == "cub" else s for s in dl.SOURCES))
    root = tmp_path / "zsl"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads/CUB_200_2011.tgz.rejected-2").write_bytes(b"left by an older version")
    for _ in range(2):
        with pytest.raises(dl.DownloadError) as err:
            fetch_all(root, server, names=["cub"])
    rejected = root / "downloads/CUB_200_2011.tgz.rejected"
    assert sorted(p.name for p in (root / "downloads").iterdir()) == [rejected.name]
    size = len(archives["CUB_200_2011.tgz"])
    assert (f"it is kept as {rejected} ({size / 1024:.1f} KiB of disk, which may be deleted); if "
            f"it is a re-packed copy you trust, use it with --from-file {rejected}") in str(err.value)
    # the copy is used as it is, its checksum not compared (xlsa17 came with the first try)
    server.requests.clear()
    with caplog.at_level("WARNING"):
        rows = fetch_all(root, server, names=["cub"], from_file=rejected)
    assert rows[1][2] == f"extracted 13 files from {rejected} (checksum not compared)"
    assert server.requests == []
    assert any("without comparing its checksum" in r.getMessage() for r in caplog.records)
    assert rejected.is_file() and (root / "CUB_200_2011/images/001.Alpha").is_dir()
    entry = json.loads((root / dl.MANIFEST).read_text())["CUB_200_2011.tgz"]
    assert entry["verified"] == "--from-file: checksum not compared"
    with pytest.raises(dl.DownloadError, match="--from-file takes one dataset name"):
        fetch_all(tmp_path / "other", server, names=["all"], from_file=rejected)


def test_from_file_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["data", "download", "--help"])
    assert "--from-file PATH" in capsys.readouterr().out


@pytest.mark.parametrize("progress, ok", [(1, True), (dl.PROGRESS, False)])
def test_a_connection_that_delivered_data_resets_the_retry_count(tmp_path, server, archives,
                                                                 monkeypatch, progress, ok):
    """Three cuts, one retry: enough when each connection made progress (counted from
    dl.PROGRESS bytes; the tiny archive's quarters are below the real 1 MiB)."""
    monkeypatch.setattr(dl, "PROGRESS", progress)
    size = len(archives["CUB_200_2011.tgz"])
    server.cut["CUB_200_2011.tgz"] = [size // 4, size // 2, 3 * size // 4]
    root = tmp_path / "zsl"
    (root / "xlsa17").mkdir(parents=True)
    if ok:
        fetch_all(root, server, names=["cub"], retries=1)
        assert (root / "CUB_200_2011/images").is_dir()
    else:
        with pytest.raises(dl.DownloadError, match=r"2 tries"):
            fetch_all(root, server, names=["cub"], retries=1)


def test_log_lines_go_through_tqdm_while_downloading(tmp_path, monkeypatch, capsys):
    """The console handler is tqdm's during a download (a log line is printed above the progress
    bars, not through them), and the user's own handler is back afterwards."""
    import logging

    from tqdm.contrib.logging import _TqdmLoggingHandler

    console = logging.StreamHandler(sys.stderr)  # the console handler of mgmrn's command line
    root_logger = logging.getLogger()
    monkeypatch.setattr(root_logger, "handlers", [console])
    seen = []

    def prepare(source, root, *args):
        seen.append([type(h) for h in root_logger.handlers])
        logging.getLogger("mgmrn.data.download.fetch").warning("inside %s", source.name)
        return "already there"

    monkeypatch.setattr(dl, "prepare", prepare)
    dl.download(["cub"], tmp_path / "zsl")
    assert seen and all(kinds == [_TqdmLoggingHandler] for kinds in seen)
    assert "inside cub" in capsys.readouterr().err  # on the console all the same
    assert root_logger.handlers == [console]

"""Downloads keep what they fetched: a short whole answer to a resume, a type in capitals, a full
disk; and a float image is read in the range it was written in."""

from __future__ import annotations

import errno
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from mgmrn.data.datasets import to_rgb
from mgmrn.data.download.fetch import DownloadError, Source, fetch

FILE = bytes(range(256)) * 200  # 51,200 bytes
PAGE = b"<p>a page served to every request</p>" * 50


@pytest.fixture
def server():
    """Answers every request with ``answer`` = (status, headers, body), sent until it closes the
    connection when no Content-Length is given."""
    state = {"answer": (200, {"Content-Type": "application/octet-stream"}, FILE), "ranges": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            state["ranges"].append(self.headers.get("Range"))
            status, headers, body = state["answer"]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/data.zip"
    yield state
    httpd.shutdown()
    httpd.server_close()


def source(url: str) -> Source:
    return Source("xlsa17", url, "https://example.org/page", None, None, "x", "x")


def test_a_short_whole_answer_to_a_resume_keeps_the_part(server, tmp_path):
    target = tmp_path / "data.zip"
    part = tmp_path / "data.zip.part"
    part.write_bytes(FILE[:20_000])
    # the Range header ignored: a 200 with no length, a type that is no page, 2 kB
    server["answer"] = (200, {"Content-Type": "application/octet-stream"}, PAGE)
    with pytest.raises(DownloadError) as err:
        fetch(source(server["url"]), target, timeout=5.0, retries=0, wait=0.0)
    assert server["ranges"] == ["bytes=20000-"]
    assert "is shorter than the 20,000 bytes already fetched" in str(err.value)
    assert part.read_bytes() == FILE[:20_000] and not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zip.part"]
    # a whole answer longer than the part replaces it, and completes the file
    server["answer"] = (200, {"Content-Type": "application/octet-stream"}, FILE)
    fetch(source(server["url"]), target, timeout=5.0, retries=0, wait=0.0)
    assert target.read_bytes() == FILE and not part.exists()


@pytest.mark.parametrize("kind", ["Text/HTML", "TEXT/HTML; charset=UTF-8", "application/xhtml+xml"])
def test_an_html_page_is_refused_whatever_the_case_of_its_type(server, tmp_path, kind):
    server["answer"] = (200, {"Content-Type": kind, "Content-Length": str(len(PAGE))}, PAGE)
    with pytest.raises(DownloadError, match="captive portal or proxy"):
        fetch(source(server["url"]), tmp_path / "data.zip", timeout=5.0, retries=0, wait=0.0)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_names_the_file_and_the_free_space(server, tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    part = tmp_path / "data.zip.part"
    with pytest.raises(DownloadError) as err:
        fetch(source(server["url"]), tmp_path / "data.zip", timeout=5.0, retries=0, wait=0.0)
    message = str(err.value)
    assert message.startswith(f"cannot write '{part}': No space left on device (")
    assert "free of" in message and f"in '{tmp_path}'); free some space" in message
    assert message.endswith(f"the {len(FILE):,} bytes fetched are kept and the next run resumes "
                            f"them")


@pytest.mark.parametrize("values, expected", [
    ([0.0, 0.5, 1.0], [0, 128, 255]),  # 0..1
    ([0.0, 100.0, 200.0], [0, 100, 200]),  # 0..255, not stretched to its brightest pixel
    ([0.0, 257.0, 65535.0], [0, 1, 255]),  # 0..65535
])
def test_a_float_image_is_read_in_the_range_it_was_written_in(values, expected):
    image = Image.fromarray(np.asarray([values], dtype=np.float32), "F")
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == expected

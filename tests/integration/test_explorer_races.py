"""The explorer's server: places of clients that left, class names the page can always remove,
messages in the page's words."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from mgmrn.serve import make_server
from mgmrn.serve.server import Handler

from ..helpers import checkpoint_with_data, png_bytes

WAIT = 120  # seconds; every wait below is for an event, met at once on a quiet machine


@pytest.fixture
def server(tmp_path):
    checkpoint, _ = checkpoint_with_data(tmp_path)
    srv = make_server(checkpoint, None, port=0, max_busy=1)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.explorer.close()


def request(server, path: str, data: bytes | None = None, method: str | None = None):
    req = urllib.request.Request(server.url.rstrip("/") + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_place_held_for_a_client_that_left_goes_to_the_newest_request(server, monkeypatch):
    """The only place is held by a request whose image is still decoding and whose page has
    moved on: the newest pick waits for that place instead of being told the server is busy."""
    decoding, finish, looked = threading.Event(), threading.Event(), threading.Event()
    real_upload, real_left = server.explorer.upload, Handler._client_left
    holder = {}

    def slow_upload(data, name):
        if name == "left.png":  # a 6000 x 6000 JPEG, decoding
            holder["thread"] = threading.current_thread()
            decoding.set()
            assert finish.wait(WAIT)
        return real_upload(data, name)

    def left(self):
        gone = real_left(self)
        if gone and threading.current_thread() is not holder.get("thread"):
            looked.set()  # another request saw that the holder's client left
        return gone

    monkeypatch.setattr(server.explorer, "upload", slow_upload)
    monkeypatch.setattr(Handler, "_client_left", left)
    body = png_bytes()
    gone = socket.create_connection(server.server_address[:2])
    gone.sendall(b"POST /api/predict?name=left.png HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert decoding.wait(WAIT)
    gone.close()  # the page moved on to a newer image
    answer = {}
    newest = threading.Thread(target=lambda: answer.update(
        zip(("status", "body"), request(server, "/api/predict?name=new.png", body, "POST"))))
    newest.start()
    try:
        assert looked.wait(WAIT)  # it found the only place held for a client that left
    finally:
        finish.set()
        newest.join(WAIT)
    assert answer["status"] == 200, answer
    assert answer["body"]["image"] == "new.png"


def test_a_class_name_must_be_text(server):
    status, body = request(server, "/api/classes", json.dumps(
        {"name": {"a": 1}, "attributes": {"color_red": 1}}).encode(), "POST")
    assert (status, body["error"]) == (400, 'the class name must be text, got {"a": 1}')


@pytest.mark.parametrize("name", [".", "..", "a/b", "?x=1&y"])
def test_any_added_class_can_be_removed_by_name(server, name):
    row = ",".join("1" for _ in server.explorer.predictor.attribute_names)
    status, body = request(server, "/api/classes", json.dumps({"name": name, "row": row}).encode(),
                           "POST")
    assert status == 200, body
    status, body = request(server, "/api/classes?" + urlencode({"name": name}), method="DELETE")
    assert status == 200 and name not in [c["name"] for c in body["classes"]]
    status, body = request(server, "/api/classes", method="DELETE")
    assert (status, body["error"]) == (400, "name the class to remove: DELETE "
                                            "/api/classes?name=<class>")


def test_messages_speak_of_the_page_not_of_internals_or_flags(server):
    _, first = request(server, "/api/predict?name=a.png", png_bytes(), "POST")
    status, body = request(server, f"/api/predict/{first['id']}?classes=added", b"", "POST")
    assert status == 400 and "--add-classes" not in body["error"]
    assert body["error"].endswith("add classes first (in the New class tab)")
    with socket.create_connection(server.server_address[:2]) as raw:
        raw.sendall(b"POST /api/classes HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n")
        raw.settimeout(WAIT)
        chunks = []
        while chunk := raw.recv(65536):  # the server closes after an error: read to the end
            chunks.append(chunk)
        answer = b"".join(chunks).decode()
    assert "Content-Length must be a whole number, got 'many'" in answer
    assert "n must be" not in answer

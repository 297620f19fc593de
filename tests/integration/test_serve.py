"""``mgmrn serve`` over real HTTP on 127.0.0.1: predictions, attention, new classes, a run folder,
and bad requests that get a message while the server keeps serving."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from mgmrn.inference.predictor import load
from mgmrn.serve import ApiError, Explorer, make_server
from mgmrn.serve.server import json_bytes

from ..helpers import (
    ATTRIBUTE_NAMES,
    CLASS_NAMES,
    checkpoint_with_data,
    make_run,
    png_bytes,
    png_size,
    write_checkpoint,
)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: what a decompression bomb starts with."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    checkpoint, data = checkpoint_with_data(root, {"gamma": 0.25, "split": "trainval",
                                                   "source": "test set (oracle)"})
    example = data / "images" / "green_square" / "0.png"
    return {"checkpoint": checkpoint, "data": data, "example": example,
            "run": make_run(root / "run", True, example),
            "old_run": make_run(root / "old_run", False, example)}


class Client:
    def __init__(self, server):
        self.server = server
        self.url = server.url.rstrip("/")

    def request(self, path, data=None, method=None, as_json=True):
        status, _, body = self.raw(path, data, method)
        return status, (strict_json(body) if as_json else body)

    def raw(self, path, data=None, method=None):
        """(status, headers, body bytes) of one request."""
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()


def strict_json(body: bytes):
    """JSON as the standard defines it: NaN and Infinity (which browsers refuse) fail here."""
    def refuse(constant):
        raise AssertionError(f"the answer holds {constant}, which is not JSON: {body[:200]!r}")
    return json.loads(body, parse_constant=refuse)


def start(setup, run_key="run", **options):
    server = make_server(setup["checkpoint"], setup[run_key], port=0, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def client(setup):
    server = start(setup)
    yield Client(server)
    server.shutdown()
    server.server_close()
    server.explorer.close()


def test_binds_to_localhost_and_serves_the_page(client):
    assert client.server.server_address[0] == "127.0.0.1"
    status, page = client.request("/", as_json=False)
    assert status == 200 and b"mgmrn explorer" in page and b"/app.js" in page
    for asset in ("/app.js", "/style.css"):
        assert client.request(asset, as_json=False)[0] == 200
    status, info = client.request("/api/info")
    assert status == 200 and info["attributes"] == ATTRIBUTE_NAMES
    assert [c["name"] for c in info["classes"]] == CLASS_NAMES
    assert info["gamma"] == 0.25 and "oracle" in info["gamma_source"]
    assert info["levels"] == ["fine", "middle", "coarse"] and info["attention"] is True
    assert info["epoch"] == 4  # the file stores its last epoch from 0 (3); training says 4
    status, listed = client.request("/api/classes")
    assert status == 200 and listed == {"classes": info["classes"]}


def test_head_answers_as_get_and_other_methods_get_a_json_405(client):
    status, headers, body = client.raw("/", method="HEAD")
    get_status, get_headers, page = client.raw("/")
    assert (status, body) == (200, b"") and headers["Content-Type"].startswith("text/html")
    assert int(headers["Content-Length"]) == len(page) > 0
    status, headers, body = client.raw("/api/info", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Type"] == "application/json"
    for path, method, allow in [("/api/info", "PUT", "GET, HEAD"), ("/", "PATCH", "GET, HEAD"),
                                ("/", "BREW", "GET, HEAD"), ("/api/predict", "GET", "POST"),
                                ("/api/classes", "PUT", "GET, HEAD, POST, DELETE"),
                                ("/api/classes/x", "PUT", "DELETE"), ("/api/info", "POST",
                                                                      "GET, HEAD")]:
        status, headers, body = client.raw(path, b"{}" if method != "GET" else None, method)
        assert (status, headers["Allow"]) == (405, allow), (path, method)
        assert headers["Content-Type"] == "application/json"
        assert strict_json(body)["error"] == f"{method} is not a method of {path}; it takes {allow}"
    assert client.request("/api/info")[0] == 200  # and the server keeps serving


def test_gamma_must_be_finite_and_answers_are_strict_json(client, setup):
    _, first = client.request("/api/predict?name=a.png", png_bytes(), "POST")
    for gamma in ("nan", "inf", "-Infinity", "1e999"):
        status, answer = client.request(f"/api/predict/{first['id']}?gamma={gamma}", b"", "POST")
        assert status == 400 and answer["error"].startswith("gamma must be a finite number")
        status, answer = client.request(f"/api/predict?name=a.png&gamma={gamma}", png_bytes(),
                                        "POST")
        assert status == 400 and "finite" in answer["error"]
    status, answer = client.request("/api/classes", b'{"name": "x", "attributes": {'
                                    b'"color_green": NaN}}', "POST")
    assert status == 400 and "NaN is not a number JSON allows" in answer["error"]
    results = setup["run"] / "results.json"
    kept = results.read_text()
    try:  # a results.json written with a NaN (json.dump allows it) is answered as null
        results.write_text(kept.replace('"ausuc": 10.0', '"ausuc": NaN'))
        status, run = client.request("/api/run")
        assert status == 200 and run["results"]["ausuc"] is None
    finally:
        results.write_text(kept)
    assert json_bytes({"a": [1.5, float("inf")], "b": {"c": float("nan")}}) == \
        b'{"a": [1.5, null], "b": {"c": null}}'


def test_a_gamma_from_the_page_is_labelled_as_such(client):
    _, first = client.request("/api/predict?name=a.png", png_bytes(), "POST")
    _, ranked = client.request(f"/api/predict/{first['id']}?gamma=0.5", b"", "POST")
    assert ranked["calibration"] == {"gamma": 0.5, "source": "given in the page"}
    _, ranked = client.request(f"/api/predict/{first['id']}?gamma=0.5&classes=unseen", b"", "POST")
    assert ranked["calibration"]["gamma"] == 0.0
    assert ranked["calibration"]["source"].startswith("not applied")


def test_levels_and_attention_come_from_the_network(setup, tmp_path):
    baseline = Explorer(load(write_checkpoint(tmp_path / "baseline.pt", "baseline")))
    try:
        assert baseline.info()["levels"] == ["global"] and baseline.info()["attention"] is False
        key = baseline.upload(png_bytes(), "a.png")
        with pytest.raises(ApiError, match="the baseline network has no attention maps"):
            baseline.attention(key, 0)
    finally:
        baseline.close()
    predictor = load(setup["checkpoint"])
    predictor.run.model.levels = ("small", "large")  # what the network says, not its config's name
    predictor.run.model.has_attention = False
    explorer = Explorer(predictor)
    try:
        assert explorer.info()["levels"] == ["small", "large"]
        assert explorer.info()["attention"] is False
        assert explorer.info()["epoch"] == 4  # the loaded predictor's, as training counts it
    finally:
        explorer.close()


def test_upload_ranks_as_the_predictor_does_with_the_checkpoint_gamma(client, setup, tmp_path):
    status, result = client.request("/api/predict?name=a.png&top_k=3", png_bytes(), "POST")
    assert status == 200 and len(result["classes"]) == 3 and result["searched"] == 6
    (tmp_path / "a.png").write_bytes(png_bytes())
    expected = load(setup["checkpoint"]).predict(tmp_path / "a.png", top_k=3)[0]
    assert [c["name"] for c in result["classes"]] == [c["name"] for c in expected["classes"]]
    assert [c["score"] for c in result["classes"]] == pytest.approx(
        [c["score"] for c in expected["classes"]], abs=1e-4)
    assert result["calibration"]["gamma"] == 0.25
    status, again = client.request(f"/api/predict/{result['id']}?classes=unseen&top_k=5", b"",
                                   "POST")
    assert {c["group"] for c in again["classes"]} == {"unseen"}
    assert again["calibration"]["gamma"] == 0.0  # one side alone


def test_attention_png_of_one_attribute_at_each_level(client):
    _, result = client.request("/api/predict?name=a.png", png_bytes(), "POST")
    status, png = client.request(f"/api/attention/{result['id']}?attribute=3", as_json=False)
    assert status == 200
    path = Path(client.server.explorer.scratch) / "check.png"
    path.write_bytes(png)
    assert png_size(path) == (4 * 170, 170 + 40)
    assert client.request(f"/api/attention/{result['id']}?attribute=99")[0] == 400
    assert client.request("/api/attention/unknown?attribute=1")[0] == 404


def test_a_class_defined_in_the_page_is_ranked_and_can_be_removed(client):
    _, first = client.request("/api/predict?name=a.png", png_bytes(), "POST")
    twin = dict(zip(ATTRIBUTE_NAMES, [3, 0, 0, 0, 3], strict=True))  # green_circle, scaled
    status, added = client.request("/api/classes", json.dumps(
        {"name": "my_green_circle", "attributes": twin}).encode(), "POST")
    assert status == 200 and added["added"] == {"index": 6, "name": "my_green_circle"}
    _, ranked = client.request(f"/api/predict/{first['id']}?classes=unseen,added&top_k=3", b"",
                               "POST")
    scores = {c["name"]: c["score"] for c in ranked["classes"]}
    assert scores["my_green_circle"] == pytest.approx(scores["green_circle"], abs=1e-5)
    assert [c["name"] for c in ranked["added"]] == ["my_green_circle"]
    status, pasted = client.request("/api/classes", json.dumps(
        {"name": "pasted", "row": "color_green,shape_square,color_blue,color_red,shape_circle\n"
                                  "1,1,0,0,0"}).encode(), "POST")
    assert status == 200 and pasted["added"]["index"] == 7
    for request, message in [({"name": "pasted", "row": "1 0 0 0 1"}, "already exists"),
                             ({"name": "x", "row": "1 0 1"}, "has 3 values; expected 5"),
                             ({"name": "x", "attributes": {"wings": 1}}, "'wings'"),
                             ({"name": "x", "row": "shape_circle\n1"}, "missing attribute")]:
        status, answer = client.request("/api/classes", json.dumps(request).encode(), "POST")
        assert status == 400 and message in answer["error"]
    for name in ("my_green_circle", "pasted"):
        assert client.request(f"/api/classes/{name}", method="DELETE")[0] == 200
    assert client.request("/api/classes/red_circle", method="DELETE")[0] == 404
    assert len(client.request("/api/info")[1]["classes"]) == 6


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(setup):
    server = start(setup, max_upload=100_000, max_pixels=50_000)
    client = Client(server)
    try:
        status, answer = client.request("/api/predict?name=notes.txt", b"just text", "POST")
        assert status == 400 and "'notes.txt' is not an image" in answer["error"]
        status, answer = client.request("/api/predict?name=big.bin", b"\0" * 3_000_000, "POST")
        assert status == 413 and "2.9 MB, more than the 0 MB accepted" in answer["error"]
        wide = io.BytesIO()
        Image.new("RGB", (1000, 100)).save(wide, "PNG")  # small file, 100,000 pixels
        status, answer = client.request("/api/predict?name=wide.png", wide.getvalue(), "POST")
        assert status == 413 and "1000 x 100 pixels" in answer["error"]
        status, answer = client.request("/api/predict?name=bomb.png",
                                        png_header_only(20_000, 10_000), "POST")
        assert status == 413 and "'bomb.png' has too many pixels" in answer["error"]
        status, answer = client.request("/api/predict?name=a.png&top_k=x", png_bytes(), "POST")
        assert status == 400 and "top_k must be a whole number" in answer["error"]
        assert client.request("/api/nothing")[0] == 404
        assert client.request("/api/predict?name=a.png", png_bytes(), "POST")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        server.explorer.close()


def test_requests_beyond_the_limit_are_told_to_wait_and_the_rest_are_served(setup):
    server = start(setup, max_busy=2)
    client = Client(server)
    pool = ThreadPoolExecutor(8)
    try:
        with server.explorer.model_lock:  # the network is busy: requests pile up
            futures = [pool.submit(client.request, "/api/predict?name=a.png", png_bytes(),
                                   "POST") for _ in range(8)]
            deadline = time.time() + 30
            while sum(f.done() for f in futures) < 6 and time.time() < deadline:
                time.sleep(0.05)
            refused = [f.result() for f in futures if f.done()]
            assert len(refused) == 6
            assert all(s == 503 and "busy with 2 requests" in a["error"] for s, a in refused)
            assert client.request("/api/info")[0] == 200  # light requests still answered
        served = [f.result() for f in futures if f.result()[0] == 200]
        assert len(served) == 2
        assert client.request("/api/predict?name=a.png", png_bytes(), "POST")[0] == 200
    finally:
        pool.shutdown()
        server.shutdown()
        server.server_close()
        server.explorer.close()


def test_a_request_whose_client_left_gives_its_place_up(setup):
    server = start(setup, max_busy=1)
    client = Client(server)
    probe = "/api/run/figure/none.png"  # 503 while the only place is held, else 404 at once

    def until(status):
        deadline = time.time() + 60
        while client.request(probe)[0] != status:
            assert time.time() < deadline, f"the probe never got {status}"
            time.sleep(0.05)

    try:
        with server.explorer.model_lock:  # the network is busy: a request waits in the place
            body = png_bytes()
            waiting = socket.create_connection(server.server_address[:2])
            waiting.sendall(b"POST /api/predict?name=a.png HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body) + body)
            until(503)
            waiting.close()  # a page that moved on to another image
            until(404)
            held = ThreadPoolExecutor(1).submit(client.request, "/api/predict?name=b.png",
                                                png_bytes(), "POST")
            until(503)  # the place is taken again, by a client still there
        assert held.result()[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        server.explorer.close()


def test_run_folder_figures_and_confusions_from_results(client, setup):
    status, run = client.request("/api/run")
    assert status == 200 and run["epochs"] == 2 and run["results"]["gzsl_h"] == 24.0
    assert run["figures"] == ["training_curves.png", "seen_unseen_curve.png",
                              "per_class_accuracy.png"]
    for figure in run["figures"]:
        status, png = client.request(f"/api/run/figure/{figure}", as_json=False)
        assert status == 200 and png[:4] == b"\x89PNG"
    pair = run["confusions"]["pairs"][0]
    assert run["confusions"]["status"] == "from results.json"
    assert (pair["true"], pair["predicted"]) == ("green_square", "green_circle")
    status, image = client.request(pair["examples"][0], as_json=False)
    assert status == 200 and image == setup["example"].read_bytes()
    assert client.request("/api/run/example/7")[0] == 404  # only the listed files are served
    assert client.request("/api/run/figure/..%2Fresults.json")[0] == 404


def test_confusions_of_an_older_run_are_computed_from_the_checkpoint(setup):
    server = start(setup, run_key="old_run")
    client = Client(server)
    try:
        deadline = time.time() + 60
        while True:
            confusions = client.request("/api/run")[1]["confusions"]
            if confusions["status"].startswith(("computed", "not available")):
                break
            assert time.time() < deadline, confusions
            time.sleep(0.2)
        assert confusions["status"] == "computed from the checkpoint on 6 unseen test images"
        predictor = load(setup["checkpoint"])
        expected = []
        for name in ("green_circle", "green_square"):
            for result in predictor.predict(sorted((setup["data"] / "images" / name).iterdir()),
                                            top_k=1, classes="unseen"):
                if result["classes"][0]["name"] != name:
                    expected.append((name, result["classes"][0]["name"]))
        found = {(p["true"], p["predicted"]): p["count"] for p in confusions["pairs"]}
        assert found == {pair: expected.count(pair) for pair in set(expected)}
    finally:
        server.shutdown()
        server.server_close()
        server.explorer.close()


def test_cli_serve_errors_are_one_line(tmp_path, capsys):
    from mgmrn import cli

    assert cli.main(["serve", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgmrn serve: error: ") and "none.pt" in err

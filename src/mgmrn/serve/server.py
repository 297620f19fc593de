"""``mgmrn serve``: the explorer page and its JSON API on a small threaded HTTP server.

Standard library only (``http.server``): the page is static HTML, CSS and JavaScript shipped in
the package, and every answer of the API is JSON or a PNG. Bound to 127.0.0.1 unless told
otherwise. Limits keep one bad request from hurting the others: uploads above ``max_upload``
bytes and images above ``max_pixels`` are refused with a message, at most ``max_busy`` requests
wait for the network at once (the next get "busy, try again"; one whose client leaves while it
waits gives its place up), and any failure inside a request becomes a JSON error for the page
while the server keeps serving. A method a path does not take is answered 405 with an ``Allow``
header; HEAD is answered as GET without the body. No answer carries a NaN or an infinity.
"""

from __future__ import annotations

import json
import logging
import math
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mgmrn.errors import UsageError
from mgmrn.serve.app import MAX_PIXELS, ApiError, Explorer

log = logging.getLogger(__name__)

MAX_UPLOAD = 16 * 1024 * 1024  # bytes
MAX_BUSY = 4  # requests waiting for the network at once; more are told to try again
DRAIN_LIMIT = 256 * 1024 * 1024  # a refused body up to this size is read to the end first
WAIT_POLL = 0.05  # seconds between looks at the network lock and the client while waiting
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
# methods each path takes, by exact path or by prefix ending in "/"; any other path takes GET and
# HEAD (and answers 404 where nothing is there)
ROUTES = (("/api/classes/", ("DELETE",)), ("/api/classes", ("GET", "HEAD", "POST", "DELETE")),
          ("/api/predict/", ("POST",)), ("/api/predict", ("POST",)))
READ_ONLY = ("GET", "HEAD")


class ClientLeft(Exception):
    """The client closed its connection while its request waited: nobody is left to answer."""


class ExplorerServer(ThreadingHTTPServer):
    """An HTTP server holding the :class:`Explorer` and the request limits."""

    daemon_threads = True

    def __init__(self, explorer: Explorer, host: str = "127.0.0.1", port: int = 8000,
                 max_upload: int = MAX_UPLOAD, max_busy: int = MAX_BUSY):
        self.explorer = explorer
        self.max_upload = max_upload
        self.max_busy = max_busy
        self.busy = threading.BoundedSemaphore(max_busy)
        self.holders: set[Handler] = set()  # the requests holding a place
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    timeout = 60  # seconds a client may take to send its request
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer(self._delete)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (no ``do_<METHOD>``, a malformed request) as JSON."""
        self.close_connection = True
        if code == 501 and self.command:  # a method nothing here takes
            path = urlsplit(self.path).path
            self._send(405, "json", {"error": f"{self.command} is not a method of {path}; it "
                                              f"takes {', '.join(allowed_methods(path))}"},
                       allow=allowed_methods(path))
            return
        self._send(code, "json", {"error": message or explain or f"HTTP error {code}"})

    def _answer(self, route) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        allow = allowed_methods(url.path)
        try:
            if self.command not in allow:
                raise ApiError(405, f"{self.command} is not a method of {url.path}; it takes "
                                    f"{', '.join(allow)}")
            status, kind, body = route(url.path, query)
        except ClientLeft:
            log.debug("%s left while %s waited for the network", self.address_string(),
                      self.path)
            self.close_connection = True
            return
        except ApiError as err:
            status, kind, body = err.status, "json", {"error": err.message}
        except FileNotFoundError as err:
            status, kind, body = 404, "json", {"error": str(err)}
        except Exception as err:  # noqa: BLE001 - one failed request must not stop the server
            log.exception("request %s failed", self.path)
            status, kind, body = 500, "json", {"error": f"the server failed on this request "
                                                        f"({type(err).__name__}: {err})"}
        if status >= 400:  # the body may be unread: start afresh on a new connection
            self.close_connection = True
        self._send(status, kind, body, allow if status == 405 else None)

    def _send(self, status: int, kind: str, body: Any,
              allow: tuple[str, ...] | None = None) -> None:
        if kind == "json":
            kind, body = "application/json", json_bytes(body)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", ", ".join(allow))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the page moved on (a newer request)
            self.close_connection = True
            log.debug("%s left before the answer to %s", self.address_string(), self.path)

    def _get(self, path: str, query: dict[str, str]):
        explorer = self.server.explorer
        if path in STATIC:
            name, kind = STATIC[path]
            return 200, kind, resources.files(__package__).joinpath("static", name).read_bytes()
        if path == "/api/info":
            return 200, "json", {**explorer.info(), "max_upload": self.server.max_upload}
        if path == "/api/classes":
            return 200, "json", {"classes": explorer.classes()}
        if path.startswith("/api/attention/"):
            with self._slot():
                return 200, "image/png", explorer.attention(path.rsplit("/", 1)[1],
                                                            _int(query, "attribute", 0))
        if path.startswith("/api/run"):
            return self._run(path)
        raise FileNotFoundError(f"nothing at {path}")

    def _run(self, path: str):
        run = self.server.explorer.run
        if run is None:
            raise ApiError(404, "no run folder is served; start with mgmrn serve --run DIR")
        if path == "/api/run":
            return 200, "json", run.summary()
        if path.startswith("/api/run/figure/"):
            with self._slot(network=False):
                return 200, "image/png", run.figure(path.rsplit("/", 1)[1])
        if path.startswith("/api/run/example/"):
            file = run.example(_int({"example": path.rsplit("/", 1)[1]}, "example", -1))
            kind = "image/png" if file.suffix.lower() == ".png" else "image/jpeg"
            return 200, kind, file.read_bytes()
        raise FileNotFoundError(f"nothing at {path}")

    def _post(self, path: str, query: dict[str, str]):
        explorer = self.server.explorer
        body = self._body()
        if path == "/api/predict":
            with self._slot():
                key = explorer.upload(body, unquote(query.get("name", "upload")))
                if self._client_left():  # it left while its image decoded: free the place now
                    raise ClientLeft
                return 200, "json", self._rank(key, query)
        if path.startswith("/api/predict/"):
            with self._slot():
                return 200, "json", self._rank(path.rsplit("/", 1)[1], query)
        if path == "/api/classes":
            try:
                request = json.loads(body or b"{}", parse_constant=_refuse_constant)
            except ValueError as err:
                raise ApiError(400, f"the request is not JSON ({err})") from err
            return 200, "json", explorer.add_class(request if isinstance(request, dict) else {})
        raise FileNotFoundError(f"nothing at {path}")

    def _delete(self, path: str, query: dict[str, str]):
        if path == "/api/classes":  # ?name=: any name, also "." or "..", which a path cannot carry
            if "name" not in query:
                raise ApiError(400, "name the class to remove: DELETE /api/classes?name=<class>")
            return 200, "json", self.server.explorer.remove_class(query["name"])
        if path.startswith("/api/classes/"):
            return 200, "json", self.server.explorer.remove_class(unquote(path.rsplit("/", 1)[1]))
        raise FileNotFoundError(f"nothing at {path}")

    def _rank(self, key: str, query: dict[str, str]) -> dict[str, Any]:
        gamma = query.get("gamma", "")
        try:
            gamma_value = float(gamma) if gamma.strip() else None
        except ValueError as err:
            raise ApiError(400, f"gamma must be a number, got '{gamma}'") from err
        return self.server.explorer.rank(key, _int(query, "top_k", 5), query.get("classes", "all"),
                                         gamma_value)

    def _body(self) -> bytes:
        """The request body, refused (after reading it, so the answer arrives) when too large."""
        length = _int({"Content-Length": self.headers.get("Content-Length", "0")},
                      "Content-Length", 0)
        limit = self.server.max_upload
        if length > limit:
            if length <= DRAIN_LIMIT:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            self.close_connection = True
            raise ApiError(413, f"the upload is {length / 2**20:.1f} MB, more than the "
                                f"{limit / 2**20:.0f} MB accepted; send a smaller image")
        return self.rfile.read(length) if length > 0 else b""

    def _slot(self, network: bool = True):
        """Hold one of the server's places for work, or refuse the request at once; for network
        work, wait while the network is busy, giving the place up if the client leaves."""
        places = self.server.busy
        while not places.acquire(blocking=False):
            # a place held for a client that has left (a page that moved on while its image
            # decoded) comes free soon: the newest request waits for it rather than be refused
            if not any(h._client_left() for h in list(self.server.holders) if h is not self):
                busy = self.server.max_busy
                raise ApiError(503, f"the server is busy with {busy} request{'s' * (busy != 1)}; "
                                    f"try again in a moment")
            if self._client_left():
                raise ClientLeft
            time.sleep(WAIT_POLL)
        self.server.holders.add(self)
        try:
            while network and self.server.explorer.model_lock.locked():
                if self._client_left():  # a page that moved on: its place goes to others
                    raise ClientLeft
                time.sleep(WAIT_POLL)
        except BaseException:
            self.server.holders.discard(self)
            places.release()
            raise
        return _Release(places, self.server.holders, self)

    def _client_left(self) -> bool:
        """Whether the client closed its connection (it sends nothing more after its request)."""
        try:
            readable = select.select([self.connection], [], [], 0)[0]
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class _Release:
    def __init__(self, semaphore: threading.BoundedSemaphore, holders: set, holder: Handler):
        self.semaphore, self.holders, self.holder = semaphore, holders, holder

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        self.holders.discard(self.holder)
        self.semaphore.release()


def allowed_methods(path: str) -> tuple[str, ...]:
    """The methods ``path`` takes (GET and HEAD where no route says otherwise)."""
    for route, methods in ROUTES:
        if path == route or (route.endswith("/") and path.startswith(route)):
            return methods
    return READ_ONLY


def json_bytes(body: Any) -> bytes:
    """Strict JSON: a NaN or infinity (JSON has none) becomes null, with a warning in the log."""
    try:
        return json.dumps(body, allow_nan=False).encode()
    except ValueError:
        log.warning("an answer held a NaN or infinite number; sent as null")
        return json.dumps(_finite(body), allow_nan=False).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _int(query: dict[str, str], key: str, default: int) -> int:
    value = query.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ApiError(400, f"{key} must be a whole number, got '{value}'") from err


def make_server(checkpoint: str | Path, run: str | Path | None = None, host: str = "127.0.0.1",
                port: int = 8000, device: str = "cpu", max_upload: int = MAX_UPLOAD,
                max_pixels: int = MAX_PIXELS, max_busy: int = MAX_BUSY,
                add_classes: tuple[str | Path, ...] = ()) -> ExplorerServer:
    """Load the checkpoint and bind the server (port 0: any free port); not yet serving."""
    from mgmrn.inference.predictor import load

    predictor = load(checkpoint, device)
    for table in add_classes:
        predictor.add_classes_from_csv(table)
    explorer = Explorer(predictor, run, max_pixels)
    try:
        return ExplorerServer(explorer, host, port, max_upload, max_busy)
    except OSError as err:
        explorer.close()
        raise UsageError(f"cannot listen on {host}:{port} ({err.strerror}); choose another "
                         f"--port") from err

"""``mgmrn serve``: a local web page to classify images and browse a run (see :mod:`mgmrn.serve`)."""

from __future__ import annotations

import argparse
import logging

from mgmrn.commands import add_checkpoint_argument

HELP = "a local web page to classify images and browse a run"
DESCRIPTION = ("Serve a page (on 127.0.0.1 unless --host says otherwise) to classify images with a "
               "checkpoint, see attention maps, define new classes by their attributes and browse "
               "a run.")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--run", default=None, metavar="DIR",
                        help="a run folder to browse (metrics.jsonl, results.json)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--add-classes", action="append", metavar="CSV", default=[],
                        help="new classes to offer from the start (as for predict)")
    parser.add_argument("--max-upload-mb", type=float, default=16.0,
                        help="largest upload accepted, in MB (default 16)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C)."""
    from mgmrn.serve.server import make_server

    server = make_server(args.checkpoint, args.run, args.host, args.port, args.device,
                         int(args.max_upload_mb * 2**20), add_classes=tuple(args.add_classes))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this machine can use the page",
                    args.host)
    calibration = server.explorer.predictor.calibration
    log.info("calibration: gamma = %.3g (%s); the page can override it", calibration.gamma,
             calibration.source)
    print(f"mgmrn explorer at {server.url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.explorer.close()
    return 0

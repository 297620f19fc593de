"""``mgmrn serve``: a local web page to classify images, add classes and browse a run."""

from .app import ApiError, Explorer
from .server import ExplorerServer, make_server, serve_command

__all__ = ["ApiError", "Explorer", "ExplorerServer", "make_server", "serve_command"]

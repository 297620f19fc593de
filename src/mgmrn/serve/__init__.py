"""``mgmrn serve``: a local web page to classify images, add classes and browse a run."""

from mgmrn.serve.app import ApiError, Explorer
from mgmrn.serve.server import ExplorerServer, make_server

__all__ = ["ApiError", "Explorer", "ExplorerServer", "make_server"]

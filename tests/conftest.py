"""pytest's hook file: the path helpers of :mod:`tests.helpers`, where the test files find them."""

from __future__ import annotations

from .helpers import REPO, SHARED_DATA, load_script, needs_cxx, shared_data

__all__ = ["REPO", "SHARED_DATA", "load_script", "needs_cxx", "shared_data"]

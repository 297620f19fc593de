"""Shared test helpers: the location of ../shared/data and a skip marker for it."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# torch.compile generates C++ on the CPU
needs_cxx = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on the CPU needs a C++ compiler (apt-get install g++)")


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the real data files of ../shared/data are needed")
    return path


def load_script(relative: str):
    """A script of the repository (``benchmarks/x.py``, ``scripts/y.py``) imported by its path."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their defining module up
    spec.loader.exec_module(module)
    return module

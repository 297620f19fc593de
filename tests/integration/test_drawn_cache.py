"""A drawn set shared by several processes: never redrawn under a process reading it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mgmrn.config import PartsConfig
from mgmrn.data import DataError
from mgmrn.data.synthetic.parts import ensure_parts

from ..helpers import REPO, folder_bytes

TINY = dict(image_size=32, num_body_colors=3, num_wing_colors=3, num_beak_colors=3,
            num_unseen=5, images_per_class=2)

READER = """
import sys
from mgmrn.config import PartsConfig
from mgmrn.data.synthetic.parts import ensure_parts
ensure_parts(sys.argv[1], PartsConfig(**eval(sys.argv[2])))
print("ready", flush=True)
sys.stdin.read()  # reads the set until the test closes its input
"""


def readers(root, settings: dict, count: int) -> list[subprocess.Popen]:
    """Other processes, started together, that draw (or find) the set of ``settings`` at
    ``root`` and read it until their input is closed."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", READER, str(root), repr(settings)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(count)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"  # waits for it to hold the set
    return procs


def finish(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


@pytest.mark.skipif(sys.platform == "win32", reason="drawn sets are locked with flock")
def test_a_set_in_use_is_not_redrawn_with_other_settings_and_shared_with_the_same(tmp_path):
    root = tmp_path / "parts"
    # two runs needing the same new set: drawn once, shared
    procs = readers(root, TINY, 2)
    try:
        drawn = folder_bytes(root)
        assert drawn == folder_bytes(ensure_parts(tmp_path / "alone", PartsConfig(**TINY)))
        # the same settings here too: shared, nothing written
        assert ensure_parts(root, PartsConfig(**TINY)) == root
        # other settings: refused, the other processes' images stay as they were
        with pytest.raises(DataError) as err:
            ensure_parts(root, PartsConfig(**{**TINY, "seed": 1}))
        assert str(err.value).startswith(f"{root} (data.root) holds the parts set drawn with "
                                         f"other settings (its parts.json differs), and another "
                                         f"mgmrn process is reading it")
        assert folder_bytes(root) == drawn
    finally:
        for proc in procs:
            finish(proc)
    # once nobody else reads it, the set is redrawn for the new settings
    assert folder_bytes(ensure_parts(root, PartsConfig(**{**TINY, "seed": 1}))) != drawn

"""Atomic writes: old or new content, never torn; failed writes name the folder and free space."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from mgmrn.atomic import DiskWriteError, free_space, write_atomic
from mgmrn.report import write_json


def test_bytes_text_and_writer_functions(tmp_path):
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "sub" / "b.txt", "héllo\n")
    write_atomic(tmp_path / "c.pt", lambda f: torch.save({"w": torch.arange(3)}, f))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(3))
    write_json({"x": 1}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 1}


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "free some space"),
                                        (errno.EACCES, "make the folder writable")])
def test_failed_write_keeps_the_old_file_and_says_where_and_how_much_space(tmp_path, code, hint):
    path = tmp_path / "results.json"
    write_atomic(path, "old\n")

    def half_then_fail(f):
        f.write(b"new but cut")
        raise OSError(code, "simulated failure")

    with pytest.raises(DiskWriteError) as caught:
        write_atomic(path, half_then_fail)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and f"'{tmp_path}'" in message
    assert "simulated failure" in message and hint in message
    assert free_space(tmp_path) in message and " free of " in message
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_free_space_of_a_folder_not_made_yet(tmp_path):
    assert free_space(tmp_path / "not" / "yet") == free_space(tmp_path)

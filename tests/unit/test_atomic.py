"""Atomic writes: old or new content, never torn; failed writes name the folder and free space."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from mgmrn.io.atomic import DiskWriteError, free_space, remove_stale_temporaries, write_atomic


def test_bytes_text_and_writer_functions(tmp_path):
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "sub" / "b.txt", "héllo\n")
    write_atomic(tmp_path / "c.pt", lambda f: torch.save({"w": torch.arange(3)}, f))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(3))


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


class _FillsUp:
    """A file on a disk that fills up after ``room`` bytes."""

    def __init__(self, file, room: int):
        self._file, self.room = file, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def test_torch_save_on_a_full_disk_names_the_file_the_reason_and_the_free_space(tmp_path,
                                                                                monkeypatch):
    """torch.save swallows the OSError of a failed write and raises RuntimeError('enforce
    fail ...'): the message still says what happened."""
    path = tmp_path / "last.pt"
    write_atomic(path, b"old")
    real_fdopen = os.fdopen
    with monkeypatch.context() as patch:
        patch.setattr(os, "fdopen", lambda *a, **k: _FillsUp(real_fdopen(*a, **k), 10_000))
        with pytest.raises(DiskWriteError) as caught:
            write_atomic(path, lambda f: torch.save({"w": torch.zeros(100_000)}, f))
    message = str(caught.value)
    assert message.startswith(f"cannot write '{path}': No space left on device (")
    assert " free of " in message and message.endswith("free some space")
    assert "enforce fail" not in message
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]

    def fails(f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2\nmore")

    with pytest.raises(DiskWriteError, match=r"cannot write '.*last.pt': the writer failed: "
                                             r"\[enforce fail .* unexpected pos 1 vs 2 \(.* free of"):
        write_atomic(path, fails)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_written_with_the_users_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "config.yaml").stat().st_mode) == mode


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".last.pt.k2j3h4.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "last.pt").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_text("not ours: not hidden")
    assert remove_stale_temporaries(tmp_path) == [tmp_path / ".last.pt.k2j3h4.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp"]

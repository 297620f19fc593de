"""metrics.jsonl: whole lines only; a resumed run replaces the epochs it redoes."""

from __future__ import annotations

import errno
import json
import os

import pytest

from mgmrn.io.atomic import DiskWriteError
from mgmrn.training.metrics_log import MetricsLog, read_metrics


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_appends_one_line_per_record(tmp_path):
    log = MetricsLog(tmp_path, enabled=True)
    log.write({"epoch": 0, "loss": 1.5})
    log.write({"epoch": 1, "loss": 1.0})
    assert lines(tmp_path / "metrics.jsonl") == [{"epoch": 0, "loss": 1.5},
                                                 {"epoch": 1, "loss": 1.0}]
    MetricsLog(tmp_path / "other", enabled=False).write({"epoch": 0})
    assert not (tmp_path / "other").exists()  # non-main processes write nothing


def test_resume_drops_a_torn_line_and_the_epochs_it_redoes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "loss": 3.0}\n{"epoch": 1, "loss": 2.0}\n'
                    '{"epoch": 2, "loss": 1.0}\n{"epoch": 3, "lo')
    assert [r["epoch"] for r in read_metrics(path)] == [0, 1, 2]  # a reader skips the torn line
    log = MetricsLog(tmp_path, enabled=True, resume_epoch=2)
    assert lines(path) == [{"epoch": 0, "loss": 3.0}, {"epoch": 1, "loss": 2.0}]
    log.write({"epoch": 2, "loss": 0.5})
    assert [r["epoch"] for r in lines(path)] == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_resume_with_nothing_to_drop_leaves_the_file_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n')
    before = os.stat(path).st_ino
    MetricsLog(tmp_path, enabled=True, resume_epoch=1)
    assert os.stat(path).st_ino == before and path.read_text() == '{"epoch": 0}\n'


def test_full_disk_while_appending_is_one_line_naming_the_file(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path, enabled=True)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(DiskWriteError, match="No space left on device") as caught:
        log.write({"epoch": 0})
    assert "metrics.jsonl" in str(caught.value) and "free of" in str(caught.value)

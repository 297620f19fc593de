"""``metrics.jsonl``: one JSON line per epoch, crash-safe, mirrored to TensorBoard when installed.

Each line is appended by one ``write`` call and synced to disk, so a kill leaves either the whole
line or none of it. A line torn anyway (a full disk mid-write, a power cut) is dropped when the run
is resumed, together with the records of the epochs the resumed run redoes, so that every epoch
appears once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from mgmrn.io.atomic import write_atomic, write_error

log = logging.getLogger(__name__)


class MetricsLog:
    """Appends one JSON line per epoch and mirrors scalars to TensorBoard when installed.

    Args:
        folder: the run folder; the log is ``folder/metrics.jsonl``.
        enabled: False on processes that do not write files (non-zero ranks).
        resume_epoch: the first epoch a resumed run trains: records of it and later epochs, and
            a torn last line, are removed first. None for a new run.
    """

    def __init__(self, folder: Path, enabled: bool, resume_epoch: int | None = None):
        self.path = Path(folder) / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if resume_epoch is not None and self.path.exists():
            self._truncate(resume_epoch)
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the events of redone epochs from the TensorBoard log as well
            self.writer = SummaryWriter(str(Path(folder) / "tensorboard"), purge_step=resume_epoch)
        except ImportError:
            log.debug("tensorboard is not installed; metrics go to metrics.jsonl only")

    def _truncate(self, resume_epoch: int) -> None:
        text = self.path.read_text()
        kept, dropped = [], 0
        for line in text.splitlines(keepends=True):
            record = _parse(line)
            if record is None or record.get("epoch", -1) >= resume_epoch:
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            write_atomic(self.path, "".join(kept))
            log.info("%s: removed %d line(s) of epochs from %d on (redone) or torn by a crash",
                     self.path, dropped, resume_epoch)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        data = (json.dumps(record) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                while data:  # a regular file takes it all at once unless the disk is full
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise write_error(self.path, err) from err
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()


def _parse(line: str) -> dict | None:
    """The record of a complete line, or None for a torn one (no newline, or not JSON)."""
    if not line.endswith("\n"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_metrics(path: str | Path) -> list[dict]:
    """The complete records of a ``metrics.jsonl``, skipping a torn last line."""
    with open(path) as f:
        return [r for r in map(_parse, f) if r is not None]

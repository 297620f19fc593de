"""Checkpoint layout, resuming states, and one-line errors for damaged files."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
import torch
from torch import nn

from mgmrn.checkpoint import (
    CheckpointError,
    build_state,
    load_checkpoint,
    load_weights,
    random_states,
    restore_state,
    save_atomic,
)


def parts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def trained_state(mid_epoch=None) -> dict:
    model, optimizer, scheduler = parts()
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return build_state(model, optimizer, scheduler, None, {"seed": 1}, {"name": "x"}, epoch=2,
                       best={"gzsl_h": 3.0}, mid_epoch=mid_epoch)


def test_state_round_trip_through_a_file(tmp_path):
    states = [random_states(), random_states()]
    torch.rand(3)  # move on, so that restoring is seen
    mid = {"epoch": 3, "batches": 7, "loss_sums": torch.tensor([1.5, 2.0]), "random": states}
    save_atomic(trained_state(mid), tmp_path / "last.pt")
    saved = load_checkpoint(tmp_path / "last.pt")
    model, optimizer, scheduler = parts()
    point = restore_state(saved, model, optimizer, scheduler, None, tmp_path / "last.pt", rank=1)
    assert (point.epoch, point.batches, point.loss_sums) == (3, 7, [1.5, 2.0])
    assert point.best == {"gzsl_h": 3.0}
    assert torch.equal(point.random["torch"], states[1]["torch"])
    for name, tensor in saved["model"].items():
        assert torch.equal(model.state_dict()[name], tensor)
    assert scheduler.last_epoch == 1 and optimizer.state_dict()["state"]  # momentum restored
    # at an epoch boundary the run continues with the next epoch
    boundary = restore_state(trained_state(), *parts(), None, "x.pt")
    assert (boundary.epoch, boundary.batches, boundary.random) == (3, 0, None)


def test_resuming_a_file_that_is_not_a_training_checkpoint_names_what_it_lacks():
    with pytest.raises(CheckpointError, match="lacks 'optimizer', 'scheduler'"):
        restore_state({"model": {}, "config": {}, "epoch": 0, "best": {}, "random": {}},
                      *parts(), None, "w.pt")


def test_weights_of_another_model_are_one_line():
    model, _, _ = parts()
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(CheckpointError) as caught:
        load_weights(model, other.state_dict(), "o.pt")
    assert "\n" not in str(caught.value) and "size mismatch for 0.weight" in str(caught.value)
    with pytest.raises(CheckpointError, match="1 unexpected weights .e.g. 'extra'."):
        load_weights(model, {**model.state_dict(), "extra": torch.ones(1)}, "o.pt")


class Code:
    def __reduce__(self):
        return (print, ("code ran",))


def damaged(kind: str, good: bytes) -> bytes:
    if kind == "empty":
        return b""
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "another format":
        return b"<html>not found</html>" * 50
    if kind == "code":
        buffer = io.BytesIO()
        torch.save({"model": Code(), "config": {}}, buffer)
        return buffer.getvalue()
    # a flipped byte inside the tensor data: torch.load alone would return wrong weights
    data = bytearray(good)
    info = next(i for i in zipfile.ZipFile(io.BytesIO(good)).infolist()
                if i.filename.endswith("data/0"))
    name_length, extra_length = struct.unpack_from("<HH", good, info.header_offset + 26)
    data[info.header_offset + 30 + name_length + extra_length + 10] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("kind, words", [
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is truncated"),
    ("another format", "is not a PyTorch checkpoint"),
    ("code", "cannot be loaded safely: it refers to code"),
    ("flipped byte", "do not match their stored checksum"),
])
def test_damaged_files_get_one_line_naming_the_file_and_the_damage(tmp_path, kind, words):
    good = tmp_path / "good.pt"
    save_atomic({"model": {"w": torch.arange(1000.0)}, "config": {}}, good)
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.arange(1000.0))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(damaged(kind, good.read_bytes()))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(bad)
    message = str(caught.value)
    assert message.startswith(f"checkpoint '{bad}' ") and words in message and "\n" not in message

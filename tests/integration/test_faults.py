"""Faults: a process killed while it saves, full disks, broken checkpoints, bad configs."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mgmrn.checkpoint import load_checkpoint
from mgmrn.cli import main

from ..helpers import tiny

SAVER = """
import sys, torch
from mgmrn.checkpoint import save_atomic
path = sys.argv[1]
for i in range(1_000_000):
    save_atomic({"model": {"w": torch.full((4_000_000,), float(i))}, "config": {"i": i}}, path)
"""


def test_sigkill_at_any_moment_of_saving_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    for delay in (0.05, 0.13, 0.21, 0.34, 0.55):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)])
        while not path.exists():
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)
        i = ckpt["config"]["i"]
        assert torch.equal(ckpt["model"]["w"], torch.full((4_000_000,), float(i)))


def test_training_killed_while_saving_resumes_from_what_is_left(tmp_path):
    args = tiny(tmp_path, "run", "train.epochs=40", "train.eval_every=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mgmrn", "train", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 300
    caught_mid_save = False
    while time.time() < deadline and proc.poll() is None:
        names = os.listdir(folder) if folder.exists() else []
        if any(n.endswith(".tmp") for n in names) and "last.pt" in names:
            caught_mid_save = True
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(f"\nkilled {'while writing a checkpoint' if caught_mid_save else 'between saves'}")
    left = load_checkpoint(folder / "last.pt")
    assert 0 <= left["epoch"] < 39
    assert main(["train", "--resume", "--resume-changes",  # a shorter schedule: said so
                 *tiny(tmp_path, "run", "train.epochs=" + str(left["epoch"] + 2),
                       "train.eval_every=0")]) == 0
    resumed = load_checkpoint(folder / "last.pt")
    assert resumed["epoch"] == left["epoch"] + 1
    assert json.loads((tmp_path / "run" / "results.json").read_text())["epochs"] == left["epoch"] + 2


@pytest.mark.parametrize("override, message", [
    ("data.ways=20", "data.ways"),
    ("data.shots=50", "data.shots"),
])
def test_sampler_that_cannot_fit_the_data_is_refused_before_training(tmp_path, capsys, override,
                                                                      message):
    assert main(["train", *tiny(tmp_path, "run", override)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_cuda_graphs_asked_for_on_the_cpu_are_refused_before_training(tmp_path, capsys):
    assert main(["train", *tiny(tmp_path, "run", "train.cuda_graphs=true",
                                "train.schedule=alternating")]) == 2
    err = capsys.readouterr().err
    assert "train.cuda_graphs" in err
    assert "need a CUDA device" in err and "need train.schedule=fused" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert main(["train", *tiny(tmp_path, "run2", "eval.cuda_graphs=true")]) == 2
    err = capsys.readouterr().err
    assert "eval.cuda_graphs" in err and "need a CUDA device" in err
    assert not (tmp_path / "run2" / "checkpoints").exists()


def test_checkpoint_for_another_attribute_count_is_refused(tmp_path, capsys):
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1")]) == 0
    other = tiny(tmp_path, "x", "data.demo.num_patterns=3", f"data.root={tmp_path / 'demo3'}")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    code = main(["eval", "--checkpoint", str(ckpt),
                 *[o for o in other if o.startswith(("data.root", "data.demo.num_patterns"))]])
    assert code == 2
    err = capsys.readouterr().err
    assert "made for 8 attributes" in err and "has 9 attributes" in err


def _break_one_training_image(tmp_path) -> str:
    """Draw the tiny demo set, then truncate one seen-class image."""
    from mgmrn.config import load_config
    from mgmrn.data import build_data

    cfg = load_config("demo", tiny(tmp_path, "probe"))
    data = build_data(cfg.data)
    path = data.train.paths[0]
    with open(path, "r+b") as f:
        f.truncate(40)
    return path


def test_image_that_breaks_in_a_worker_is_a_clear_error(tmp_path, capsys):
    path = _break_one_training_image(tmp_path)
    args = tiny(tmp_path, "run", "data.num_workers=1", "train.epochs=1",
                "data.sampler=random", "data.ways=14", "data.shots=4")
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert f"cannot read image {path}" in err and "data.skip_bad_images=true" in err
    assert "Traceback" not in err


def test_broken_image_found_before_training_or_skipped(tmp_path, capsys, caplog):
    path = _break_one_training_image(tmp_path)
    checked = [a for a in tiny(tmp_path, "run", "train.epochs=1") if a != "data.verify_images=false"]
    assert main(["train", *checked]) == 2
    assert path in capsys.readouterr().err
    assert main(["train", *checked, "data.skip_bad_images=true"]) == 0
    assert any(path in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_full_disk_stops_training_with_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys,
                                                                              monkeypatch):
    args = tiny(tmp_path, "run", "train.eval_every=0")  # two epochs
    real_save = torch.save

    def save_until_the_disk_fills(obj, f, *rest, **kwargs):
        if obj["epoch"] == 1:
            f.write(b"the first bytes fit")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *rest, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save_until_the_disk_fills)
        assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("mgmrn train")]
    folder = tmp_path / "run" / "checkpoints"
    assert len(said) == 1 and "Traceback" not in err
    assert "No space left on device" in said[0] and "free of" in said[0]
    assert f"in '{folder}'" in said[0] and "--resume" in said[0]
    assert load_checkpoint(folder / "last.pt")["epoch"] == 0  # the previous one, intact
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]  # no temporary file left
    # space freed: the resumed run redoes epoch 1, which metrics.jsonl then holds once
    assert main(["train", "--resume", *args]) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    assert load_checkpoint(folder / "last.pt")["epoch"] == 1


def test_broken_checkpoints_get_one_line_from_every_command(tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), "red").save(image)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.ones(1000)}, "config": {}}, buffer)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(buffer.getvalue()[:3000])  # a copy cut short
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    foreign = tmp_path / "page.pt"
    foreign.write_text("<html>Not found</html>\n")
    cases = [
        (["train", "--resume", *tiny(tmp_path, "run")], last, "is truncated"),
        (["eval", "--checkpoint", str(foreign)], foreign, "is not a PyTorch checkpoint"),
        (["predict", "--checkpoint", str(empty), str(image)], empty, "is empty (0 bytes)"),
    ]
    for argv, path, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        said = [line for line in err.splitlines() if line.startswith("mgmrn ")]
        assert said == [line for line in err.splitlines() if line.strip()], err  # nothing else
        assert len(said) == 1 and "Traceback" not in err
        assert said[0].startswith(f"mgmrn {argv[0]}: error: checkpoint '{path}' {words}")

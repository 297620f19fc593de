"""Two processes on the CPU (gloo) through torchrun: identical replicas, exact evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mgmrn.checkpoint import load_checkpoint
from mgmrn.cli import main
from mgmrn.data.samplers import ShardSampler

from ..helpers import tiny

WORKER = Path(__file__).with_name("_ddp_worker.py")
ELASTIC_WORKER = Path(__file__).with_name("_elastic_worker.py")
needs_dist = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def overrides(tmp_path, run: str) -> list[str]:
    return tiny(tmp_path, run, "device=cpu", "train.epochs=2", "data.test_batch_size=5")


def torchrun(*args: str, restarts: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           f"--max-restarts={restarts}", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A two-process run of two epochs, never interrupted; each rank's final weights kept."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    done = torchrun(str(WORKER), str(tmp_path), *overrides(tmp_path, "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path


@needs_dist
def test_two_processes_hold_identical_weights_and_evaluate_like_one(ddp_run):
    tmp_path = ddp_run
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["world_size"] == 2
    for name, tensor in rank0["model"].items():
        assert torch.equal(tensor, rank1["model"][name]), name
    # only the main process writes the run folder
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["czsl_acc"] == rank0["czsl_acc"] == rank1["czsl_acc"]
    # the gathered evaluation (shards of 14 and 15 images in batches of 5) equals one process's
    out = tmp_path / "single.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "ddp" / "checkpoints" / "last.pt"),
                 "--out", str(out)]) == 0
    single = json.loads(out.read_text())
    assert single["czsl_acc"] == pytest.approx(results["czsl_acc"])
    assert single["gzsl_h"] == pytest.approx(results["gzsl_h"])
    assert single["data"] == results["data"]


@needs_dist
def test_elastic_restarts_resume_by_themselves_and_end_where_an_uninterrupted_run_does(ddp_run):
    """One worker stops on SIGTERM (mid-epoch checkpoint), later one is SIGKILLed: torchrun
    restarts the group twice; each time training resumes from the latest checkpoint."""
    tmp_path = ddp_run
    done = torchrun(str(ELASTIC_WORKER), *overrides(tmp_path, "elastic"), restarts=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 sends itself SIGTERM at epoch 0" in done.stderr
    assert "rank 1 sends itself SIGKILL at epoch 1" in done.stderr
    # both ranks stopped after the same step; rank 0 says so
    assert "stopped by SIGTERM to another process in epoch 1/2 after batch 2/3" in done.stderr
    assert "resuming from" in done.stderr and "at epoch 1, batch 3" in done.stderr
    straight = torch.load(tmp_path / "rank0.pt", weights_only=True)["model"]
    final = load_checkpoint(tmp_path / "elastic" / "checkpoints" / "last.pt")
    assert final["epoch"] == 1 and "mid_epoch" not in final
    for name, tensor in straight.items():
        assert torch.equal(tensor, final["model"][name]), name
    lines = (tmp_path / "elastic" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]


def test_evaluation_shards_cover_every_image_once():
    for n in (0, 1, 7, 29):
        shards = [list(ShardSampler(n, rank, 3)) for rank in range(3)]
        assert sorted(i for shard in shards for i in shard) == list(range(n))

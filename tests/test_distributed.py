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

from mgmrn.cli import main
from mgmrn.data.samplers import ShardSampler

from .test_main_job import tiny

WORKER = Path(__file__).with_name("_ddp_worker.py")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_hold_identical_weights_and_evaluate_like_one(tmp_path):
    overrides = tiny(tmp_path, "ddp", "device=cpu", "train.epochs=1", "data.test_batch_size=5")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(tmp_path), *overrides]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
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


def test_evaluation_shards_cover_every_image_once():
    for n in (0, 1, 7, 29):
        shards = [list(ShardSampler(n, rank, 3)) for rank in range(3)]
        assert sorted(i for shard in shards for i in shard) == list(range(n))

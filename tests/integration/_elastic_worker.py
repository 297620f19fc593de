"""Run by test_distributed.py under torchrun: ``mgmrn train`` whose rank 1 fails on purpose.

Attempt 0: rank 1 gets SIGTERM in epoch 0 (both ranks stop together, write a mid-epoch
checkpoint and exit with the requeue status). Attempt 1: rank 1 is SIGKILLed in epoch 1. torchrun
restarts the group after each, and ``train.auto_resume`` continues from the latest checkpoint.

Usage: python -m torch.distributed.run --max-restarts=2 --nproc_per_node=2
       tests/integration/_elastic_worker.py key=value...
"""

import os
import signal
import sys

from mgmrn.cli import main
from mgmrn.data import samplers

# torchrun attempt -> (epoch, batch index, signal): rank 1 signals itself as it draws that batch
FAULTS = {0: (0, 1, signal.SIGTERM), 1: (1, 1, signal.SIGKILL)}
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
original = samplers._SeededBatchSampler.batch


def batch(self, epoch, index):
    fault = FAULTS.get(attempt)
    if self.rank == 1 and fault is not None and (epoch, index) == fault[:2]:
        print(f"attempt {attempt}: rank 1 sends itself {fault[2].name} at epoch {epoch}, batch "
              f"{index}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), fault[2])
    return original(self, epoch, index)


samplers._SeededBatchSampler.batch = batch
sys.exit(main(["train", "--config", "demo", *sys.argv[1:]]))  # the recipe of _ddp_worker.py

"""Run by test_distributed.py under torchrun: train through the runner, keep each rank's weights.

Usage: python -m torch.distributed.run --nproc_per_node=2 tests/integration/_ddp_worker.py OUT key=value...
"""

import os
import sys

import torch

from mgmrn.config import load_config
from mgmrn.training import runner

out, overrides = sys.argv[1], sys.argv[2:]
original = runner.evaluate_model


def evaluate_and_keep(model, data, cfg, device, precision, env):
    results = original(model, data, cfg, device, precision, env)
    net = model.module if hasattr(model, "module") else model
    torch.save({"model": net.state_dict(), "czsl_acc": results.czsl_acc,
                "gzsl_h": results.gzsl_h, "world_size": env.world_size},
               os.path.join(out, f"rank{env.rank}.pt"))
    return results


runner.evaluate_model = evaluate_and_keep
runner.train(load_config("demo", overrides))

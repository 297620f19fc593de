"""Where a fused training step spends its time: wall time per step with and without the CUDA
graph, the device's busy time per step, and the torch profiler's top operators.

The busy time is the sum of the kernels' times in an eager step. Eager wall time well above it
means the host cannot launch the kernels as fast as the device runs them; the graph's wall time
shows how much of that gap the replay closes.

    python benchmarks/profile_step.py                     # CUDA if present, full network
    python benchmarks/profile_step.py --no-channels-last --resize-before-projection
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from mgmrn.config import ModelConfig
from mgmrn.engine import GraphedStep, Precision, train_one_epoch
from mgmrn.losses import ZSLCriterion
from mgmrn.models import build_model


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--image-size", type=int, default=448 if cuda else 224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--resize-before-projection", action="store_true")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = gpu
    cfg = ModelConfig(backbone=args.backbone, pretrained=False,
                      resize_before_projection=args.resize_before_projection)
    model = build_model(cfg, torch.randn(312, 300)).to(device)
    precision = Precision(dtype=torch.bfloat16 if gpu else None,
                          channels_last=gpu and not args.no_channels_last)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, fused=True if gpu else None)
    attrs = torch.rand(150, 312, device=device)
    batch = [(torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device),
              torch.randint(0, 150, (args.batch_size,), device=device))]

    def steps(n: int, graphed=None) -> float:
        """Milliseconds per step over ``n`` steps."""
        if gpu:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_one_epoch(model, batch * n, opt, ZSLCriterion(attrs, 0.1), device, 0, precision=precision,
                        show_progress=False, graphed=graphed)
        if gpu:
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1e3 / n

    steps(3)
    timing = {"eager_ms_per_step": round(steps(args.steps), 2)}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        steps(3)
    events = prof.key_averages()
    if gpu:
        # kernels only: an operator's own device time repeats its kernels' times
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.is_user_annotation]
        busy = sum(e.self_device_time_total for e in kernels) / 3 / 1e3
        timing["device_busy_ms_per_step"] = round(busy, 2)
        graphed = GraphedStep(model, ZSLCriterion(attrs, 0.1), precision, device)
        steps(graphed.warmup + 1, graphed)
        timing["graphed_ms_per_step"] = round(steps(args.steps, graphed), 2)
    key = "self_cuda_time_total" if gpu else "self_cpu_time_total"
    print(events.table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    print(json.dumps({"batch_size": args.batch_size, "image_size": args.image_size, **timing}))


if __name__ == "__main__":
    main()

"""Where a fused training step spends its time: the torch profiler's top operators.

    python benchmarks/profile_step.py                     # CUDA if present, full network
    python benchmarks/profile_step.py --no-channels-last --resize-before-projection
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from mgmrn.config import ModelConfig
from mgmrn.engine import Precision, train_one_epoch
from mgmrn.models import build_model


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--image-size", type=int, default=448 if cuda else 224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--resize-before-projection", action="store_true")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    cfg = ModelConfig(backbone=args.backbone, pretrained=False,
                      resize_before_projection=args.resize_before_projection)
    model = build_model(cfg, torch.randn(312, 300)).to(device)
    precision = Precision(dtype=torch.bfloat16 if gpu else None,
                          channels_last=gpu and not args.no_channels_last)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    attrs = torch.rand(150, 312, device=device)
    batch = [(torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device),
              torch.randint(0, 150, (args.batch_size,), device=device))]
    train_one_epoch(model, batch * 3, opt, attrs, 0.1, device, 0, precision=precision,
                    show_progress=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        train_one_epoch(model, batch * 3, opt, attrs, 0.1, device, 0, precision=precision,
                        show_progress=False)
    key = "self_cuda_time_total" if gpu else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()

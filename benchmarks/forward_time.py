"""Parameter count and forward time of one image through the full network.

    python benchmarks/forward_time.py                      # ResNet-101, 448 px, CPU
    python benchmarks/forward_time.py --device cuda --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mgmrn.config import ModelConfig
from mgmrn.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--attributes", type=int, default=312)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = torch.device(args.device)
    model = build_model(ModelConfig(backbone=args.backbone, pretrained=False),
                        torch.randn(args.attributes, 300),
                        image_size=args.image_size).to(device).eval()
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    attrs = torch.rand(args.classes, args.attributes, device=device)
    times = []
    with torch.no_grad():
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            model(images, attrs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first pass warms up
                times.append(time.perf_counter() - start)
    print(json.dumps({
        "backbone": args.backbone, "image_size": args.image_size, "batch_size": args.batch_size,
        "device": args.device, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "forward_seconds_median": round(sorted(times)[len(times) // 2], 4),
    }))


if __name__ == "__main__":
    main()

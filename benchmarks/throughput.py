"""Training and inference throughput of the two schedules, with operation counts.

Times, after warm-up, training steps and inference on synthetic images already on the device
(so that data loading is not measured) for:

- ``alternating_fp32``: the published schedule (a full forward, backward and step per level),
  fp32, no channels_last;
- ``fused_fast``: one forward and one step on the summed losses, with what ``mgmrn train`` turns
  on by default on CUDA: bf16 autocast, channels_last and CUDA-graph replay of each step (fp32
  and eager on the CPU, where these do not pay);
- ``fused_eager`` (CUDA only, on request): ``fused_fast`` without the CUDA graph, to show what the
  graph adds.

cuDNN autotuning (``torch.backends.cudnn.benchmark``) is on for every mode on CUDA, as in
``mgmrn train``. On CUDA ``peak_memory_mb`` is the most memory allocated from the start of a mode
(warm-up, autotuning workspaces and the graph capture included); ``steady_peak_memory_mb`` counts
only after warm-up, where a replayed graph reuses memory allocated at its capture.

Prints one JSON object per mode, then one summary object with the measured speed-up beside the
operation-count ratio ``(9B + 5H) / (3B + 3H)`` (B: backbone, H: heads, forward FLOPs per image;
backward counted as twice the forward) and the ratio of FLOPs counted in one real training step of
each schedule. Defaults: the full network at 448 px, batch 16 on CUDA;
a small backbone at 128 px, batch 16 on the CPU.

    python benchmarks/throughput.py                       # picks the device
    python benchmarks/throughput.py --device cpu --backbone resnet18 --image-size 128
    python benchmarks/throughput.py --resize-before-projection
    python benchmarks/throughput.py --modes alternating_fp32,fused_eager,fused_fast
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mgmrn.config import ModelConfig
from mgmrn.engine import GraphedStep, Precision, predict_logits, train_one_epoch
from mgmrn.losses import ZSLCriterion
from mgmrn.models import build_model

CUB_EPOCHS, CUB_BATCHES, CUB_BATCH, CUB_TEST_IMAGES = 30, 300, 16, 4731


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--backbone", default=None, help="default resnet101 (CUDA), resnet18 (CPU)")
    p.add_argument("--image-size", type=int, default=None, help="default 448 (CUDA), 128 (CPU)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dim", type=int, default=None, help="D; default 2048 (CUDA), 64 (CPU)")
    p.add_argument("--attn-dim", type=int, default=None, help="M; default 1024 (CUDA), 32 (CPU)")
    p.add_argument("--attributes", type=int, default=312)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--steps", type=int, default=None, help="timed steps; default 20 (CUDA) / 15 (CPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--resize-before-projection", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the fused model")
    p.add_argument("--no-channels-last", action="store_true",
                   help="keep NCHW in the fused mode on CUDA")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="run the fused_fast steps eagerly")
    p.add_argument("--modes", default="alternating_fp32,fused_fast",
                   help="comma-separated: alternating_fp32, fused_fast, fused_eager")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    args.backbone = args.backbone or ("resnet101" if gpu else "resnet18")
    args.image_size = args.image_size or (448 if gpu else 128)
    args.dim = args.dim or (2048 if gpu else 64)
    args.attn_dim = args.attn_dim or (1024 if gpu else 32)
    args.steps = args.steps or (20 if gpu else 15)
    return args


def build(args, device):
    cfg = ModelConfig(backbone=args.backbone, pretrained=False, dim=args.dim,
                      attn_dim=args.attn_dim,
                      resize_before_projection=args.resize_before_projection)
    torch.manual_seed(0)
    model = build_model(cfg, torch.randn(args.attributes, 300)).to(device)
    return model, torch.rand(args.classes, args.attributes, device=device)


def count_flops(model, attrs, args, device) -> tuple[float, float]:
    """Forward FLOPs per image of the backbone (B) and of the heads (H), in GFLOP."""
    images = torch.randn(1, 3, args.image_size, args.image_size, device=device)
    model.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as total:
            model(images, attrs)
        with FlopCounterMode(display=False) as backbone:
            model.backbone(images)
    b = backbone.get_total_flops() / 1e9
    return b, total.get_total_flops() / 1e9 - b


def count_step_flops(args, device, schedule: str) -> float:
    """FLOPs of one training step per image, forward and backward, as actually run."""
    model, attrs = build(args, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    batch = [(torch.randn(2, 3, args.image_size, args.image_size, device=device),
              torch.randint(0, args.classes, (2,), device=device))]
    with FlopCounterMode(display=False) as counter:
        train_one_epoch(model, batch, opt, ZSLCriterion(attrs, 0.1), device, 0, schedule, show_progress=False)
    return counter.get_total_flops() / 2 / 1e9


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(mode: str, args, device) -> dict:
    model, attrs = build(args, device)
    fast = mode in ("fused_fast", "fused_eager") and device.type == "cuda"
    precision = Precision(dtype=torch.bfloat16 if fast else None,
                          channels_last=fast and not args.no_channels_last)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runner = torch.compile(model) if args.compile and fast else model
    schedule = "alternating" if mode.startswith("alternating") else "fused"
    graphs = fast and mode == "fused_fast" and not args.compile and not args.no_cuda_graphs
    graphed = GraphedStep(runner, ZSLCriterion(attrs, 0.1), precision, device) if graphs else None
    # as in mgmrn train: one fused update kernel on CUDA, for the fused schedule
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9,
                          fused=True if device.type == "cuda" and schedule == "fused" else None)
    batch = [(torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device),
              torch.randint(0, args.classes, (args.batch_size,), device=device))]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train(steps):
        sync(device)
        start = time.perf_counter()
        train_one_epoch(runner, batch * steps, opt, ZSLCriterion(attrs, 0.1), device, 0, schedule,
                        precision=precision, show_progress=False, graphed=graphed)
        sync(device)
        return time.perf_counter() - start

    train(args.warmup + (graphed.warmup + 1 if graphed else 0))  # the capture is warm-up too
    warm_peak = None
    if device.type == "cuda":
        # cuDNN's autotuning tries algorithms with large workspaces during warm-up only
        warm_peak = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    train_rate = args.steps * args.batch_size / train(args.steps)

    def infer(steps):
        sync(device)
        start = time.perf_counter()
        predict_logits(runner, batch * steps, attrs, device, precision, show_progress=False)
        sync(device)
        return time.perf_counter() - start

    infer(args.warmup)
    infer_rate = args.steps * args.batch_size / infer(args.steps)
    if device.type == "cuda":
        steady = torch.cuda.max_memory_allocated(device) / 2**20
        peak, extra = max(warm_peak, steady), {"steady_peak_memory_mb": round(steady, 1)}
    else:
        peak, extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, {}
    return {
        "mode": mode, "device": _device_name(device), "backbone": args.backbone,
        "image_size": args.image_size, "batch_size": args.batch_size,
        "schedule": schedule, "amp": "bf16" if fast else "none",
        "channels_last": precision.channels_last, "cuda_graphs": graphs,
        "compile": args.compile and fast,
        "resize_before_projection": args.resize_before_projection,
        "train_images_per_s": round(train_rate, 2), "infer_images_per_s": round(infer_rate, 2),
        "peak_memory_mb": round(peak, 1), **extra,
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
    }


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model, attrs = build(args, device)
    b, h = count_flops(model, attrs, args, device)
    del model
    results = {}
    for mode in args.modes.split(","):
        results[mode] = run_mode(mode, args, device)
        print(json.dumps(results[mode]), flush=True)
    summary = {
        "backbone_gflop_per_image": round(b, 2), "heads_gflop_per_image": round(h, 2),
        "op_count_ratio": round((9 * b + 5 * h) / (3 * b + 3 * h), 3),
    }
    # the formula assumes every level backpropagates through the whole backbone; with the
    # stop-gradient the fine and middle levels do not, so the counted ratio is lower
    alternating, fused = (count_step_flops(args, device, s) for s in ("alternating", "fused"))
    summary["op_count_ratio_counted"] = round(alternating / fused, 3)
    if {"alternating_fp32", "fused_fast"} <= results.keys():
        fused, alt = results["fused_fast"], results["alternating_fp32"]
        summary["train_speedup"] = round(fused["train_images_per_s"] / alt["train_images_per_s"], 3)
        summary["speedup_over_op_ratio"] = round(summary["train_speedup"] / summary["op_count_ratio"], 3)
        summary["speedup_over_counted_ratio"] = round(
            summary["train_speedup"] / summary["op_count_ratio_counted"], 3)
        images = CUB_EPOCHS * CUB_BATCHES * CUB_BATCH
        for mode, r in results.items():
            hours = (images / r["train_images_per_s"]
                     + CUB_EPOCHS * CUB_TEST_IMAGES / r["infer_images_per_s"]) / 3600
            summary[f"cub_recipe_hours_{mode}"] = round(hours, 2)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

"""Training and inference throughput of the two schedules, with operation counts and rates.

Times, after warm-up, training steps and inference on synthetic images already on the device
(so that data loading is not measured) for:

- ``alternating_fp32``: the published schedule (a full forward, backward and step per level),
  fp32, no channels_last;
- ``fused_fast``: one forward and one step on the summed losses, with what ``mgmrn train`` turns
  on by default on CUDA: bf16 autocast, channels_last, CUDA-graph replay of each step and of
  evaluation batches (fp32 and eager on the CPU, where these do not pay);
- ``fused_regions``: ``fused_fast`` with each head module compiled in place (``compile_heads``),
  as ``mgmrn train train.compile=regions`` runs; its generated kernels replay inside the step's
  CUDA graph. The CPU runs it too, fp32 and without graphs, heads compiled, so that it can be
  tested there;
- ``fused_eager`` (CUDA only, on request): ``fused_fast`` without the CUDA graphs, to show what
  the graphs add.

cuDNN autotuning (``torch.backends.cudnn.benchmark``) is on for every mode on CUDA, as in
``mgmrn train``. On CUDA ``peak_memory_mb`` is the most memory allocated from the start of a mode
(warm-up, autotuning workspaces and the graph capture included); ``steady_peak_memory_mb`` counts
only after warm-up, where a replayed graph reuses memory allocated at its capture.

Inference runs through ``predict_logits``, as ``mgmrn eval`` does. Each call of it with CUDA
graphs captures its own graph, so the rate is then taken from the difference between a long and
a short call (the capture cancels out); ``infer_capture_ms`` is what a call costs beyond its
batches (null without graphs).

Achieved rates: ``train_tflops`` is the training rate times the FLOPs counted in one real
training step of the mode's schedule, per image (forward and backward, three of each for the
alternating schedule); ``infer_tflops`` the inference rate times the counted forward FLOPs
(backbone and heads). The ``*_peak_fraction`` fields divide them by the GPU's dense bf16
tensor-core peak (``peak_bf16_tflops``; ``peak_source`` says where it came from): looked up from
the device's name, or ``--peak-tflops``; null on the CPU or an unknown GPU without that flag. The
fp32 mode is measured against the same bf16 peak. On the CPU torch's FLOP counter has no formula
for the attention kernel, so the counts there leave the attention out.

Prints one JSON object per mode, then one summary object with the measured speed-up beside the
operation-count ratio ``(9B + 5H) / (3B + 3H)`` (B: backbone, H: heads, forward FLOPs per image;
backward counted as twice the forward) and the ratio of FLOPs counted in one real training step of
each schedule. Defaults: the full network at 448 px, batch 16 on CUDA;
a small backbone at 128 px, batch 16 on the CPU.

    python benchmarks/throughput.py                       # picks the device
    python benchmarks/throughput.py --device cpu --backbone resnet18 --image-size 128
    python benchmarks/throughput.py --resize-before-projection
    python benchmarks/throughput.py --modes alternating_fp32,fused_fast,fused_regions
    python benchmarks/throughput.py --peak-tflops 989.4   # a GPU the table does not know
    python benchmarks/throughput.py --device cpu --backbone resnet101 --image-size 448 \
        --dim 2048 --attn-dim 1024 --count-only           # the full network's FLOPs, no timing
    python benchmarks/throughput.py --device meta --backbone swin_tiny_patch4_window7_224 \
        --image-size 448 --dim 2048 --attn-dim 1024 --count-only   # the same, shapes only

Any backbone ``model.backbone`` takes runs (``--backbone-args`` gives its timm arguments as JSON).
``--count-only`` also prints the parameter counts; on ``--device meta`` it counts the forward
FLOPs from shapes alone (seconds for any size, the attention included) and leaves out the
training-step counts, which need real numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mgmrn.config import ModelConfig
from mgmrn.inference.scoring import predict_logits
from mgmrn.models import build_model, compile_heads
from mgmrn.precision import Precision
from mgmrn.training.engine import GraphedStep, train_one_epoch
from mgmrn.training.losses import ZSLCriterion

CUB_EPOCHS, CUB_BATCHES, CUB_BATCH, CUB_TEST_IMAGES = 30, 300, 16, 4731
MODES = ("alternating_fp32", "fused_fast", "fused_regions", "fused_eager")
GRAPHED_MODES = ("fused_fast", "fused_regions")

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s, keyed by a substring of
# torch.cuda.get_device_name(); the first key found in the name wins, so the more specific
# names come first. NVIDIA's datasheets give these figures with sparsity, twice the dense ones:
# H100 SXM 1,979, PCIe 1,513, NVL 1,671; H200 SXM 1,979, NVL 1,671; A100 624 (312 dense);
# L40S 733 (362.05 dense); L40 362.1 (181.05 dense); L4 242.
PEAK_BF16_TFLOPS = (
    ("H100 NVL", 835.5),
    ("H100 PCIe", 756.5),
    ("H100 80GB HBM3", 989.4),  # the SXM board's name
    ("H100 SXM", 989.4),
    ("H200 NVL", 835.5),
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.05),
    ("L40", 181.05),
    ("L4", 121.0),
)


def peak_bf16_tflops(device_name: str | None, override: float | None = None
                     ) -> tuple[float | None, str]:
    """The dense bf16 peak of a device and where it came from: ``override``, else the table.

    Args:
        device_name: ``torch.cuda.get_device_name()``; None for the CPU.
        override: ``--peak-tflops``.

    Returns:
        (peak in TFLOP/s or None, its source).
    """
    if override is not None:
        return override, "--peak-tflops"
    if device_name is None:
        return None, "none: the CPU has no bf16 tensor-core peak here; pass --peak-tflops"
    for key, peak in PEAK_BF16_TFLOPS:
        if key in device_name:
            return peak, f"datasheet, dense bf16 ({key!r})"
    return None, f"none: {device_name!r} is not in the table; pass --peak-tflops"


def achieved(images_per_s: float, gflop_per_image: float,
             peak_tflops: float | None) -> tuple[float, float | None]:
    """TFLOP/s achieved at a rate, and their fraction of the peak (None without a peak)."""
    tflops = images_per_s * gflop_per_image / 1e3
    return tflops, (tflops / peak_tflops if peak_tflops else None)


def rate_fields(result: dict, train_gflop: float, infer_gflop: float,
                peak: tuple[float | None, str]) -> dict:
    """The FLOP-rate fields of a mode's result, from its images per second."""
    train, train_fraction = achieved(result["train_images_per_s"], train_gflop, peak[0])
    infer, infer_fraction = achieved(result["infer_images_per_s"], infer_gflop, peak[0])

    def fraction(value):
        return None if value is None else round(value, 5)

    return {"train_gflop_per_image": round(train_gflop, 4),
            "infer_gflop_per_image": round(infer_gflop, 4),
            "train_tflops": round(train, 4), "infer_tflops": round(infer, 4),
            "train_peak_fraction": fraction(train_fraction),
            "infer_peak_fraction": fraction(infer_fraction),
            "peak_bf16_tflops": peak[0], "peak_source": peak[1]}


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--backbone", default=None, help="default resnet101 (CUDA), resnet18 (CPU)")
    p.add_argument("--backbone-args", type=json.loads, default={},
                   help='timm arguments of the backbone, as JSON (e.g. \'{"depth": 6}\')')
    p.add_argument("--image-size", type=int, default=None, help="default 448 (CUDA), 128 (CPU)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dim", type=int, default=None, help="D; default 2048 (CUDA), 64 (CPU)")
    p.add_argument("--attn-dim", type=int, default=None, help="M; default 1024 (CUDA), 32 (CPU)")
    p.add_argument("--attributes", type=int, default=312)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--steps", type=int, default=None, help="timed steps; default 20 (CUDA) / 15 (CPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--resize-before-projection", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the whole model in fused_fast and fused_eager (no graphs)")
    p.add_argument("--no-channels-last", action="store_true",
                   help="keep NCHW in the fused modes on CUDA")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="run the steps and inference of fused_fast and fused_regions eagerly")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak; default: looked up from its name")
    p.add_argument("--count-only", action="store_true",
                   help="print the FLOPs counted per image and stop (no timing)")
    p.add_argument("--modes", default="alternating_fp32,fused_fast",
                   help=f"comma-separated, of: {', '.join(MODES)}")
    args = p.parse_args(argv)
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    gpu = args.device.startswith("cuda")
    args.backbone = args.backbone or ("resnet101" if gpu else "resnet18")
    args.image_size = args.image_size or (448 if gpu else 128)
    args.dim = args.dim or (2048 if gpu else 64)
    args.attn_dim = args.attn_dim or (1024 if gpu else 32)
    args.steps = args.steps or (20 if gpu else 15)
    return args


def mode_settings(mode: str, args, device: torch.device) -> dict:
    """What ``mode`` turns on, on ``device``: the fields of its result that describe it."""
    fast = mode != "alternating_fp32" and device.type == "cuda"
    regions = mode == "fused_regions"
    # whole-model compilation and graphs do not combine (as in mgmrn train); regions do
    compiled = args.compile and fast and not regions
    graphs = fast and mode in GRAPHED_MODES and not compiled and not args.no_cuda_graphs
    return {"schedule": "alternating" if mode == "alternating_fp32" else "fused",
            "amp": "bf16" if fast else "none",
            "channels_last": fast and not args.no_channels_last,
            "cuda_graphs": graphs, "infer_cuda_graphs": graphs,
            "compile": compiled, "compile_heads": regions}


def build(args, device):
    cfg = ModelConfig(backbone=args.backbone, backbone_args=args.backbone_args, pretrained=False,
                      dim=args.dim, attn_dim=args.attn_dim,
                      resize_before_projection=args.resize_before_projection)
    torch.manual_seed(0)
    with torch.device(device) if device.type == "meta" else contextlib.nullcontext():
        model = build_model(cfg, torch.randn(args.attributes, 300), image_size=args.image_size)
    return model.to(device), torch.rand(args.classes, args.attributes, device=device)


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
    """GFLOP of one training step per image, forward and backward, as actually run."""
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


def timed(run, n: int, device) -> float:
    """Seconds that ``run(n)`` takes, the device's queued work included."""
    sync(device)
    start = time.perf_counter()
    run(n)
    sync(device)
    return time.perf_counter() - start


def run_mode(mode: str, args, device) -> dict:
    settings = mode_settings(mode, args, device)
    model, attrs = build(args, device)
    precision = Precision(dtype=torch.bfloat16 if settings["amp"] == "bf16" else None,
                          channels_last=settings["channels_last"])
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    heads = compile_heads(model) if settings["compile_heads"] else 0
    runner = torch.compile(model) if settings["compile"] else model
    schedule = settings["schedule"]
    criterion = ZSLCriterion(attrs, 0.1)
    graphed = GraphedStep(runner, criterion, precision, device) if settings["cuda_graphs"] else None
    # as in mgmrn train: one fused update kernel on CUDA, for the fused schedule
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9,
                          fused=True if device.type == "cuda" and schedule == "fused" else None)
    batch = [(torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device),
              torch.randint(0, args.classes, (args.batch_size,), device=device))]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train(steps):
        train_one_epoch(runner, batch * steps, opt, criterion, device, 0, schedule,
                        precision=precision, show_progress=False, graphed=graphed)

    # the graph's eager steps and its capture are warm-up too
    timed(train, args.warmup + (graphed.warmup + 1 if graphed else 0), device)
    warm_peak = None
    if device.type == "cuda":
        # cuDNN's autotuning tries algorithms with large workspaces during warm-up only
        warm_peak = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    train_rate = args.steps * args.batch_size / timed(train, args.steps, device)
    infer_rate, capture = infer_rate_and_capture(runner, batch, attrs, precision, args, device,
                                                 settings["infer_cuda_graphs"])
    if device.type == "cuda":
        steady = torch.cuda.max_memory_allocated(device) / 2**20
        peak, extra = max(warm_peak, steady), {"steady_peak_memory_mb": round(steady, 1)}
    else:
        peak, extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, {}
    return {
        "mode": mode, "device": _device_name(device), "backbone": args.backbone,
        "image_size": args.image_size, "batch_size": args.batch_size, **settings,
        "compiled_head_modules": heads,
        "resize_before_projection": args.resize_before_projection,
        "train_images_per_s": round(train_rate, 2), "infer_images_per_s": round(infer_rate, 2),
        "infer_capture_ms": None if capture is None else round(capture * 1e3, 1),
        "peak_memory_mb": round(peak, 1), **extra,
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
    }


def infer_rate_and_capture(runner, batch, attrs, precision, args, device,
                           cuda_graphs: bool) -> tuple[float, float | None]:
    """Inference images per second through ``predict_logits``, and its capture's cost (s).

    A call with CUDA graphs captures its graph before its first replay: the rate is then that of
    the extra batches of a long call over a short one, so that the capture cancels out, and the
    capture's cost is what the short call took beyond its batches (None without graphs).
    """
    def infer(steps):
        predict_logits(runner, batch * steps, attrs, device, precision, show_progress=False,
                       cuda_graphs=cuda_graphs)

    timed(infer, args.warmup, device)  # cuDNN tunes the evaluation shapes; heads compile
    short = timed(infer, args.warmup, device)
    long = timed(infer, args.warmup + args.steps, device)
    if not cuda_graphs:  # no cost per call: every timed batch counts
        return args.batch_size * (2 * args.warmup + args.steps) / (short + long), None
    per_batch = (long - short) / args.steps
    return args.batch_size / per_batch, short - args.warmup * per_batch


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def summarise(results: dict, b: float, h: float, step_gflop: dict) -> dict:
    """The summary object: operation-count ratios, measured speed-ups, CUB recipe hours."""
    summary = {
        "backbone_gflop_per_image": round(b, 2), "heads_gflop_per_image": round(h, 2),
        "op_count_ratio": round((9 * b + 5 * h) / (3 * b + 3 * h), 3),
        # the formula assumes every level backpropagates through the whole backbone; with the
        # stop-gradient the fine and middle levels do not, so the counted ratio is lower
        "op_count_ratio_counted": round(step_gflop["alternating"] / step_gflop["fused"], 3),
    }
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
    if {"fused_fast", "fused_regions"} <= results.keys():
        fast, regions = results["fused_fast"], results["fused_regions"]
        for kind in ("train", "infer"):
            key = f"{kind}_images_per_s"
            summary[f"{kind}_speedup_regions_over_fast"] = round(regions[key] / fast[key], 3)
    return summary


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model, attrs = build(args, device)
    b, h = count_flops(model, attrs, args, device)
    params = {"params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
              "backbone_params_m": round(sum(p.numel() for p in model.backbone.parameters()) / 1e6,
                                         2)}
    del model
    step_gflop = ({} if device.type == "meta" else
                  {s: count_step_flops(args, device, s) for s in ("alternating", "fused")})
    if args.count_only:
        print(json.dumps({"backbone": args.backbone, "image_size": args.image_size,
                          "dim": args.dim, "attn_dim": args.attn_dim,
                          "backbone_gflop_per_image": round(b, 2), "heads_gflop_per_image": round(h, 2),
                          **params,
                          **{f"{s}_step_gflop_per_image": round(g, 2) for s, g in step_gflop.items()}}))
        return
    if device.type == "meta":
        raise SystemExit("--device meta counts only: add --count-only")
    peak = peak_bf16_tflops(torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                            args.peak_tflops)
    results = {}
    for mode in args.modes.split(","):
        result = run_mode(mode, args, device)
        result.update(rate_fields(result, step_gflop[result["schedule"]], b + h, peak))
        results[mode] = result
        print(json.dumps(result), flush=True)
    print(json.dumps(summarise(results, b, h, step_gflop)), flush=True)


if __name__ == "__main__":
    main()

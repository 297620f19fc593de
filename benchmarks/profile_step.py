"""Where a fused training step spends its time: wall time per step with and without the CUDA
graph, the device's busy time per step, the torch profiler's top operators, and the step's time
by kind of work.

The busy time is the sum of the kernels' times in an eager step. Eager wall time well above it
means the host cannot launch the kernels as fast as the device runs them; the graph's wall time
shows how much of that gap the replay closes.

"Where the time goes" groups the profiled operators into categories (convolutions, matrix
products, attention, normalisation, ...; see ``RULES``) by their self times, so that nothing is
counted twice: on CUDA the device time of the kernels each host-side operator launched itself,
with an ``unattributed`` row for kernels no operator launched (total kernel time minus the
rest); on the CPU each operator's self CPU time. It prints as a markdown table (milliseconds per
step, share of the step) and goes into the final JSON line as ``where_the_time_goes``.

    python benchmarks/profile_step.py                     # CUDA if present, full network
    python benchmarks/profile_step.py --compile-heads     # heads compiled, as train.compile=regions
    python benchmarks/profile_step.py --no-channels-last --resize-before-projection
"""

from __future__ import annotations

import argparse
import json
import re
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from mgmrn.config import ModelConfig
from mgmrn.models import build_model, compile_heads
from mgmrn.precision import Precision
from mgmrn.training.engine import GraphedStep, train_one_epoch
from mgmrn.training.losses import ZSLCriterion

PROFILED_STEPS = 3
UNATTRIBUTED = "unattributed"
OTHER = "other elementwise/reductions"

# (pattern, category), the first match wins; searched in the lower-cased operator name. Besides
# aten's operators the names include autograd's nodes ("ConvolutionBackward0", also as
# "autograd::engine::evaluate_function: ConvolutionBackward0"), whose self time is the engine's
# work for that operator's backward.
RULES = (
    # Inductor's kernels, and the compiled regions' own events that launch or run them
    (r"^triton_|^cpp_fused|compiled|torchdynamo", "generated kernels"),
    (r"optimizer\.|_fused_sgd|_fused_adam|_foreach_", "optimizer"),
    (r"scaled_?dot_?product|efficient_?attention|flash_?attention|(?<!log_)(?<!log)softmax",
     "attention"),
    (r"convolution|conv\d|conv_", "convolutions"),
    (r"(batch|group|layer|instance)_?norm", "normalisation"),
    (r"^aten::(mm|_?addmm\w*|bmm|baddbmm|addbmm|matmul|linear|einsum)$"
     r"|(^|: )(mm|addmm|bmm|baddbmm)backward", "matrix products"),
    # relu runs as clamp_min_ on CUDA; its backward is threshold_backward
    (r"relu|threshold|sigmoid|gelu|silu|tanh|clamp_?min", "activations"),
    # the halving averages 2x2 blocks with mean
    (r"upsample|interpolate|pool|^aten::mean$|(^|: )meanbackward", "resizes and pooling"),
    # copies, allocations and views (the views launch no kernels, but cost the host time)
    (r"^(aten::)?(copy_|cat|stack|clone|_to_copy|to|contiguous|fill_|zero_|zeros(_like)?"
     r"|empty\w*|resize_|view|reshape|_reshape_alias|_unsafe_view|as_strided_?|transpose|t"
     r"|expand|permute|(un)?squeeze|(un)?flatten|narrow|slice|select|alias|detach_?)$"
     r"|(^|: )(copy|cat|stack|clone|tocopy|view|reshapealias|unsafeview|t|transpose|expand"
     r"|permute|(un)?squeeze|select|slice|alias)backward", "copies and layout"),
)


def category(op_name: str) -> str:
    """The category of a profiled operator's name (``RULES``; else ``OTHER``)."""
    name = op_name.lower()
    for pattern, name_of_category in RULES:
        if re.search(pattern, name):
            return name_of_category
    return OTHER


def time_by_category(events, steps: int, device: bool) -> dict[str, float]:
    """Milliseconds per step of each category, largest first.

    An operator run inside the optimizer's step counts as ``optimizer`` (on the CPU the step
    runs as plain additions and products).

    Args:
        events: ``prof.events()`` of ``steps`` profiled steps.
        device: attribute device time (CUDA) rather than CPU time, plus an ``unattributed`` row.
    """
    totals: dict[str, float] = {}
    for event in events:
        if event.device_type != DeviceType.CPU:
            continue
        # a host-side operator's self device time is the time of the kernels it launched
        # itself; the kernels' own events and their annotations repeat it
        us = event.self_device_time_total if device else event.self_cpu_time_total
        if us:
            key = "optimizer" if _inside_optimizer(event) else category(event.name)
            totals[key] = totals.get(key, 0.0) + us
    if device:
        totals[UNATTRIBUTED] = device_busy_us(events) - sum(totals.values())
    ms = {key: us / 1e3 / steps for key, us in totals.items()}
    return dict(sorted(ms.items(), key=lambda item: -item[1]))


def _inside_optimizer(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return True
        parent = parent.cpu_parent
    return False


def device_busy_us(events) -> float:
    """Total kernel time of the profile (microseconds)."""
    # kernels only: an operator's own device time repeats its kernels' times
    return sum(e.self_device_time_total for e in events
               if e.device_type == DeviceType.CUDA and not e.is_user_annotation)


def shares(ms_per_step: dict[str, float]) -> dict[str, float]:
    """Each category's fraction of the step (of the sum of all categories)."""
    total = sum(ms_per_step.values())
    return {key: ms / total for key, ms in ms_per_step.items()}


def markdown_table(ms_per_step: dict[str, float]) -> str:
    """``ms_per_step`` as a markdown table: category, ms per step, share of the step."""
    lines = ["| category | ms per step | share |", "| --- | ---: | ---: |"]
    lines += [f"| {key} | {ms_per_step[key]:.2f} | {share:.1%} |"
              for key, share in shares(ms_per_step).items()]
    lines.append(f"| total | {sum(ms_per_step.values()):.2f} | 100.0% |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--image-size", type=int, default=448 if cuda else 224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dim", type=int, default=None, help="D; default the model's (2048)")
    p.add_argument("--attn-dim", type=int, default=None, help="M; default the model's (1024)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--resize-before-projection", action="store_true")
    p.add_argument("--compile-heads", action="store_true",
                   help="compile each head module in place (train.compile=regions)")
    p.add_argument("--rows", type=int, default=25)
    return p.parse_args(argv)


def build(args, device: torch.device):
    """The network, its precision and the step's inputs, as ``mgmrn train`` sets them up."""
    gpu = device.type == "cuda"
    sizes = {k: v for k, v in (("dim", args.dim), ("attn_dim", args.attn_dim)) if v is not None}
    cfg = ModelConfig(backbone=args.backbone, pretrained=False,
                      resize_before_projection=args.resize_before_projection, **sizes)
    torch.manual_seed(0)
    model = build_model(cfg, torch.randn(312, 300), image_size=args.image_size).to(device)
    precision = Precision(dtype=torch.bfloat16 if gpu else None,
                          channels_last=gpu and not args.no_channels_last)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    heads = compile_heads(model) if args.compile_heads else 0
    attrs = torch.rand(150, 312, device=device)
    batch = (torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device),
             torch.randint(0, 150, (args.batch_size,), device=device))
    return model, precision, attrs, batch, heads


def make_steps(model, precision: Precision, attrs: torch.Tensor, batch, device: torch.device):
    """``steps(n, graphed=None)``: runs ``n`` fused training steps, returns ms per step."""
    gpu = device.type == "cuda"
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, fused=True if gpu else None)

    def steps(n: int, graphed=None) -> float:
        if gpu:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_one_epoch(model, [batch] * n, opt, ZSLCriterion(attrs, 0.1), device, 0,
                        precision=precision, show_progress=False, graphed=graphed)
        if gpu:
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1e3 / n

    return steps


def profile_steps(steps, n: int, gpu: bool) -> profile:
    """The torch profiler, run over ``steps(n)``."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        steps(n)
    return prof


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    torch.backends.cudnn.benchmark = gpu
    model, precision, attrs, batch, heads = build(args, device)
    steps = make_steps(model, precision, attrs, batch, device)
    steps(3)
    timing = {"eager_ms_per_step": round(steps(args.steps), 2)}
    prof = profile_steps(steps, PROFILED_STEPS, gpu)
    events = prof.events()
    if gpu:
        timing["device_busy_ms_per_step"] = round(device_busy_us(events) / PROFILED_STEPS / 1e3, 2)
        graphed = GraphedStep(model, ZSLCriterion(attrs, 0.1), precision, device)
        steps(graphed.warmup + 1, graphed)
        timing["graphed_ms_per_step"] = round(steps(args.steps, graphed), 2)
    key = "self_cuda_time_total" if gpu else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    where = time_by_category(events, PROFILED_STEPS, device=gpu)
    print(f"\nWhere the time goes ({'device' if gpu else 'CPU'} self time, "
          f"{PROFILED_STEPS} eager steps):\n")
    print(markdown_table(where) + "\n")
    result = {"batch_size": args.batch_size, "image_size": args.image_size,
              "compiled_head_modules": heads, **timing,
              "where_the_time_goes": {k: round(v, 3) for k, v in where.items()}}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

"""Precision policy: autocast dtype, memory layout, gradient scaling and CUDA-graph replay."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from mgmrn.config import Config, ConfigError
from mgmrn.data.transforms import normalize_images
from mgmrn.distributed import DistEnv


@dataclass
class Precision:
    """How tensors are computed: autocast dtype (None = fp32), channels_last, gradient scaler,
    and the normalisation of uint8 batches (``inputs``: the backbone's mean and std; None:
    ImageNet's)."""

    dtype: torch.dtype | None = None
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None
    inputs: dict | None = None

    def autocast(self, device: torch.device, cache: bool = True):
        """Autocast to ``dtype``; ``cache=False`` recasts weights at every use (graph capture)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype, cache_enabled=cache)

    def prepare(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A batch on ``device`` as the network takes it; uint8 images are normalised there."""
        images = images.to(device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = normalize_images(images, self.inputs)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def resolve_precision(cfg: Config, device: torch.device, inputs: dict | None = None) -> Precision:
    """The precision of ``train.amp`` and ``train.channels_last`` on ``device``; ``inputs``: the
    backbone's input statistics (None: ImageNet's)."""
    amp = cfg.train.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]
    channels_last = cfg.train.channels_last
    if channels_last is None:
        channels_last = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return Precision(dtype=dtype, channels_last=channels_last, scaler=scaler, inputs=inputs)


def _graphs_wanted(key: str, setting: bool | None, conditions) -> bool:
    """A CUDA-graph switch: ``setting``, or (None) on where every condition is met.

    ``conditions`` are (reason, unmet) pairs; a switch set to true with an unmet condition stops
    with every reason, naming ``key``.
    """
    unmet = [why for why, bad in conditions if bad]
    if setting is None:
        return not unmet
    if setting and unmet:
        raise ConfigError(f"config key '{key}': CUDA graphs {'; '.join(unmet)}; set {key}=false, "
                          f"or leave it unset to use them where they work")
    return setting


def _common_conditions(cfg: Config, device: torch.device):
    return (("need a CUDA device", device.type != "cuda"),
            ("do not combine with train.compile=true (train.compile=regions works)",
             cfg.train.compile is True))


def resolve_cuda_graphs(cfg: Config, device: torch.device, env: DistEnv,
                        precision: Precision) -> bool:
    """Whether fused steps replay as CUDA graphs: ``train.cuda_graphs``, or where supported."""
    return _graphs_wanted("train.cuda_graphs", cfg.train.cuda_graphs, (
        *_common_conditions(cfg, device),
        ("need train.schedule=fused", cfg.train.schedule != "fused"),
        ("run in a single process, not under torchrun", env.enabled),
        ("do not support train.amp=fp16 (use bf16)", precision.scaler is not None),
    ))


def resolve_eval_cuda_graphs(cfg: Config, device: torch.device) -> bool:
    """Whether evaluation batches replay as a CUDA graph: ``eval.cuda_graphs``, or where supported."""
    return _graphs_wanted("eval.cuda_graphs", cfg.eval.cuda_graphs,
                          _common_conditions(cfg, device))


def run_on_side_stream(fn, device: torch.device):
    """``fn()`` on a side stream, waited for: the eager warm-up before a CUDA-graph capture
    (cuDNN picks its algorithms, autograd and the optimizer make their state) must not run on
    the stream being captured."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        out = fn()
    torch.cuda.current_stream(device).wait_stream(side)
    return out


def capture_graph(fn):
    """``fn()`` captured as a CUDA graph (not run); returns (the graph, ``fn``'s outputs, which
    each replay rewrites in place)."""
    graph = torch.cuda.CUDAGraph()
    # thread_local: a data loader's pinning thread may use CUDA while the graph is captured
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = fn()
    return graph, out

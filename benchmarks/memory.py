"""Peak training memory per image of Mg-MRN on each backbone, with and without gradient
checkpointing (``model.grad_checkpointing``), at 448 px by default.

- **CUDA (measured)**: one AdamW training step as ``mgmrn train`` runs it (bf16 autocast,
  channels_last), after one warm-up step that creates the optimizer state; ``peak_mb`` is
  ``torch.cuda.max_memory_allocated`` over the measured step, ``static_mb`` what is allocated
  before its forward pass (weights, gradients, AdamW's two moments), and
  ``activations_mb_per_image`` = (peak - static) / batch.
- **CPU (an estimate, labelled so)**: no step is timed or measured by the allocator. One forward
  pass in training mode at ``--batch-size`` (default 1), fp32, counts the bytes of every tensor
  autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``; each
  storage once, parameters left out): that is what the backward pass keeps alive at its peak,
  less transient buffers. ``static_mb`` is counted as 4 x the parameters' bytes (weights,
  gradients, AdamW's two moments). fp32: bf16 autocast would keep about half.

Random weights (``pretrained=false``): memory does not depend on their values. Heads as each
backbone's recipe: D = 2048, M = 1024 on ResNet-101 (``cub``), D = 768, M = 512 on the others
(``cub-convnext``, ``cub-swin``, ``cub-dinov2``).

    python benchmarks/memory.py                                  # picks the device, 448 px
    python benchmarks/memory.py --device cpu --image-size 224 --backbones resnet101
"""

from __future__ import annotations

import argparse
import json

import torch

from mgmrn.config import ModelConfig
from mgmrn.models import build_model

BACKBONES = ("resnet101", "convnext_tiny", "swin_tiny_patch4_window7_224",
             "vit_small_patch14_dinov2", "vit_base_patch14_dinov2")
ATTRIBUTES, WORD_DIM, CLASSES = 312, 300, 150  # CUB's


def network(backbone: str, image_size: int, checkpointing: bool, device) -> torch.nn.Module:
    wide = backbone.startswith("resnet")
    cfg = ModelConfig(backbone=backbone, pretrained=False, grad_checkpointing=checkpointing,
                      dim=2048 if wide else 768, attn_dim=1024 if wide else 512)
    torch.manual_seed(0)
    return build_model(cfg, torch.randn(ATTRIBUTES, WORD_DIM), image_size=image_size).to(device)


def saved_bytes(model: torch.nn.Module, images: torch.Tensor, attributes: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves in one forward pass (each storage once, no parameters)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(images, attributes)
    del out
    return sum(storages.values())


def estimate_cpu(backbone: str, image_size: int, batch: int, checkpointing: bool) -> dict:
    model = network(backbone, image_size, checkpointing, "cpu").train()
    images = torch.randn(batch, 3, image_size, image_size)
    activations = saved_bytes(model, images, torch.rand(CLASSES, ATTRIBUTES))
    static = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    return {"how": "CPU estimate: saved-for-backward tensors, fp32; static = 4 x parameters",
            "static_mb": static / 2**20, "activations_mb_per_image": activations / batch / 2**20,
            "peak_mb": (static + activations) / 2**20}


def measure_cuda(backbone: str, image_size: int, batch: int, checkpointing: bool) -> dict:
    device = torch.device("cuda")
    model = network(backbone, image_size, checkpointing, device).train()
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    images = images.to(memory_format=torch.channels_last)
    attributes = torch.rand(CLASSES, ATTRIBUTES, device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(images, attributes)
            loss = sum(s.float().square().mean() for s in out.class_scores + out.attribute_scores)
        loss.backward()
        optimizer.step()

    step()  # creates AdamW's state
    optimizer.zero_grad(set_to_none=False)  # gradients stay allocated, as between real steps
    torch.cuda.synchronize()
    static = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"how": "CUDA measured: max_memory_allocated, AdamW, bf16 autocast",
            "static_mb": static / 2**20, "activations_mb_per_image": (peak - static) / batch / 2**20,
            "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 8 CUDA, 1 CPU")
    args = parser.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    batch = args.batch_size or (8 if cuda else 1)
    rows = []
    for backbone in args.backbones.split(","):
        for checkpointing in (False, True):
            run = measure_cuda if cuda else estimate_cpu
            row = {"backbone": backbone, "image_size": args.image_size, "batch": batch,
                   "grad_checkpointing": checkpointing,
                   **run(backbone, args.image_size, batch, checkpointing)}
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
            rows.append(row)
    print(f"\n| backbone | activations MB/image, no checkpointing | with | static MB | "
          f"({rows[0]['how']}, {args.image_size} px) |\n|---|---|---|---|---|")
    for plain, ckpt in zip(rows[::2], rows[1::2], strict=True):
        print(f"| `{plain['backbone']}` | {plain['activations_mb_per_image']:.0f} | "
              f"{ckpt['activations_mb_per_image']:.0f} | {plain['static_mb']:.0f} | |")


if __name__ == "__main__":
    main()

"""Pretrain the demo backbone (timm's ``test_resnet``) on the generic drawn set; write its weights.

The drawn demo sets (``parts``, ``demo``) stand for benchmarks whose backbone comes pretrained on
other data (ImageNet) and is fine-tuned. This script makes that other data's analogue here: it
draws the generic set of :mod:`mgmrn.data.synthetic.generic` (ten object categories that are not
the shapes set's, twelve colours, five textures, 1-6 objects per image from a few pixels to half
the image, clutter), trains the whole ``test_resnet`` with a linear head on multi-label presence
(category, colour, texture, category x colour; binary cross-entropy), and writes the backbone's
weights, head left out, as safetensors: the file the recipes load with
``model.pretrained_file: package:demo_backbone.safetensors``.

Deterministic on the CPU for a given ``--threads`` (every image from its own seed, one torch seed,
deterministic algorithms); about 10 minutes on one core with the defaults.

    PYTHONPATH=src python scripts/pretrain_backbone.py            # -> src/mgmrn/weights/
    PYTHONPATH=src python scripts/pretrain_backbone.py --steps 20 --images 256 --out /tmp/b.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from mgmrn.data.synthetic.generic import draw_generic_batch, label_names
from mgmrn.models.backbone import input_config
from mgmrn.models.weights import sha256

log = logging.getLogger("pretrain_backbone")
BACKBONE = "test_resnet"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/mgmrn/weights/demo_backbone.safetensors"
HELD_OUT_SEED = 1  # the held-out images' set seed; training images use --seed


def normalise(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float, with the statistics the recipes will use."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    return (x - mean) / std


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over labels with a positive of the average precision of ranking by score."""
    aps = []
    for s, y in zip(scores.T, labels.T):
        if y.sum() == 0:
            continue
        hits = y[np.argsort(-s)]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return float(np.mean(aps))


def pretrain(args: argparse.Namespace) -> dict:
    """Draw, train, write ``args.out``; returns its record (sha256, size, held-out mAP)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:  # a caller (a test) keeps its own settings
        return _pretrain(args)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _pretrain(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    stats = input_config(BACKBONE, None, pretrained=True)  # what the recipes normalise with
    mean = torch.tensor(stats["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(stats["std"]).view(1, 3, 1, 1)
    start = time.time()
    images, labels = draw_generic_batch(args.seed, 0, args.images, args.size)
    test_images, test_labels = draw_generic_batch(HELD_OUT_SEED * 1000 + args.seed, 0,
                                                  args.held_out, args.size)
    log.info("drew %d + %d images in %.0f s", len(images), len(test_images), time.time() - start)
    model = timm.create_model(BACKBONE, pretrained=False, num_classes=len(label_names()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5
                                                 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    loss_fn = nn.BCEWithLogitsLoss()
    order = np.random.default_rng(args.seed)
    model.train()
    for step in range(args.steps):
        batch = order.integers(0, len(images), args.batch_size)
        x = normalise(images[batch], mean, std)
        if step % 2:  # mirror half the batches: the labels do not change
            x = x.flip(3)
        loss = loss_fn(model(x), torch.from_numpy(labels[batch]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == args.steps - 1:
            log.info("step %d/%d loss %.4f (%.0f s)", step, args.steps, loss.item(), time.time() - start)
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(normalise(test_images[i:i + 256], mean, std))
                            for i in range(0, len(test_images), 256)]).numpy()
    ap = average_precision(scores, test_labels)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    recipe = {"backbone": BACKBONE, **{k: v for k, v in vars(args).items() if k != "out"}}
    # one metadata key: safetensors writes several in no fixed order, and the file's hash is quoted
    save_file(state, str(args.out), metadata={"recipe": json.dumps(recipe)})
    record = {"file": str(args.out), "sha256": sha256(args.out), "bytes": args.out.stat().st_size,
              "held_out_mAP": round(100 * ap, 1), "seconds": round(time.time() - start)}
    log.info("%s", json.dumps(record))
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--images", type=int, default=16000, help="training images drawn")
    p.add_argument("--held-out", type=int, default=1000, help="held-out images, for the mAP")
    p.add_argument("--size", type=int, default=96, help="image side, the demo recipes' size")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pretrain(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time of loading a checkpoint, and of checking its checksums (what load_checkpoint adds).

    python benchmarks/checkpoint_load.py              # a 1 GiB checkpoint in a temporary folder
    python benchmarks/checkpoint_load.py --gib 2 --folder /scratch
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mgmrn.checkpoint import entry_failing_checksum, load_checkpoint, save_atomic


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB")
    p.add_argument("--folder", default=None, help="where to write it (default: a temp folder)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    numel = int(args.gib * 2**30 / 4)
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = Path(folder) / "last.pt"
        save_atomic({"model": {"w": torch.randn(numel)}, "config": {}}, path)
        times = {"torch_load_s": [], "checksum_s": [], "load_checkpoint_s": []}
        for _ in range(args.repeats):
            for key, run in (("torch_load_s", lambda: torch.load(path, weights_only=True)),
                             ("checksum_s", lambda: entry_failing_checksum(path)),
                             ("load_checkpoint_s", lambda: load_checkpoint(path))):
                start = time.perf_counter()
                run()
                times[key].append(round(time.perf_counter() - start, 3))
    print(json.dumps({"gib": args.gib, **times}))


if __name__ == "__main__":
    main()

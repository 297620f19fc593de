"""``mgmrn train``: train a model from a recipe, evaluating as it goes."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a model, evaluating as it goes"
DESCRIPTION = ("Train Mg-MRN (or the baseline) and evaluate it; writes checkpoints, metrics.jsonl "
               "and results.json to output_dir.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML file or bundled recipe name: parts (default: the part-attribute "
                             "demo), demo (the shapes set), cub, sun, awa2, *-release")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its last checkpoint (a run "
                             "stopped before its first checkpoint begins again)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.epochs=5 data.root=/data/cub")


def run(args: argparse.Namespace) -> int:
    from mgmrn.config import load_config

    cfg = load_config(args.config, args.overrides)
    saved = Path(cfg.output_dir) / "config.yaml"
    if args.resume and saved.is_file():
        # a resumed run keeps its own config; command-line overrides still apply
        cfg = load_config(saved, args.overrides)
    from mgmrn.training.runner import train  # torch and the models: after a bad config is refused

    train(cfg, resume=args.resume)
    return 0

"""``mgmrn train``: train a model from a recipe, evaluating as it goes."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a model, evaluating as it goes"
DESCRIPTION = ("Train Mg-MRN (or the baseline) and evaluate it; writes checkpoints, metrics.jsonl "
               "and results.json to output_dir.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML file or bundled recipe name: parts-pretrained (the "
                             "part-attribute demo, fine-tuned from the shipped backbone), "
                             "parts-pretrained-baseline, parts (backbone frozen at random "
                             "weights), custom (your own folder, from the shipped backbone), "
                             "demo (the shapes set), cub, sun, awa2, *-release. Default: the "
                             "recipe for the data.name given (custom, cub, sun, awa2, "
                             "demo-pretrained), else parts-pretrained")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its last checkpoint (a run "
                             "stopped before its first checkpoint, or a folder without one, "
                             "begins again): safe to pass always")
    parser.add_argument("--resume-changes", action="store_true",
                        help="with --resume: accept overrides that change the run's schedule, "
                             "data or model (e.g. train.epochs=40 to train a finished run longer)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.epochs=5 data.root=/data/cub")


def run(args: argparse.Namespace) -> int:
    from mgmrn.config import load_config
    from mgmrn.io.locks import run_folder_lock
    from mgmrn.training.resume import load_resumed

    # the folder's lock first, from the config read without its backbone check: a second run on
    # the folder stops before torch and timm load (training.runner.train takes the same lock,
    # which a process may hold twice, for callers of the Python API)
    with run_folder_lock(load_config(args.config, args.overrides, check=False).output_dir):
        cfg = load_config(args.config, args.overrides)
        saved = Path(cfg.output_dir) / "config.yaml"
        if args.resume and saved.is_file():
            # a resumed run keeps its own config; overrides apply where they change no schedule,
            # data or model, unless --resume-changes says so
            cfg = load_resumed(saved, args.overrides, args.resume_changes)
        from mgmrn.training.runner import train  # torch and the models: after a bad config

        train(cfg, resume=args.resume)
    return 0

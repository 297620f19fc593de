"""The ``mgmrn`` command: argument parsing and nothing else."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DESCRIPTION = """\
Mg-MRN: Multi-Granularity Mutual Refinement Network for zero-shot image classification.

  mgmrn train                               train and evaluate on the built-in demo set
  mgmrn train --config cub data.root=/data  the published CUB recipe (also: sun, awa2)
  mgmrn eval --checkpoint runs/cub/checkpoints/best.pt
  mgmrn predict --checkpoint runs/demo/checkpoints/best.pt photo.jpg --explain figures/
  torchrun --nproc_per_node=4 -m mgmrn train --config cub   (several GPUs)

Any config field can be set as key=value with dotted keys (e.g. train.epochs=5).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgmrn", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model, evaluating as it goes",
                           description="Train Mg-MRN (or the baseline) and evaluate it; writes "
                                       "checkpoints, metrics.jsonl and results.json to output_dir.")
    train.add_argument("--config", default=None,
                       help="YAML file or bundled recipe name: demo (default), cub, sun, awa2")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in output_dir from its last checkpoint")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. train.epochs=5 data.root=/data/cub")

    ev = sub.add_parser("eval", help="evaluate a checkpoint on its dataset's test splits",
                        description="Evaluate a checkpoint (CZSL, GZSL with calibrated stacking, "
                                    "AUSUC); writes results.json next to the checkpoint.")
    ev.add_argument("--checkpoint", required=True, help="a .pt file written by mgmrn train")
    ev.add_argument("--out", default=None, help="where to write the results JSON")
    ev.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides, e.g. data.root=/data/cub eval.gamma=0.7")

    pr = sub.add_parser("predict", help="classify images with a checkpoint",
                        description="Top-k classes and strongest attributes of each image; with "
                                    "--explain, a figure of attention maps per image.")
    pr.add_argument("--checkpoint", required=True, help="a .pt file written by mgmrn train")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                    help="image files, or folders of them (jpg, jpeg, png, bmp, webp)")
    pr.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    pr.add_argument("--classes", choices=("all", "unseen", "seen"), default="all",
                    help="the classes to search (default all)")
    pr.add_argument("--json", dest="as_json", action="store_true",
                    help="print the predictions as JSON")
    pr.add_argument("--explain", metavar="DIR", default=None,
                    help="also write a figure of attention maps per image into DIR")
    pr.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")
    return parser


def _setup_logging(verbose: bool) -> None:
    from .distributed import is_main_process

    level = logging.DEBUG if verbose else (logging.INFO if is_main_process() else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")


def _message(err: Exception) -> str:
    """The error's own words; an error raised in a data-loading worker arrives wrapped in that
    worker's traceback, of which only the last line speaks to the user."""
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    # heavy imports after parsing, so that --help answers at once
    from .config import ConfigError, load_config, parse_overrides
    from .distributed import is_main_process
    from .preemption import REQUEUE_EXIT, Preempted
    from .runner import evaluate_checkpoint, train

    try:
        if args.command == "train":
            cfg = load_config(args.config, args.overrides)
            saved = Path(cfg.output_dir) / "config.yaml"
            if args.resume and saved.is_file():
                # a resumed run keeps its own config; command-line overrides still apply
                cfg = load_config(saved, args.overrides)
            train(cfg, resume=args.resume)
        elif args.command == "eval":
            evaluate_checkpoint(args.checkpoint, parse_overrides(args.overrides), args.out)
        elif args.command == "predict":
            from .predict import predict_command

            return predict_command(args)
    except Preempted as stopped:
        if is_main_process():
            print(f"mgmrn {args.command}: {stopped}", file=sys.stderr)
        return REQUEUE_EXIT
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without a traceback
        print(f"mgmrn {args.command}: interrupted", file=sys.stderr)
        return 130
    # OSError: a full disk or an unreadable file is for the user to fix, said in one line
    except (ConfigError, ValueError, OSError, RuntimeError) as err:
        if args.verbose:
            raise
        print(f"mgmrn {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

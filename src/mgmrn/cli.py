"""The ``mgmrn`` command: the parser built from the commands' table (:mod:`mgmrn.commands`),
and errors mapped to exit statuses."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback

from mgmrn.commands import COMMANDS  # light: each command imports torch when it runs
from mgmrn.errors import MgmrnError  # light: no torch
from mgmrn.training.preemption import REQUEUE_EXIT, Preempted, stop_while_starting  # light: no torch

DESCRIPTION = """\
Mg-MRN: Multi-Granularity Mutual Refinement Network for zero-shot image classification.

  mgmrn train                               train and evaluate on the built-in parts set
  mgmrn train --config parts-pretrained-baseline   the pooled baseline, same set and budget
  mgmrn compare runs/parts-pretrained runs/parts-pretrained-baseline   the two, with figures
  mgmrn train --config cub data.root=/data  the published CUB recipe (also: sun, awa2)
  mgmrn train data.name=custom data.root=my_data   your own folder (docs/data.md), from the
                                            shipped backbone (recipe custom)
  mgmrn eval --checkpoint runs/cub/checkpoints/best.pt
  mgmrn predict --checkpoint runs/parts-pretrained/checkpoints/best.pt photo.jpg --explain out/
  mgmrn train --config cub-release ...      every switch at the published code's behaviour
  mgmrn convert-release model.pth --config cub-release --out cub.pt   (published weights)
  mgmrn data download cub --root /data/zsl   the xlsa17 splits and the CUB images
  mgmrn data check --config cub data.root=/data/zsl
  mgmrn predict --checkpoint C --add-classes new.csv --classes added,unseen photos/
  mgmrn serve --checkpoint runs/parts-pretrained/checkpoints/best.pt --run runs/parts-pretrained
  mgmrn export --format hub --checkpoint C --out models/mine [--push org/name]
  mgmrn predict --checkpoint hf-hub:org/name photo.jpg     (also local-dir:models/mine)
  mgmrn export --format onnx --checkpoint C --out model.onnx
  mgmrn features --checkpoint C --out features/   (xlsa17 res101.mat and att_splits.mat)
  torchrun --nproc_per_node=4 -m mgmrn train --config cub   (several GPUs)

Any config field can be set as key=value with dotted keys (e.g. train.epochs=5). Without
--config, data.name picks its recipe (custom, cub, sun, awa2, demo-pretrained), else the demo's.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgmrn", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        command = importlib.import_module(module)
        command.add_arguments(sub.add_parser(name, help=command.HELP,
                                             description=command.DESCRIPTION))
    return parser


def _setup_logging(verbose: bool) -> None:
    # before any process group exists, torchrun's RANK says which process is the main one
    is_main = os.environ.get("RANK", "0") in ("", "0")
    level = logging.DEBUG if verbose else (logging.INFO if is_main else logging.WARNING)
    if logging.getLogger().handlers:  # called from a program that set logging up: its choice
        return
    # mgmrn's own progress at INFO; the libraries' (torch's "FakeTensor cache stats" at exit,
    # hub lookups) only from warnings up, unless --verbose
    logging.basicConfig(level=level if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("mgmrn").setLevel(level)


def _message(err: Exception) -> str:
    """The error's own words; an error raised in a data-loading worker arrives wrapped in that
    worker's traceback, of which only the last line speaks to the user."""
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes the positionals of one run only: overrides after an option arrive here
    if extra and hasattr(args, "overrides") and all(
            "=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # a scheduler's signal during the start-up of training (imports, the image check) stops it
    # with the requeue status; StopOnSignal takes over once training runs
    with stop_while_starting() if args.command == "train" else contextlib.nullcontext():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        _setup_logging(args.verbose)
        return importlib.import_module(COMMANDS[args.command]).run(args)
    except Preempted as stopped:
        if os.environ.get("RANK", "0") in ("", "0"):  # the main process speaks (torchrun: RANK)
            print(f"mgmrn {args.command}: {stopped}", file=sys.stderr)
        return REQUEUE_EXIT
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without a traceback
        print(f"mgmrn {args.command}: interrupted", file=sys.stderr)
        return 130
    # mgmrn's own errors (bad config, data, checkpoint, usage) and OSError (a missing file, a
    # full disk, permissions) are for the user to fix: said in one line
    except (MgmrnError, OSError) as err:
        if args.verbose:
            raise
        print(f"mgmrn {_command_name(args)}: error: {_message(err)}", file=sys.stderr)
        return 2
    except Exception:  # anything else is a bug: its traceback, so that it can be reported
        if args.verbose:
            raise
        traceback.print_exc()
        print(f"mgmrn {_command_name(args)}: internal error (traceback above); please report it",
              file=sys.stderr)
        return 1


def _command_name(args: argparse.Namespace) -> str:
    return f"data {args.data_command}" if args.command == "data" else args.command


if __name__ == "__main__":
    sys.exit(main())

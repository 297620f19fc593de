"""The ``mgmrn`` command: argument parsing and nothing else."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

from mgmrn.errors import MgmrnError  # light: no torch
from mgmrn.training.preemption import REQUEUE_EXIT, Preempted, stop_while_starting  # light: no torch

DESCRIPTION = """\
Mg-MRN: Multi-Granularity Mutual Refinement Network for zero-shot image classification.

  mgmrn train                               train and evaluate on the built-in parts set
  mgmrn train --config parts-baseline       the pooled baseline on the same set and budget
  mgmrn compare runs/parts runs/parts-baseline   the two side by side, with figures
  mgmrn train --config cub data.root=/data  the published CUB recipe (also: sun, awa2)
  mgmrn eval --checkpoint runs/cub/checkpoints/best.pt
  mgmrn predict --checkpoint runs/parts/checkpoints/best.pt photo.jpg --explain figures/
  mgmrn train --config cub-release ...      every switch at the published code's behaviour
  mgmrn convert-release model.pth --config cub-release --out cub.pt   (published weights)
  mgmrn data download cub --root /data/zsl   the xlsa17 splits and the CUB images
  mgmrn data check --config cub data.root=/data/zsl
  mgmrn predict --checkpoint C --add-classes new.csv --classes added,unseen photos/
  mgmrn serve --checkpoint runs/parts/checkpoints/best.pt --run runs/parts
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
                       help="YAML file or bundled recipe name: parts (default: the part-attribute "
                            "demo), demo (the shapes set), cub, sun, awa2, *-release")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in output_dir from its last checkpoint (a run "
                            "stopped before its first checkpoint, or a folder without one, "
                            "begins again): safe to pass always")
    train.add_argument("--resume-changes", action="store_true",
                       help="with --resume: accept overrides that change the run's schedule, "
                            "data or model (e.g. train.epochs=40 to train a finished run longer)")
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
    pr.add_argument("--classes", default="all",
                    help="the classes to search: all (default), or a comma-separated combination "
                         "of seen, unseen, added (e.g. added,unseen)")
    pr.add_argument("--add-classes", action="append", metavar="CSV", default=[],
                    help="new classes given by attributes: a CSV with a 'class' column and one "
                         "column per training attribute, by name, any order (repeatable)")
    pr.add_argument("--gamma", type=float, default=None,
                    help="calibration: subtracted from seen-class scores when they are searched "
                         "with others (default: the checkpoint's gamma, whose source is printed)")
    pr.add_argument("--json", dest="as_json", action="store_true",
                    help="print the predictions as JSON")
    pr.add_argument("--explain", metavar="DIR", default=None,
                    help="also write a figure of attention maps per image into DIR")
    pr.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")

    cv = sub.add_parser("convert-release", help="turn a checkpoint of the published code into an "
                                                "mgmrn checkpoint",
                        description="Rename the weights of a checkpoint saved by the published "
                                    "train.py ({'model': state_dict}) for the network of a "
                                    "*-release recipe; eval, predict and --explain accept the "
                                    "result. The recipe's data section names the dataset (its "
                                    "class list, attributes and word vectors are read; the images "
                                    "are not needed).")
    cv.add_argument("checkpoint", help="the published checkpoint (.pth)")
    cv.add_argument("--config", required=True,
                    help="cub-release, sun-release, awa2-release, demo-release or a YAML file")
    cv.add_argument("--out", required=True, help="the mgmrn checkpoint to write (never overwritten)")
    cv.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides, e.g. data.root=/data/zsl")
    cp = sub.add_parser("compare", help="finished runs side by side (figures, attributes, attention)",
                        description="Print the figures of finished runs side by side, measure how "
                                    "well each names every one-hot attribute group on the unseen "
                                    "test images, and draw comparison.png (those accuracies and "
                                    "the seen-unseen curves). On the parts set, also the share of "
                                    "each level's attention that falls on the beak, wing and body, "
                                    "and attention figures of a few test images.")
    cp.add_argument("runs", nargs="+", metavar="RUN",
                    help="run folders written by mgmrn train, on the same data")
    cp.add_argument("--out", default=None, metavar="DIR",
                    help="where to write comparison.png/.json and the figures (default: the "
                         "folder holding the first run)")
    cp.add_argument("--figures", type=int, default=4, help="test images drawn with attention (4)")
    cp.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    _data_parser(sub)
    sv = sub.add_parser("serve", help="a local web page to classify images and browse a run",
                        description="Serve a page (on 127.0.0.1 unless --host says otherwise) to "
                                    "classify images with a checkpoint, see attention maps, "
                                    "define new classes by their attributes and browse a run.")
    sv.add_argument("--checkpoint", required=True, help="a .pt file written by mgmrn train")
    sv.add_argument("--run", default=None, metavar="DIR",
                    help="a run folder to browse (metrics.jsonl, results.json)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--add-classes", action="append", metavar="CSV", default=[],
                    help="new classes to offer from the start (as for predict)")
    sv.add_argument("--max-upload-mb", type=float, default=16.0,
                    help="largest upload accepted, in MB (default 16)")
    sv.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")
    return parser


def _data_parser(sub) -> None:
    data = sub.add_parser("data", help="download and check the benchmark datasets",
                          description="Download CUB, SUN, AWA2 and the xlsa17 splits from their "
                                      "official pages; check a dataset folder before training.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dl = data_sub.add_parser(
        "download", help="fetch, verify and extract into the layout data.root expects",
        description="Fetch the archives (resuming interrupted transfers), verify them, extract "
                    "them into DIR and record their sha256 in DIR/mgmrn-download.json. A second "
                    "run does nothing. cub, sun and awa2 also fetch the xlsa17 splits.")
    dl.add_argument("names", nargs="+", choices=("cub", "sun", "awa2", "xlsa17", "all"),
                    metavar="{cub,sun,awa2,xlsa17,all}", help="what to download")
    dl.add_argument("--root", required=True, metavar="DIR", help="the folder to fill (data.root)")
    dl.add_argument("--mirror", metavar="URL", default=None,
                    help="base address serving every archive under its own file name, instead "
                         "of the official addresses")
    dl.add_argument("--timeout", type=float, default=60.0, metavar="S",
                    help="seconds without data before a transfer counts as stalled (default 60)")
    dl.add_argument("--retries", type=int, default=3, metavar="N",
                    help="further tries of a cut or stalled transfer, each resuming (default 3)")
    dl.add_argument("--keep-archives", action="store_true",
                    help="keep the archives in DIR/downloads/ after extracting them")
    dl.add_argument("--from-file", metavar="PATH", default=None,
                    help="use this archive for the one dataset named instead of downloading it: "
                         "a copy held here, or a re-packed one (e.g. a refused .rejected file). "
                         "Its checksum is not compared with the published one (a warning says "
                         "so); its members are checked while extracting. Extracting the "
                         "archive's folder into DIR by hand works too")
    ck = data_sub.add_parser(
        "check", help="check a dataset folder before training",
        description="Check the layout, the files, every split size against the published "
                    "counts, the attribute and word-vector shapes, and decode every image. "
                    "Prints a table; exit status 1 when a check fails.")
    ck.add_argument("--config", default=None,
                    help="YAML file or bundled recipe name: parts (default), demo, cub, sun, awa2")
    ck.add_argument("--threads", type=int, default=None, help="image-decoding threads")
    ck.add_argument("--json", dest="as_json", action="store_true", help="print JSON, not a table")
    ck.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides, e.g. data.root=/data/zsl data.name=custom")


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
        # heavy imports after parsing, so that --help answers at once
        from mgmrn.config import load_config, parse_overrides

        if args.command == "train":
            from mgmrn.io.locks import run_folder_lock
            from mgmrn.training.resume import load_resumed

            # the lock first: a second run on the folder stops before the backbone check of
            # the config and the other slow imports (torch, timm)
            with run_folder_lock(load_config(args.config, args.overrides, check=False).output_dir):
                cfg = load_config(args.config, args.overrides)
                saved = Path(cfg.output_dir) / "config.yaml"
                if args.resume and saved.is_file():
                    # a resumed run keeps its own config; overrides apply where they change no
                    # schedule, data or model, unless --resume-changes says so
                    cfg = load_resumed(saved, args.overrides, args.resume_changes)
                from mgmrn.training.runner import train  # torch and the models: after a bad config is refused

                train(cfg, resume=args.resume)
        elif args.command == "eval":
            from mgmrn.training.runner import evaluate_checkpoint

            evaluate_checkpoint(args.checkpoint, parse_overrides(args.overrides), args.out)
        elif args.command == "predict":
            from mgmrn.inference.predictor import predict_command

            return predict_command(args)
        elif args.command == "convert-release":
            from mgmrn.commands.convert import convert_release

            out = convert_release(args.checkpoint, load_config(args.config, args.overrides),
                                  args.out)
            print(f"wrote {out}; evaluate it with: mgmrn eval --checkpoint {out}")
        elif args.command == "data" and args.data_command == "download":
            from mgmrn.io.locks import download_lock

            with download_lock(args.root):  # a second download stops before the slow imports
                from mgmrn.commands.data import download_command

                return download_command(args)
        elif args.command == "data":
            from mgmrn.commands.data import check_command

            return check_command(args)
        elif args.command == "compare":
            from mgmrn.commands.compare import compare_command

            return compare_command(args)
        elif args.command == "serve":
            from mgmrn.serve import serve_command

            return serve_command(args)
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
    return 0


def _command_name(args: argparse.Namespace) -> str:
    return f"data {args.data_command}" if args.command == "data" else args.command


if __name__ == "__main__":
    sys.exit(main())

"""``mgmrn predict``: classify images with a checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mgmrn.commands import add_checkpoint_argument

HELP = "classify images with a checkpoint"
DESCRIPTION = ("Top-k classes and strongest attributes of each image; with --explain, a figure of "
               "attention maps per image.")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image files, or folders of them (jpg, jpeg, png, bmp, webp)")
    parser.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--classes", default="all",
                        help="the classes to search: all (default), or a comma-separated "
                             "combination of seen, unseen, added (e.g. added,unseen)")
    parser.add_argument("--add-classes", action="append", metavar="CSV", default=[],
                        help="new classes given by attributes: a CSV with a 'class' column and "
                             "one column per training attribute, by name, any order (repeatable)")
    parser.add_argument("--gamma", type=float, default=None,
                        help="calibration: subtracted from seen-class scores when they are "
                             "searched with others (default: the checkpoint's gamma, whose "
                             "source is printed)")
    parser.add_argument("--json", dest="as_json", action="store_true",
                        help="print the predictions as JSON")
    parser.add_argument("--explain", metavar="DIR", default=None,
                        help="also write a figure of attention maps per image into DIR")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")


def run(args: argparse.Namespace) -> int:
    return run_predict(args.checkpoint, args.inputs, top_k=args.top_k, classes=args.classes,
                       as_json=args.as_json, explain_dir=args.explain, device=args.device,
                       add_classes=args.add_classes, gamma=args.gamma)


def format_prediction(result: dict[str, Any]) -> str:
    """A readable block for one image's prediction."""
    lines = [result["image"]]
    width = max(len(c["name"]) for c in result["classes"])
    for c in result["classes"]:
        lines.append(f"  {c['rank']:>2}. {c['name'].ljust(width)}  {c['score']:8.2f}  "
                     f"p {c['probability']:.3f}  {c['group']}")
    if result["attributes"]:
        lines.append("  attributes: " + ", ".join(f"{a['name']} {a['value']:.2f}"
                                                  for a in result["attributes"]))
    if "explanation" in result:
        lines.append(f"  attention: {result['explanation']}")
    return "\n".join(lines)


def run_predict(checkpoint: str | Path, inputs: Sequence[str | Path], top_k: int = 5,
                classes: str = "all", as_json: bool = False, explain_dir: str | Path | None = None,
                device: str = "cpu", out: TextIO | None = None,
                add_classes: Sequence[str | Path] = (), gamma: float | None = None) -> int:
    """Print the predictions for image files and folders.

    Args:
        checkpoint: a .pt file written by ``mgmrn train``.
        inputs: image files and folders (a folder's jpg, jpeg, png, bmp, webp files, sorted).
        top_k: classes per image.
        classes: ``all`` or a comma-separated combination of ``seen``, ``unseen``, ``added``.
        as_json: print one JSON list instead of readable text.
        explain_dir: also write an attention figure per image there.
        device: where the network runs.
        out: where to print (default: standard output).
        add_classes: CSV files of new classes (``class`` and attribute columns) to search too.
        gamma: calibration; None takes the checkpoint's (its source is logged).

    Returns:
        0; problems raise with a message that names the file.
    """
    from mgmrn.inference.calibration import check_gamma
    from mgmrn.inference.inputs import expand_inputs
    from mgmrn.inference.predictor import load

    out = out or sys.stdout
    check_gamma(gamma)  # before the checkpoint loads: also where no calibration applies
    paths = expand_inputs(inputs)
    predictor = load(checkpoint, device)
    for table in add_classes:
        added = predictor.add_classes_from_csv(table)
        log.info("added %d classes from %s", len(added), table)
    results = predictor.predict(paths, top_k=top_k, classes=classes, explain_dir=explain_dir,
                                gamma=gamma)
    if results:
        calibration = results[0]["calibration"]
        log.info("calibration: gamma = %.3g (%s)", calibration["gamma"], calibration["source"])
    if as_json:
        print(json.dumps(results, indent=2), file=out)
    else:
        print("\n\n".join(format_prediction(r) for r in results), file=out)
    if explain_dir is not None and any("explanation" in r for r in results):
        log.info("attention figures written to %s", explain_dir)
    return 0

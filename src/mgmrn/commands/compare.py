"""``mgmrn compare RUN RUN ...``: finished runs side by side (see
:mod:`mgmrn.inference.comparison`)."""

from __future__ import annotations

from pathlib import Path

HELP = "finished runs side by side (figures, attributes, attention)"
DESCRIPTION = ("Print the figures of finished runs side by side, measure how well each names every "
               "one-hot attribute group on the unseen test images, and draw comparison.png (those "
               "accuracies and the seen-unseen curves). On the parts set, also the share of each "
               "level's attention that falls on the beak, wing and body, and attention figures of "
               "a few test images.")


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folders written by mgmrn train, on the same data")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where to write comparison.png/.json and the figures (default: the "
                             "folder holding the first run)")
    parser.add_argument("--figures", type=int, default=4,
                        help="test images drawn with attention (4)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")


def run(args) -> int:
    from mgmrn.inference.comparison import compare_runs

    compare_runs(args.runs, args.out or Path(args.runs[0]).parent, figures=args.figures,
                 device=args.device)
    return 0

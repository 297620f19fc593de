"""``mgmrn features``: a checkpoint's features of its dataset's images, for other ZSL methods."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mgmrn.commands import add_checkpoint_argument

HELP = "write a checkpoint's features of its dataset (npz and xlsa17 res101.mat/att_splits.mat)"
DESCRIPTION = (
    "For every image of the dataset's splits: the pooled visual features of each level and the "
    "attribute scores, with labels and split locations, as OUT/features.npz and in the xlsa17 "
    "layout (OUT/res101.mat, OUT/att_splits.mat: the same field names, 1-based), so that methods "
    "reading xlsa17 features run on them unchanged. Stopped, it continues where it stopped.")

log = logging.getLogger(__name__)

# as mgmrn.inference.features names them (not imported: it imports torch)
FEATURE_SPLITS = ("trainval", "test_seen", "test_unseen")
MAT_FEATURES = ("levels", "attributes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    parser.add_argument("--split", nargs="+", default=list(FEATURE_SPLITS),
                        choices=FEATURE_SPLITS, help="the splits whose images to take (default: all)")
    parser.add_argument("--mat-features", default="levels", choices=MAT_FEATURES,
                        help="what res101.mat's 'features' holds: the levels' pooled features "
                             "concatenated (default) or the attribute scores; both are also "
                             "under their own names")
    parser.add_argument("--chunk", type=int, default=256,
                        help="images per partial file, the unit a stopped run continues from "
                             "(default 256)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or auto (default: the "
                                                       "run's config)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. data.root=/data/zsl")


def run(args: argparse.Namespace) -> int:
    from mgmrn.config import parse_overrides
    from mgmrn.data import build_data
    from mgmrn.errors import UsageError
    from mgmrn.inference.features import extract, write_features
    from mgmrn.inference.loaded import LoadedRun

    loaded = LoadedRun.from_checkpoint(args.checkpoint, args.device, purpose="evaluate",
                                       overrides=parse_overrides(args.overrides))
    data = build_data(loaded.config.data, seed=loaded.config.seed, inputs=loaded.inputs)
    loaded.check_data(data)
    out = Path(args.out)
    splits = list(dict.fromkeys(args.split))
    if args.chunk < 1:
        raise UsageError(f"--chunk must be at least 1, got {args.chunk}")
    result = extract(loaded, data, out, splits, chunk=args.chunk)
    for path in write_features(result, loaded, out, args.mat_features):
        print(f"wrote {path}")
    return 0

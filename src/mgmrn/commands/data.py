"""``mgmrn data download`` and ``mgmrn data check``: fetch the benchmarks, check a dataset folder
(the work of :mod:`mgmrn.data.download` and :mod:`mgmrn.data.audit`), and print their tables."""

from __future__ import annotations

import argparse
import json

HELP = "download and check the benchmark datasets"
DESCRIPTION = ("Download CUB, SUN, AWA2 and the xlsa17 splits from their official pages; check a "
               "dataset folder before training.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dl = actions.add_parser(
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
    ck = actions.add_parser(
        "check", help="check a dataset folder before training",
        description="Check the layout, the files, every split size against the published "
                    "counts, the attribute and word-vector shapes, and decode every image. "
                    "Prints a table; exit status 1 when a check fails.")
    ck.add_argument("--config", default=None,
                    help="YAML file or bundled recipe name: parts-pretrained, parts, demo, "
                         "custom, cub, sun, awa2; default: the recipe for the data.name given, "
                         "else parts-pretrained")
    ck.add_argument("--threads", type=int, default=None, help="image-decoding threads")
    ck.add_argument("--json", dest="as_json", action="store_true", help="print JSON, not a table")
    ck.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides, e.g. data.root=/data/zsl data.name=custom")


def run(args: argparse.Namespace) -> int:
    return download_command(args) if args.data_command == "download" else check_command(args)


def download_command(args: argparse.Namespace) -> int:
    """Fetch, verify and extract; print one line per archive. Errors propagate as one line."""
    from mgmrn.io.locks import download_lock

    with download_lock(args.root):  # a second download stops before the slow imports
        from mgmrn.data.download.fetch import DownloadError, download

        try:
            rows = download(args.names, args.root, mirror=args.mirror, timeout=args.timeout,
                            retries=args.retries, keep_archives=args.keep_archives,
                            from_file=args.from_file)
        except OSError as err:  # e.g. a full disk: say which file, no traceback
            raise DownloadError(f"{getattr(err, 'filename', None) or args.root}: "
                                f"{err.strerror or err}") from err
    width = max(len(r[1]) for r in rows)
    for name, destination, done in rows:
        print(f"{name:<7} {destination:<{width}}  {done}")
    print(f"next: mgmrn data check --config <cub|sun|awa2> data.root={args.root}")
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Check the dataset of a config; print the table (or JSON). Exit status 1 when a check fails."""
    from mgmrn.config import load_config
    from mgmrn.data.audit import check_data, format_report, report_json

    cfg = load_config(args.config, args.overrides)
    rows = check_data(cfg.data, seed=cfg.seed, threads=args.threads)
    if args.as_json:
        print(json.dumps(report_json(rows), indent=2))
    else:
        print(format_report(rows))
    return 1 if any(r.status == "FAIL" for r in rows) else 0

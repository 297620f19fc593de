"""``mgmrn data download`` and ``mgmrn data check``: run the work of data/download.py and
data/inspect.py for parsed command-line arguments, and print their tables."""

from __future__ import annotations

import argparse
import json

from mgmrn.data.audit import check_data, format_report, report_json
from mgmrn.data.download.fetch import DownloadError, download


def download_command(args: argparse.Namespace) -> int:
    """Fetch, verify and extract; print one line per archive. Errors propagate as one line."""
    try:
        rows = download(args.names, args.root, mirror=args.mirror, timeout=args.timeout,
                        retries=args.retries, keep_archives=args.keep_archives,
                        from_file=args.from_file)
    except OSError as err:  # e.g. a full disk: say which file, no traceback
        raise DownloadError(f"{getattr(err, 'filename', None) or args.root}: {err.strerror or err}") from err
    width = max(len(r[1]) for r in rows)
    for name, destination, done in rows:
        print(f"{name:<7} {destination:<{width}}  {done}")
    print(f"next: mgmrn data check --config <cub|sun|awa2> data.root={args.root}")
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Check the dataset of a config; print the table (or JSON). Exit status 1 when a check fails."""
    from mgmrn.config import load_config

    cfg = load_config(args.config, args.overrides)
    rows = check_data(cfg.data, seed=cfg.seed, threads=args.threads)
    if args.as_json:
        print(json.dumps(report_json(rows), indent=2))
    else:
        print(format_report(rows))
    return 1 if any(r.status == "FAIL" for r in rows) else 0

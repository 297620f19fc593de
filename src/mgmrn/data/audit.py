"""``mgmrn data check``: everything a run needs from ``data.root``, checked in seconds to minutes.

Unlike training, which stops at the first problem, the check goes on and reports every problem it
can see: the layout, the files, each split size against the published counts, the attribute and
word-vector shapes, and a decode of every image. Each check is one row of a table.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mgmrn.config import DataConfig
from mgmrn.data.build import read_records
from mgmrn.data.errors import DataError
from mgmrn.data.readers.records import ZSLRecords, load_attribute_vectors
from mgmrn.data.readers.xlsa17 import FOLDERS, PACKAGED_VECTORS, attribute_vector_file, read_xlsa17
from mgmrn.data.verify import SHOW, find_bad_images

# The xlsa17 proposed splits (Xian et al.): seen classes, unseen classes, training images,
# seen test images, unseen test images.
COUNTS = ("n_seen_classes", "n_unseen_classes", "n_train", "n_test_seen", "n_test_unseen")
PUBLISHED = {
    "cub": (150, 50, 7057, 1764, 2967),
    "sun": (645, 72, 10320, 2580, 1440),
    "awa2": (40, 10, 23527, 5882, 7913),
}
LABELS = {"n_seen_classes": "seen classes", "n_unseen_classes": "unseen classes",
          "n_train": "training images", "n_test_seen": "seen test images",
          "n_test_unseen": "unseen test images"}


@dataclass
class Check:
    """One row of the report.

    Attributes:
        name: what was checked.
        status: ``ok``, ``FAIL``, ``warn`` or ``skipped``.
        detail: what was found.
        files: offending files (all of them; the table shows the first few).
    """

    name: str
    status: str
    detail: str
    files: list[str] = field(default_factory=list)


def _file_row(name: str, path: Path, required: bool, why: str = "") -> Check:
    if path.exists():
        return Check(name, "ok", str(path))
    return Check(name, "FAIL" if required else "warn", f"{path} not found{why}")


def _xlsa17(cfg: DataConfig, rows: list[Check]) -> ZSLRecords | None:
    root = Path(cfg.root)
    folder = root / "xlsa17" / "data" / FOLDERS[cfg.name]
    rows.append(_file_row("xlsa17 folder", folder, True))
    for file in ("res101.mat", "att_splits.mat"):
        rows.append(_file_row(file, folder / file, True))
    val = cfg.split == "val"
    for file in ("trainclasses1.txt", "valclasses1.txt"):
        rows.append(_file_row(file, folder / file, val, "" if val else " (needed for data.split=val)"))
    if any(r.status == "FAIL" for r in rows):
        return None
    try:
        records = read_xlsa17(root, cfg.name, cfg.semantic, cfg.split, cfg.val_fraction,
                              attribute_vectors=cfg.attribute_vectors, load_vectors=False)
    except DataError as err:
        rows.append(Check("splits and image paths", "FAIL", str(err)))
        return None
    rows.append(Check("splits and image paths", "ok",
                      f"{len(records.class_names)} classes x {len(records.attribute_names)} "
                      f"attributes; image paths: '{records.files['dropped_prefix']}' -> {root}"))
    vec_path = attribute_vector_file(root, cfg.name, cfg.attribute_vectors)
    origin = ("data.attribute_vectors" if cfg.attribute_vectors else
              "packaged copy" if vec_path.parent == PACKAGED_VECTORS else "data.root/w2v")
    try:
        vectors = load_attribute_vectors(vec_path, len(records.attribute_names),
                                         records.files["att_splits"])
        rows.append(Check("attribute vectors", "ok", f"{vectors.shape} from {vec_path} ({origin})"))
    except DataError as err:
        rows.append(Check("attribute vectors", "FAIL", str(err)))
    return records


def _reader(cfg: DataConfig, rows: list[Check], seed: int) -> ZSLRecords | None:
    try:
        records = read_records(cfg, seed, draw=False)  # a check writes nothing
    except DataError as err:
        rows.append(Check(f"{cfg.name} dataset", "FAIL", str(err)))
        return None
    rows.append(Check(f"{cfg.name} dataset", "ok",
                      f"{records.files.get('classes', cfg.root)}: {len(records.class_names)} "
                      f"classes x {len(records.attribute_names)} attributes"))
    rows.append(Check("attribute vectors", "ok", f"{records.attribute_vectors.shape} from "
                      f"{records.files.get('attribute_vectors')}"))
    return records


def split_sizes(records: ZSLRecords) -> dict[str, int]:
    """The five counts of :data:`COUNTS` for a set of records."""
    return {"n_seen_classes": len(records.seen), "n_unseen_classes": len(records.unseen),
            "n_train": len(records.paths["train"]), "n_test_seen": len(records.paths["test_seen"]),
            "n_test_unseen": len(records.paths["test_unseen"])}


def _sizes(records: ZSLRecords, expected: dict[str, int] | None, rows: list[Check]) -> None:
    found = split_sizes(records)
    if expected is None:
        rows.append(Check("split sizes", "ok", ", ".join(f"{found[k]:,} {LABELS[k]}"
                                                         for k in COUNTS) + " (no published counts)"))
        return
    for key in COUNTS:
        if found[key] == expected[key]:
            rows.append(Check(LABELS[key], "ok", f"{found[key]:,} (published {expected[key]:,})"))
        else:
            rows.append(Check(LABELS[key], "FAIL", f"{found[key]:,}, but the published split "
                                                   f"has {expected[key]:,}"))


def _images(records: ZSLRecords, rows: list[Check], threads: int | None) -> None:
    paths = records.all_paths()
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        rows.append(Check("image files present", "FAIL", f"{len(missing):,} of {len(paths):,} "
                          f"missing under {records.files.get('image_root')}", missing))
    else:
        rows.append(Check("image files present", "ok", f"{len(paths):,} of {len(paths):,}"))
    gone = set(missing)
    present = [p for p in paths if p not in gone]
    bad = find_bad_images(present, threads)
    if bad:
        rows.append(Check("images decode", "FAIL", f"{len(bad):,} of {len(present):,} cannot be "
                          f"read", [f"{p} ({reason})" for p, reason in bad.items()]))
    else:
        rows.append(Check("images decode", "ok", f"{len(present):,} of {len(present):,}"))


def check_data(cfg: DataConfig, expected: dict[str, int] | None = None, seed: int = 0,
               threads: int | None = None) -> list[Check]:
    """Check a dataset folder as ``mgmrn train`` would read it, reporting every problem found.

    Args:
        cfg: the data config (``name``, ``root``, ``split``, ``attribute_vectors``, ...).
        expected: the five counts of :data:`COUNTS`; default the published ones for CUB, SUN
            and AWA2 with ``data.split=trainval``, else none (sizes are shown, not compared).
        seed: seed of held-out draws, as in training.
        threads: decode threads (default: see :func:`find_bad_images`).

    Returns:
        The rows of the report, in the order they were checked.
    """
    rows: list[Check] = []
    records = _xlsa17(cfg, rows) if cfg.name in FOLDERS else _reader(cfg, rows, seed)
    if records is None:
        rows.append(Check("split sizes and images", "skipped", "the files above must be fixed first"))
        return rows
    if expected is None and cfg.name in PUBLISHED and cfg.split == "trainval":
        expected = dict(zip(COUNTS, PUBLISHED[cfg.name]))
    _sizes(records, expected, rows)
    _images(records, rows, threads)
    return rows


def format_report(rows: list[Check]) -> str:
    """The rows as a table, then the first few offending files of each failed row."""
    width = max(len(r.name) for r in rows)
    lines = [f"{'check':<{width}}  status   detail"]
    lines += [f"{r.name:<{width}}  {r.status:<7}  {r.detail}" for r in rows]
    for row in rows:
        if row.files:
            n = len(row.files)
            lines.append(f"\n{row.name}: {n:,} file{'s' if n > 1 else ''}"
                         f"{f', the first {SHOW}' if n > SHOW else ''}:")
            lines += [f"  {f}" for f in row.files[:SHOW]]
            if len(row.files) > SHOW:
                lines.append(f"  ... and {len(row.files) - SHOW:,} more")
    failed = sum(r.status == "FAIL" for r in rows)
    lines.append(f"\n{failed} of {len(rows)} checks failed" if failed else
                 f"\nall {len(rows)} checks passed")
    return "\n".join(lines)


def report_json(rows: list[Check]) -> dict:
    """The rows for ``--json``: every offending file, not only the first few."""
    return {"ok": not any(r.status == "FAIL" for r in rows), "checks": [asdict(r) for r in rows]}

"""Classes added after training: attribute rows read and checked, and the class sets to search.

A zero-shot network scores any class given by an attribute vector with its cosine classifier, so a
class never seen in training (not even as an unseen class of the run) can be searched as soon as
its attribute row is known. The row must use the training data's attributes, by name.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.errors import DataError
from .errors import UsageError

CLASS_GROUPS = ("seen", "unseen", "added")


def parse_class_sets(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The class groups to search, from ``all`` or a comma-separated (or listed) combination.

    Args:
        spec: ``all``, one of ``seen``, ``unseen``, ``added``, or several (``added,unseen``).

    Returns:
        The groups, in the order of :data:`CLASS_GROUPS`.

    Raises:
        ValueError: an unknown word, naming it and the choices.
    """
    words = spec.split(",") if isinstance(spec, str) else list(spec)
    words = [w.strip() for w in words if w.strip()]
    if words == ["all"]:
        return CLASS_GROUPS
    unknown = [w for w in words if w not in CLASS_GROUPS]
    if unknown or not words:
        raise UsageError(f"--classes must be 'all' or a comma-separated combination of "
                         f"{', '.join(CLASS_GROUPS)}, got {','.join(words) or repr(spec)}")
    return tuple(g for g in CLASS_GROUPS if g in words)


def read_class_table(path: str | Path, attribute_names: Sequence[str]) -> tuple[list[str],
                                                                              np.ndarray]:
    """New classes from a CSV file: a ``class`` column and one column per attribute, any order.

    Args:
        path: the CSV file; header ``class,<attribute>,...`` naming every training attribute once.
        attribute_names: the A training attribute names, which fix the column order returned.

    Returns:
        (names of the N classes, (N, A) float32 attribute rows in training order).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing, unknown or repeated column, a bad value or class name; the message
            names the file, and the line and column where there is one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class table '{path}' does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return parse_class_rows(list(csv.reader(fh)), attribute_names, str(path))


def parse_class_rows(rows: list[list[str]], attribute_names: Sequence[str],
                     source: str) -> tuple[list[str], np.ndarray]:
    """:func:`read_class_table` on rows already split into cells; messages name ``source``."""
    if not rows:
        raise DataError(f"{source} is empty; expected the header class,<attribute names...>")
    header = [h.strip() for h in rows[0]]
    _check_header(header, attribute_names, source)
    position = {name: i for i, name in enumerate(header)}
    order = [position[name] for name in attribute_names]
    names, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{source} line {line}: {len(row)} fields, expected {len(header)} "
                            f"(class and {len(header) - 1} attributes)")
        names.append(row[position["class"]].strip())
        values.append([_number(row[i], header[i], source, line) for i in order])
    if not names:
        raise DataError(f"{source}: no class rows below the header")
    return names, np.asarray(values, dtype=np.float32)


def _check_header(header: list[str], attribute_names: Sequence[str], path: str) -> None:
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(f"{path} line 1: column(s) given twice: {', '.join(repeated)}")
    if "class" not in header:
        raise DataError(f"{path} line 1: no 'class' column; expected class,<attribute names...>")
    known = set(attribute_names)
    unknown = [h for h in header if h != "class" and h not in known]
    missing = [a for a in attribute_names if a not in set(header)]
    problems = []
    if missing:
        problems.append(f"missing attribute column(s) {_listing(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {_listing(unknown)} (not attributes of the training "
                        f"data)")
    if problems:
        raise DataError(f"{path} line 1: {'; '.join(problems)}; the header must name the class "
                        f"and each of the {len(attribute_names)} training attributes once")


def _listing(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _number(cell: str, column: str, path: Path | str, line: int | None) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        where = f"{path} line {line}" if line is not None else str(path)
        raise DataError(f"{where}, column '{column}': expected a number, got '{cell.strip()}'")
    return value


def check_new_classes(names: Sequence[str], attributes: Any, attribute_names: Sequence[str],
                      existing: Sequence[str], source: str = "add_classes") -> np.ndarray:
    """Check names and rows of classes to add; return the rows as an (N, A) float32 array.

    Args:
        names: N new class names: non-empty, distinct, none already a class.
        attributes: (N, A) rows in training attribute order (array, tensor or nested lists), or
            N mappings attribute name -> value naming every training attribute.
        attribute_names: the A training attribute names.
        existing: the classes already known.
        source: what to name in messages (a file, or ``add_classes``).

    Raises:
        ValueError: the message names the class and what is wrong.
    """
    names = list(names)
    if not names:
        raise DataError(f"{source}: no classes given")
    seen_names: set[str] = set(existing)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{source}: class names must be non-empty text, got {name!r}")
        if name in seen_names:
            raise DataError(f"{source}: class '{name}' already exists; choose another name")
        seen_names.add(name)
    if len(attributes) and isinstance(attributes[0], Mapping):
        rows = np.asarray([_row_from_mapping(m, attribute_names, source, n)
                           for m, n in zip(attributes, names, strict=True)], dtype=np.float32)
    else:
        rows = np.asarray(attributes.detach().cpu() if hasattr(attributes, "detach")
                          else attributes, dtype=np.float32)
    if rows.shape != (len(names), len(attribute_names)):
        raise DataError(f"{source}: attributes must be {len(names)} rows of "
                        f"{len(attribute_names)} values (one per training attribute), got shape "
                        f"{rows.shape}")
    for name, row in zip(names, rows, strict=True):
        if not np.isfinite(row).all():
            raise DataError(f"{source}: class '{name}' has a value that is not a finite number")
        if not np.abs(row).sum() > 0:
            raise DataError(f"{source}: class '{name}' has every attribute 0; the cosine "
                            f"classifier needs at least one non-zero attribute")
    return rows


def _row_from_mapping(values: Mapping[str, Any], attribute_names: Sequence[str], source: str,
                      name: str) -> list[float]:
    unknown = [k for k in values if k not in set(attribute_names)]
    missing = [a for a in attribute_names if a not in values]
    if unknown or missing:
        parts = ([f"missing attribute(s) {_listing(missing)}"] if missing else []) + (
            [f"unknown attribute(s) {_listing(unknown)}"] if unknown else [])
        raise DataError(f"{source}: class '{name}': {'; '.join(parts)}")
    return [_number(str(values[a]), a, f"{source}: class '{name}'", None)
            for a in attribute_names]

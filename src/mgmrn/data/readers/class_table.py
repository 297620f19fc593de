"""The attribute table: a ``class`` column and one column per attribute, one row per class.

One reader serves every place a table comes from: a custom dataset's classes.csv (which also has a
``split`` column and defines the attributes), a table of classes added after training (columns by
name in any order, naming the training attributes) and a row pasted in the explorer page. Every
message names the source (a file, or ``pasted row``), the line and the field where there is one,
and what was expected.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mgmrn.data.errors import DataError
from mgmrn.data.readers.records import read_text

ZERO_ROW = "has every attribute 0; the cosine classifier needs at least one non-zero attribute"


@dataclass
class ClassTable:
    """The classes of an attribute table.

    Attributes:
        names: the N class names, in table order.
        attribute_names: the A attributes, in the order of ``values``' columns.
        values: (N, A) float32 attribute strengths.
        lines: the line of each class in the source, for messages.
        text: the other named columns (e.g. ``split``): column name -> N stripped cells.
    """

    names: list[str]
    attribute_names: list[str]
    values: np.ndarray
    lines: list[int]
    text: dict[str, list[str]]


def read_class_table(path: str | Path, attribute_names: Sequence[str] | None = None,
                     text_columns: Sequence[str] = ()) -> ClassTable:
    """Read an attribute table from a UTF-8 CSV file (a byte-order mark is accepted).

    Args:
        path: the CSV file.
        attribute_names: the attributes the table must name, each once, in any column order;
            None: the header is ``class,<text columns>,<attributes...>`` and defines them.
        text_columns: columns of text besides ``class`` (``split`` for a custom dataset).

    Raises:
        DataError: no such file, bytes that are not UTF-8, or a bad header, row or value; the
            message names the file, the line and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; expected a CSV attribute table with the header "
                        f"{_expected_header(attribute_names, text_columns)}")
    rows = list(csv.reader(io.StringIO(read_text(path), newline="")))
    return parse_class_table(rows, str(path), attribute_names, text_columns)


def parse_class_table(rows: list[list[str]], source: str,
                      attribute_names: Sequence[str] | None = None,
                      text_columns: Sequence[str] = (), first_line: int = 1) -> ClassTable:
    """:func:`read_class_table` on rows already split into cells.

    Args:
        rows: the header row, then one row per class; rows of blank cells are skipped.
        source: what messages name: the file, or ``pasted row``.
        attribute_names: see :func:`read_class_table`.
        text_columns: see :func:`read_class_table`.
        first_line: the line number of the header in the source.
    """
    if not rows:
        raise DataError(f"{source} is empty; expected the header "
                        f"{_expected_header(attribute_names, text_columns)}")
    header = [h.strip() for h in rows[0]]
    attributes = _check_header(header, attribute_names, text_columns, source, first_line)
    position = {name: i for i, name in enumerate(header)}
    order = [position[a] for a in attributes]
    names, lines, values = [], [], []
    text: dict[str, list[str]] = {c: [] for c in text_columns}
    first_seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=first_line + 1):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{source} line {line}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} fields, expected {len(header)} "
                            f"({_listing_columns(text_columns, len(attributes))})")
        name = row[position["class"]].strip()
        if not name:
            raise DataError(f"{where}, field 'class': empty class name")
        if name in first_seen:
            raise DataError(f"{where}, field 'class': class '{name}' already given on line "
                            f"{first_seen[name]}")
        for column in text_columns:
            text[column].append(row[position[column]].strip())
        values.append([parse_number(row[i], f"{where}, field '{header[i]}'") for i in order])
        if not any(values[-1]):
            raise DataError(f"{where}: class '{name}' {ZERO_ROW}")
        first_seen[name] = line
        names.append(name)
        lines.append(line)
    if not names:
        raise DataError(f"{source}: no class rows below the header")
    return ClassTable(names, list(attributes), np.asarray(values, dtype=np.float32), lines, text)


# attribute strengths are compared after scaling each class's row to unit length: beyond this,
# float32 squares overflow and the row scores 0 (3e38 is finite, yet its square is not)
MAX_ATTRIBUTE_VALUE = 1e6


def parse_number(cell: str, where: str) -> float:
    """A finite number from a table cell; ``where`` (source, line, field) starts the message."""
    try:
        value = float(cell)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise DataError(f"{where}: expected a number, got '{str(cell).strip()}'")
    if abs(value) > MAX_ATTRIBUTE_VALUE:
        raise DataError(f"{where}: expected a number from {-MAX_ATTRIBUTE_VALUE:g} to "
                        f"{MAX_ATTRIBUTE_VALUE:g}, got '{str(cell).strip()}'")
    return value


def listing(names: Sequence[str], most: int = 8) -> str:
    """``'a', 'b' and 3 more``: names quoted, at most ``most`` of them."""
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _check_header(header: list[str], attribute_names: Sequence[str] | None,
                  text_columns: Sequence[str], source: str, line: int) -> list[str]:
    """The attribute columns of a header, in the order the values are returned."""
    where = f"{source} line {line}"
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(f"{where}: column(s) given twice: {', '.join(repeated)}")
    leading = ["class", *text_columns]
    if attribute_names is None:
        if header[:len(leading)] != leading or len(header) <= len(leading):
            raise DataError(f"{where}: header must be {','.join(leading)},<attr 1>,...,<attr A> "
                            f"with at least one attribute, got {','.join(header)}")
        return header[len(leading):]
    absent = [c for c in leading if c not in header]
    if absent:
        raise DataError(f"{where}: no {' or '.join(repr(c) for c in absent)} column; expected "
                        f"{_expected_header(attribute_names, text_columns)}")
    known = set(attribute_names)
    unknown = [h for h in header if h not in leading and h not in known]
    missing = [a for a in attribute_names if a not in set(header)]
    problems = []
    if missing:
        problems.append(f"missing attribute column(s) {listing(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {listing(unknown)} (not attributes of the training "
                        f"data)")
    if problems:
        raise DataError(f"{where}: {'; '.join(problems)}; the header must name "
                        f"{' and '.join(leading)} and each of the {len(attribute_names)} "
                        f"training attributes once")
    return list(attribute_names)


def _expected_header(attribute_names: Sequence[str] | None, text_columns: Sequence[str]) -> str:
    leading = ",".join(["class", *text_columns])
    if attribute_names is None:
        return f"{leading},<attr 1>,...,<attr A>"
    return f"{leading},<attribute names...>"


def _listing_columns(text_columns: Sequence[str], n_attributes: int) -> str:
    return ", ".join(["class", *text_columns]) + f" and {n_attributes} attributes"

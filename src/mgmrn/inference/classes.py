"""Classes added after training: attribute rows read and checked, and the class sets to search.

A zero-shot network scores any class given by an attribute vector with its cosine classifier, so a
class never seen in training (not even as an unseen class of the run) can be searched as soon as
its attribute row is known. The row must use the training data's attributes, by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgmrn.data.errors import DataError
from mgmrn.data.readers import class_table
from mgmrn.data.readers.class_table import MAX_ATTRIBUTE_VALUE, ZERO_ROW, listing, parse_number
from mgmrn.errors import UsageError

CLASS_GROUPS = ("seen", "unseen", "added")


def parse_class_sets(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The class groups to search, from ``all`` or a comma-separated (or listed) combination.

    Args:
        spec: ``all``, one of ``seen``, ``unseen``, ``added``, or several (``added,unseen``).

    Returns:
        The groups, in the order of :data:`CLASS_GROUPS`.

    Raises:
        UsageError: an unknown word, naming it and the choices.
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
        DataError: no such file, or a missing, unknown or repeated column, a bad value or class
            name; the message names the file, and the line and field where there is one.
    """
    table = class_table.read_class_table(path, attribute_names)
    return table.names, table.values


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
        DataError: the message names the class and what is wrong.
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
        if np.abs(row).max() > MAX_ATTRIBUTE_VALUE:
            raise DataError(f"{source}: class '{name}' has a value beyond "
                            f"+-{MAX_ATTRIBUTE_VALUE:g} (strengths are scaled per class; such "
                            f"values overflow)")
        if not np.abs(row).sum() > 0:
            raise DataError(f"{source}: class '{name}' {ZERO_ROW}")
    return rows


def _row_from_mapping(values: Mapping[str, Any], attribute_names: Sequence[str], source: str,
                      name: str) -> list[float]:
    unknown = [k for k in values if k not in set(attribute_names)]
    missing = [a for a in attribute_names if a not in values]
    if unknown or missing:
        parts = ([f"missing attribute(s) {listing(missing)}"] if missing else []) + (
            [f"unknown attribute(s) {listing(unknown)}"] if unknown else [])
        raise DataError(f"{source}: class '{name}': {'; '.join(parts)}")
    return [parse_number(str(values[a]), f"{source}: class '{name}', field '{a}'")
            for a in attribute_names]


class ClassRegistry:
    """The classes a predictor searches: the checkpoint's, seen and unseen, and those added.

    Added classes follow the C classes of the checkpoint, as the group ``added``; removing one
    leaves every other class its index.

    Args:
        names: C class names.
        attribute_names: A attribute names.
        attributes: (C, A) class attribute vectors, the classifier's targets; kept on ``device``.
        seen, unseen: indices of the classes seen in training and of the unseen ones.
        device: where the attribute vectors live (where the network runs).
    """

    def __init__(self, names: Sequence[str], attribute_names: Sequence[str], attributes,
                 seen, unseen, device="cpu"):
        self.names = list(names)
        self.attribute_names = list(attribute_names)
        self.attributes = torch.as_tensor(attributes).float().to(device)
        self.seen = torch.as_tensor(seen).long().cpu()
        self.unseen = torch.as_tensor(unseen).long().cpu()
        self.added = torch.zeros(0, dtype=torch.long)

    def add(self, names: Sequence[str], attributes: Any, source: str | None = None) -> list[int]:
        """Append checked classes (see :func:`check_new_classes`); their N indices."""
        rows = check_new_classes(names, attributes, self.attribute_names, self.names,
                                 **({"source": source} if source else {}))
        start = len(self.names)
        self.names.extend(names)
        self.attributes = torch.cat([self.attributes, torch.as_tensor(rows).to(self.attributes)])
        new = torch.arange(start, start + len(rows))
        self.added = torch.cat([self.added, new])
        return new.tolist()

    def remove_added(self, names: Sequence[str]) -> None:
        """Forget added classes; a name that is not an added class is refused."""
        added = {self.names[int(i)] for i in self.added}
        unknown = [n for n in names if n not in added]
        if unknown:
            raise UsageError(f"not added classes: {', '.join(unknown)}")
        keep = [i for i, name in enumerate(self.names) if name not in set(names)]
        first_added = len(self.names) - len(self.added)
        self.names = [self.names[i] for i in keep]
        self.attributes = self.attributes[torch.tensor(keep, device=self.attributes.device)]
        self.added = torch.arange(first_added, len(self.names))

    def group(self, index: int) -> str:
        """``seen``, ``unseen`` or ``added``: the group of class ``index``."""
        if bool((self.seen == index).any()):
            return "seen"
        return "added" if index >= len(self.names) - len(self.added) else "unseen"

    def candidates(self, classes: str | Sequence[str] = "all"):
        """Sorted indices of the classes to search: ``all`` or a combination of ``seen``,
        ``unseen``, ``added`` (see :func:`parse_class_sets`); groups holding no class are
        refused."""
        groups = parse_class_sets(classes)
        members = {"seen": self.seen, "unseen": self.unseen, "added": self.added}
        chosen = torch.cat([members[g] for g in groups])
        if not len(chosen):
            raise UsageError(f"no class to search in {','.join(groups)}"
                             + ("; add classes first (--add-classes)" if "added" in groups else ""))
        return torch.sort(chosen).values

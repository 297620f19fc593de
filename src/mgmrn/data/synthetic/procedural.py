"""What the built-in drawn sets (demo, parts) share: classes, unseen choice, writing, caching.

A drawn set's classes are all combinations of a few attribute groups, one value from each; its
attributes are those values, one-hot per group. The unseen classes are chosen with a seed so that
every value still occurs in at least :data:`MIN_SEEN_CLASSES` seen classes: an unseen class is a
new combination of values the model has only seen apart.

A set is written once, in the custom format (``classes.csv``, ``images/<class>/``,
``test_seen.txt``), plus a JSON record of the generator parameters, to ``data.root``; it is
regenerated when the record differs. Generation goes to a temporary folder that is renamed into
place, so an interrupted run or a concurrent rank never sees a half-written set.

Several processes may share one ``data.root`` (every run started in a folder uses the default
one): a process reading a set holds a shared lock on it until it exits, and a set is redrawn only
under an exclusive one, so a run with other settings is refused while another reads the set,
instead of redrawing it under that run; runs with the same settings share it. Checking and
drawing happen under a second lock, so that two runs needing the same new set draw it once.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from mgmrn.data.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no flock; drawn sets are not locked
    fcntl = None

log = logging.getLogger(__name__)

MIN_SEEN_CLASSES = 3
TEST_SEEN_FRACTION = 0.2
MAX_TRIES = 2000


@dataclasses.dataclass
class DrawnClasses:
    """The classes of a drawn set.

    Attributes:
        combos: C value tuples (one value per group), class c is combos[c].
        names: C class names.
        attribute_names: A names, ``<group>_<value>``, group after group.
        attributes: (C, A) 0/1 float32.
        unseen: sorted indices of the unseen classes.
        withheld: sorted indices of the classes left out of the run entirely (neither seen nor
            unseen), to be added as new classes after training.
    """

    combos: list[tuple[str, ...]]
    names: list[str]
    attribute_names: list[str]
    attributes: np.ndarray
    unseen: np.ndarray
    withheld: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def choose_unseen(attributes: np.ndarray, groups: list[np.ndarray], num_unseen: int,
                  seed: int, section: str = "demo") -> np.ndarray:
    """Unseen classes such that every attribute value keeps >= MIN_SEEN_CLASSES seen classes.

    When there are enough unseen classes, every value also occurs in some unseen class, so that
    the test exercises every value.

    Args:
        attributes: (C, A) 0/1 class attributes.
        groups: attribute columns of each group (e.g. shape, colour, pattern).
        num_unseen: how many classes to make unseen.
        seed: seed of the draw.
        section: config section of the set (``data.<section>.num_unseen``), for messages.

    Returns:
        Sorted class indices.
    """
    n_classes = len(attributes)
    if not 1 <= num_unseen < n_classes:
        raise DataError(f"config key 'data.{section}.num_unseen' must lie in 1..{n_classes - 1} "
                        f"({n_classes} classes), got {num_unseen}")
    cover = num_unseen >= max(len(g) for g in groups)
    rng = np.random.default_rng([seed, 2])
    for _ in range(MAX_TRIES):
        unseen = np.sort(rng.choice(n_classes, num_unseen, replace=False))
        seen_counts = np.delete(attributes, unseen, axis=0).sum(axis=0)
        if seen_counts.min() < MIN_SEEN_CLASSES:
            continue
        if cover and attributes[unseen].sum(axis=0).min() < 1:
            continue
        return unseen
    raise DataError(f"cannot choose {num_unseen} unseen {section} classes so that every attribute "
                    f"value occurs in {MIN_SEEN_CLASSES} seen classes; lower "
                    f"data.{section}.num_unseen")


def one_hot_classes(groups: list[tuple[str, tuple[str, ...]]], num_unseen: int, seed: int,
                    section: str, name: Callable[[tuple[str, ...]], str],
                    num_withheld: int = 0) -> DrawnClasses:
    """Every combination of one value per group, one-hot attributes, and the unseen choice.

    Args:
        groups: (group name, its values) in attribute order; classes run over the product of
            the values, the last group fastest.
        num_unseen: how many classes to make unseen.
        seed: seed of the unseen draw.
        section: config section of the set, for messages.
        name: class name of a combination.
        num_withheld: further classes left out of the run; drawn with the unseen ones, so that
            the seen classes still cover every value.
    """
    if num_withheld < 0:
        raise DataError(f"config key 'data.{section}.num_withheld' must be 0 or more, got "
                        f"{num_withheld}")
    combos = list(itertools.product(*(values for _, values in groups)))
    attribute_names = [f"{group}_{value}" for group, values in groups for value in values]
    bounds = np.cumsum([0, *(len(values) for _, values in groups)])
    attributes = np.zeros((len(combos), len(attribute_names)), dtype=np.float32)
    for i, combo in enumerate(combos):
        columns = [bounds[g] + groups[g][1].index(value) for g, value in enumerate(combo)]
        attributes[i, columns] = 1
    columns = [np.arange(bounds[g], bounds[g + 1]) for g in range(len(groups))]
    unseen = choose_unseen(attributes, columns, num_unseen + num_withheld, seed, section)
    withheld = np.sort(np.random.default_rng([seed, 3]).choice(unseen, num_withheld, replace=False))
    return DrawnClasses(combos, [name(c) for c in combos], attribute_names, attributes,
                        np.setdiff1d(unseen, withheld), withheld)


def write_set(folder: Path, classes: DrawnClasses, images_per_class: int, seed: int,
              draw: Callable[[np.random.Generator, int], np.ndarray], record: str,
              params: dict) -> None:
    """Draw a whole set into ``folder`` (custom format); every image from its own seed.

    Args:
        folder: an existing empty folder.
        classes: the set's classes.
        images_per_class: images drawn per class; the last fifth of each seen class is the seen
            test set.
        seed: the set's seed; image i of class c is drawn from ``default_rng([seed, c, i])``.
        draw: (generator, class index) -> (H, W, 3) uint8 image.
        record: file name of the parameter record, e.g. ``demo.json``.
        params: what the record holds.
    """
    unseen, withheld = set(classes.unseen.tolist()), set(classes.withheld.tolist())
    n_test = min(round(images_per_class * TEST_SEEN_FRACTION), images_per_class - 1)
    test_seen = []
    for c, name in enumerate(classes.names):
        class_dir = folder / ("withheld/images" if c in withheld else "images") / name
        class_dir.mkdir(parents=True)
        for i in range(images_per_class):
            pixels = draw(np.random.default_rng([seed, c, i]), c)
            Image.fromarray(pixels).save(class_dir / f"{i:04d}.png", optimize=False)
            if c not in unseen | withheld and i >= images_per_class - n_test:
                test_seen.append(f"{name}/{i:04d}.png")
    with open(folder / "classes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "split", *classes.attribute_names])
        for c, name in enumerate(classes.names):
            if c not in withheld:
                split = "unseen" if c in unseen else "seen"
                writer.writerow([name, split, *(f"{v:g}" for v in classes.attributes[c])])
    if withheld:  # the rows of ``mgmrn predict --add-classes``: class,<attributes...>
        with open(folder / "withheld" / "classes.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["class", *classes.attribute_names])
            for c in sorted(withheld):
                writer.writerow([classes.names[c], *(f"{v:g}" for v in classes.attributes[c])])
    (folder / "test_seen.txt").write_text("\n".join(test_seen) + "\n")
    (folder / record).write_text(json.dumps(params, indent=2) + "\n")


def is_drawn(root: str | Path, record: str, params: dict) -> bool:
    """Whether ``root`` holds the set whose record is ``params``, drawn whole."""
    return _cached(Path(root), record, params)


def _cached(root: Path, record: str, params: dict) -> bool:
    try:
        return json.loads((root / record).read_text()) == params
    except (OSError, ValueError):
        return False


def ensure_drawn(root: str | Path, record: str, params: dict, write: Callable[[Path], None],
                 what: str, n_images: int) -> Path:
    """Return ``root`` holding the set whose record is ``params``, drawing it first if needed.

    Args:
        root: the cache folder (data.root).
        record: file name of the parameter record inside ``root``.
        params: the parameters; a cache whose record differs is regenerated.
        write: draws the set into an empty folder.
        what: the set's name, for messages.
        n_images: how many images ``write`` draws, for the log.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _drawing(root):
        if _cached(root, record, params):
            _hold(root, exclusive=False)
            return root
        if root.exists() and any(root.iterdir()) and not (root / record).is_file():
            raise DataError(f"{root} (data.root) is not empty and holds no {record}: it is not a "
                            f"{what} cache, and it will not be overwritten; point data.root "
                            f"elsewhere")
        if not _hold(root, exclusive=True):
            raise DataError(f"{root} (data.root) holds the {what} set drawn with other settings "
                            f"(its {record} differs), and another mgmrn process is reading it; "
                            f"it is not redrawn under that process: point data.root at another "
                            f"folder for these settings, or wait for the other run to end")
        try:
            start = time.perf_counter()
            tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            try:
                write(tmp)
                _swap_into_place(tmp, root, record, params)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            _hold(root, exclusive=False)  # from now on this process reads it, like the others
    log.info("drew the %s set (%d images) into %s in %.1f s", what, n_images, root,
             time.perf_counter() - start)
    return root


# root -> descriptor of its reading lock, held by this process until it exits (the kernel then
# releases it, also after a kill): a run reads its images in every epoch
_reading: dict[Path, int] = {}


def _open_lock(root: Path, kind: str) -> int | None:
    """A descriptor of the lock file ``kind`` of the set at ``root`` (None: none can be made).

    The file lies beside the set, not inside it: a redraw replaces the folder, and the lock must
    stay the same file. Read-only is enough for flock, so another user's lock file serves; a set
    in a folder nobody may write to (a shared, read-only copy) is not locked, and cannot be
    redrawn either.
    """
    try:
        return os.open(root.parent / f".{root.name}.{kind}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as err:
        log.debug("%s is not locked: %s", root, err)
        return None


@contextmanager
def _drawing(root: Path) -> Iterator[None]:
    """Exclusive, waiting: one process at a time checks and (re)draws the set at ``root``."""
    fd = None if fcntl is None else _open_lock(root, "draw")
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _hold(root: Path, exclusive: bool) -> bool:
    """Hold the reading lock of ``root``: shared (always granted under :func:`_drawing`, whose
    holder alone takes it exclusive), or exclusive, not waiting; whether it was granted."""
    key = root.resolve()
    fd = _reading.get(key)
    if fd is None:
        fd = None if fcntl is None else _open_lock(root, "read")
        if fd is None:
            return True
        _reading[key] = fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
    except BlockingIOError:
        # a refused conversion drops the shared lock held before: take it again
        fcntl.flock(fd, fcntl.LOCK_SH)
        return False
    return True


def _swap_into_place(tmp: Path, root: Path, record: str, params: dict) -> None:
    """Rename ``tmp`` to ``root``, replacing an outdated cache; tolerate a concurrent winner."""
    old = None
    if _cached(root, record, params):  # a concurrent process finished first: keep its copy
        return
    if root.exists():
        old = root.parent / f".{root.name}-old-{os.getpid()}"
        try:
            os.rename(root, old)
        except FileNotFoundError:  # a concurrent process moved it first
            old = None
    try:
        os.rename(tmp, root)
    except OSError:
        if not _cached(root, record, params):  # another process put something else there meanwhile
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

"""Checks run before training: every image exists, and every image decodes.

A missing or broken file found here costs seconds; found by a DataLoader worker in epoch 12 it costs
a run. Decoding is checked for real (JPEGs at 1/8 scale, which still reads all compressed data),
because ``PIL.Image.verify`` alone passes truncated JPEGs.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from mgmrn.data.datasets import HIGH_DEPTH, check_image_size, to_rgb
from mgmrn.data.errors import DataError
from mgmrn.distributed import is_main_process

log = logging.getLogger(__name__)

SHOW = 5  # file names shown in a message before "... and N more"


def _listing(paths: list[str]) -> str:
    shown = "\n  ".join(paths[:SHOW])
    more = f"\n  ... and {len(paths) - SHOW} more" if len(paths) > SHOW else ""
    return f"\n  {shown}{more}"


def check_files_exist(paths: list[str], root: str | Path) -> None:
    """Raise a :class:`DataError` listing missing images (the first few and the count).

    Args:
        paths: image files.
        root: the folder the paths were resolved against, named in the message.
    """
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{len(missing)} of {len(paths)} image files are missing under the image "
                        f"root {root} (data.root):{_listing(missing)}")


def image_error(path: str) -> str | None:
    """Decode ``path``; return None when it decodes, else the reason it does not.

    Args:
        path: an image file.
    """
    try:
        with Image.open(path) as im:
            check_image_size(im, path)
            if im.format == "JPEG":
                # draft() decodes at reduced scale: cheap, yet every compressed byte is read
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
            if im.mode in HIGH_DEPTH:  # the conversion training makes, where it is not trivial
                to_rgb(im)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
        return f"{type(err).__name__}: {err}"
    return None


def find_bad_images(paths: list[str], threads: int | None = None) -> dict[str, str]:
    """Decode every image in a thread pool (PIL releases the GIL while decoding).

    Args:
        paths: image files.
        threads: worker threads; default twice the CPU count, at most 32.

    Returns:
        path -> reason, for each file that does not decode.
    """
    threads = threads or min(32, 2 * (os.cpu_count() or 1))
    bad = {}
    pool = ThreadPoolExecutor(threads)
    try:
        results = pool.map(image_error, paths, chunksize=64)
        bar = tqdm(results, total=len(paths), desc="verifying images", unit="img",
                   disable=not is_main_process(), leave=False)
        for path, reason in zip(paths, bar, strict=True):
            if reason is not None:
                bad[path] = reason
    finally:
        # stopped part way (a signal, Ctrl-C): drop the images not begun, not wait for them all
        pool.shutdown(wait=False, cancel_futures=True)
    return bad


def verify_images(paths: list[str], skip_bad_images: bool, threads: int | None = None) -> set[str]:
    """Check that every image decodes.

    Args:
        paths: image files.
        skip_bad_images: warn about each unreadable file and return it, instead of raising.
        threads: worker threads for :func:`find_bad_images`.

    Returns:
        The unreadable files to leave out (empty unless ``skip_bad_images``).
    """
    bad = find_bad_images(paths, threads)
    if not bad:
        return set()
    if not skip_bad_images:
        lines = [f"{p} ({reason})" for p, reason in bad.items()]
        raise DataError(f"{len(bad)} of {len(paths)} image files cannot be read:{_listing(lines)}\n"
                        f"replace them, or set data.skip_bad_images=true to leave them out")
    for path, reason in bad.items():
        log.warning("leaving out unreadable image %s (%s)", path, reason)
    return set(bad)

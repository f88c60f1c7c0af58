"""A folder of images in any layout, cut into crops; files that cannot be used are skipped and reported."""

from __future__ import annotations

import logging
import os

from img2img_filters.data.cache import DecodedImages, decode_images
from img2img_filters.data.split import check_limit, choose_indices
from img2img_filters.imageio import list_images

__all__ = ["load_image_folder", "report_skipped"]

_log = logging.getLogger(__name__)

_SHOWN = 10  # skipped files named in the warning; all are on the result


def load_image_folder(
    folder: str | os.PathLike[str],
    *,
    crop_size: int = 64,
    stride: int | None = None,
    max_side: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    cache: bool = True,
    workers: int = 2,
    progress: bool = False,
) -> DecodedImages:
    """Every image under ``folder`` (recursively), cut into square crops on a grid.

    Files that cannot be read, and images smaller than one crop, are skipped:
    the load goes on, one warning lists them, and ``result.skipped`` holds each
    ``(path, reason)`` once.

    Args:
        folder: The folder (see :func:`img2img_filters.imageio.list_images` for the files taken).
        crop_size: Side of each crop.
        stride: Step between crops (``None``: ``crop_size``, no overlap).
        max_side: Shrink each image so its shorter side is at most this, first (``None``: no).
        limit: Use at most this many files, chosen with ``seed`` (kept in sorted order).
        seed: Seed of the choice when ``limit`` is set.
        cache: Use the decoded-image cache (:func:`img2img_filters.data.cache.decode_images`).
        workers: Decoding processes.
        progress: Show a progress bar while the files are decoded (only on a terminal).

    Returns:
        :class:`~img2img_filters.data.cache.DecodedImages`: ``images`` uint8 ``(N, 3, crop, crop)``,
        ``groups`` ``(N,)`` indices into ``paths``, ``skipped``.

    Raises:
        FileNotFoundError: If the folder does not exist or holds no image files.
        ValueError: For a bad ``limit`` or crop parameter.
    """
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(
            f"no image files found in {str(folder)!r} (looked for .png, .jpg, ...)"
        )
    check_limit(limit)
    if limit == 0:
        raise ValueError(f"limit must be a positive integer or None; got {limit}")
    paths = [paths[i] for i in choose_indices(len(paths), limit, seed)]
    decoded = decode_images(
        paths,
        crop_size=crop_size,
        stride=stride,
        max_side=max_side,
        cache=cache,
        workers=workers,
        progress=progress,
    )
    report_skipped(decoded, folder)
    return decoded


def report_skipped(decoded: DecodedImages, where: str | os.PathLike[str]) -> None:
    """One logged warning that lists the skipped files of ``decoded`` (none when none was skipped)."""
    if not decoded.skipped:
        return
    shown = "; ".join(f"{p}: {reason}" for p, reason in decoded.skipped[:_SHOWN])
    more = len(decoded.skipped) - _SHOWN
    tail = f"; and {more} more" if more > 0 else ""
    _log.warning(
        "skipped %d of %d image files in %r (every one is listed with its reason on the "
        "datasets' .skipped): %s%s",
        len(decoded.skipped),
        len(decoded.paths),
        str(where),
        shown,
        tail,
    )

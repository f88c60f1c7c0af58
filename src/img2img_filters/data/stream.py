"""Folders larger than memory, or of photos of mixed sizes: random crops, decoded when drawn.

:class:`FolderCrops` keeps only the list of files. Item ``p`` of an epoch is a
square crop of file ``p // crops_per_image`` at a position drawn from
``(seed, epoch, p)`` alone, so every epoch sees new crops, the same in every run
and in every worker process, and a resumed run draws exactly what the
interrupted one would have. :func:`img2img_filters.train_model` tells it the epoch
(:meth:`FolderCrops.set_epoch`); the validation set keeps its crops fixed.

>>> train, val = folder_crops("photos/", "study-sobel", crops_per_image=4)  # doctest: +SKIP
>>> train_model(model, train, val, num_workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from img2img_filters.data.filtered import PhotoPairs
from img2img_filters.data.split import check_fraction, split_by_group
from img2img_filters.filters import Filter, create_filter
from img2img_filters.imageio import ImageReadError, list_images, read_image

__all__ = ["FolderCrops", "folder_crops"]

_log = logging.getLogger(__name__)

_REPORTED: set[str] = set()  # files already reported as unusable by this process


def _report(path: Path, reason: str) -> None:
    """Log a warning about an unusable file, once per file and process."""
    key = os.fspath(path)
    if key in _REPORTED:
        return
    _REPORTED.add(key)
    _log.warning("skipped image file %r: %s; a crop of another file takes its place", key, reason)


class FolderCrops(PhotoPairs):
    """Random square crops of image files, decoded batch by batch; nothing is held in memory.

    Items are ``(input, target)``: ``input`` float32 ``(3, crop, crop)`` RGB in
    [0, 1], ``target`` = ``filter(input)``. Files are read with
    :func:`img2img_filters.imageio.read_image` when a batch needs them. A file that
    cannot be read, or is smaller than the crop, is reported once (a
    ``RuntimeWarning`` naming its path) and replaced by the next usable file in
    the list, so a batch always has its size.

    Args:
        paths: The image files (any sizes at least ``crop_size`` on each side).
        filter: The filter (a spec string or a :class:`~img2img_filters.filters.Filter`).
        crop_size: Side of the crops.
        crops_per_image: Crops drawn from each file per epoch.
        seed: Seed of the crop positions.
        fixed: Draw the same crops every epoch (for validation).
        source: A short description of where the files came from.

    Raises:
        ValueError: For an empty list or a bad parameter.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        filter: str | Filter,
        *,
        crop_size: int = 64,
        crops_per_image: int = 1,
        seed: int = 0,
        fixed: bool = False,
        source: str = "",
    ) -> None:
        for name, value in (("crop_size", crop_size), ("crops_per_image", crops_per_image)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("paths is empty: FolderCrops needs at least one image file")
        self.filter = create_filter(filter)
        self.crop_size = int(crop_size)
        self.crops_per_image = int(crops_per_image)
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.source = source
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops are drawn (ignored when ``fixed``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths) * self.crops_per_image

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every item."""
        return self.crop_size, self.crop_size

    def _read(self, index: int) -> np.ndarray:
        """The first usable file from ``index`` on (wrapping), as ``(H, W, 3)`` uint8."""
        for step in range(len(self.paths)):
            path = self.paths[(index + step) % len(self.paths)]
            try:
                image = read_image(path)
            except (ImageReadError, OSError) as error:
                _report(path, " ".join(str(error).split()))
                continue
            height, width = image.shape[:2]
            if min(height, width) < self.crop_size:
                _report(
                    path,
                    f"smaller than one {self.crop_size}x{self.crop_size} crop ({height}x{width})",
                )
                continue
            return image
        raise RuntimeError(
            f"none of the {len(self.paths)} image files can give a "
            f"{self.crop_size}x{self.crop_size} crop (see the warnings for each)"
        )

    def uint8(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The uint8 crops at ``positions`` for the current epoch, ``(B, 3, crop, crop)``.

        Each file is decoded once per call, however many of its crops are drawn.
        """
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"positions must lie in [0, {len(self)}); got {positions.tolist()}")
        size = self.crop_size
        out = np.empty((len(positions), 3, size, size), dtype=np.uint8)
        epoch = 0 if self.fixed else self.epoch
        order = np.argsort(positions // self.crops_per_image, kind="stable")
        current, image = -1, None
        for slot in order:
            position = int(positions[slot])
            index = position // self.crops_per_image
            if index != current:
                current, image = index, self._read(index)
            height, width = image.shape[:2]
            u, v = np.random.default_rng([self.seed, epoch, position]).random(2)
            y = int(u * (height - size + 1))
            x = int(v * (width - size + 1))
            out[slot] = image[y : y + size, x : x + size].transpose(2, 0, 1)
        return out

    def __repr__(self) -> str:
        return (
            f"FolderCrops({len(self.paths)} files x {self.crops_per_image} crops "
            f"{self.crop_size}x{self.crop_size}, filter={self.filter.spec!r}, source={self.source!r})"
        )


def folder_crops(
    folder: str | os.PathLike[str],
    filter: str | Filter,
    *,
    crop_size: int = 64,
    crops_per_image: int = 1,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[FolderCrops, FolderCrops]:
    """Train and validation :class:`FolderCrops` from every image under ``folder``, split by file.

    Training crops change every epoch; validation crops are drawn once (fixed).

    Args:
        folder: The folder (recursive; see :func:`img2img_filters.imageio.list_images`).
        filter: The filter.
        crop_size: Side of the crops.
        crops_per_image: Crops per file per epoch.
        val_fraction: Share of the files held out for validation, in [0, 1).
        seed: Seed of the split and of the crops.

    Returns:
        ``(train, val)``.

    Raises:
        FileNotFoundError: If the folder does not exist or holds no image files.
        ValueError: If a split would be empty or a parameter is bad.
    """
    val_fraction = check_fraction(val_fraction)
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(
            f"no image files found in {str(folder)!r} (looked for .png, .jpg, ...)"
        )
    train_rows, val_rows = split_by_group(np.arange(len(paths)), val_fraction, seed)
    if len(val_rows) == 0 and val_fraction > 0:
        raise ValueError(
            f"val_fraction={val_fraction} leaves no validation file among {len(paths)} in "
            f"{str(folder)!r}; add files or pass val_fraction=0"
        )
    common = {"crop_size": crop_size, "crops_per_image": crops_per_image, "seed": seed}
    source = f"stream:{folder}"
    train = FolderCrops([paths[i] for i in train_rows], filter, source=source, **common)
    val_paths = [paths[i] for i in val_rows] or [paths[i] for i in train_rows]
    val = FolderCrops(val_paths, filter, fixed=True, source=source, **common)
    return train, val

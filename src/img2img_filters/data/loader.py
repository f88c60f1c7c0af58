"""One call from a data source to train and validation :class:`FilteredDataset` s."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from img2img_filters.data.cache import decode_images
from img2img_filters.data.filtered import FilteredDataset
from img2img_filters.data.folder import load_image_folder, report_skipped
from img2img_filters.data.pairs import PairedCrops, load_pairs
from img2img_filters.data.samples import load_samples
from img2img_filters.data.split import check_fraction, check_limit, choose_indices, split_by_group
from img2img_filters.data.stream import FolderCrops, folder_crops
from img2img_filters.data.tinyimagenet import (
    TinyImageNet,
    find_tiny_imagenet,
    is_tiny_imagenet_layout,
)
from img2img_filters.filters import Filter, create_filter
from img2img_filters.filters.external import TeacherFilter

__all__ = ["DATA_SOURCES", "default_filter", "load_filtered_dataset"]

_log = logging.getLogger(__name__)

#: The named data sources; any folder path is accepted too.
DATA_SOURCES = ("samples", "tiny-imagenet")

_SAMPLES_MAX_SIDE = 256
_TEACH_CHUNK = 1024  # crops handed to a teacher at once (read from a memory map)


def default_filter(randomize: bool = False, seed: int = 0) -> str:
    """The study's target: ``"study-sobel"``, or ``"study-random:seed=<seed>"`` when ``randomize``."""
    return f"study-random:seed={seed}" if randomize else "study-sobel"


# Over 80 lines only for its docstring and its signature (every data option).
def load_filtered_dataset(
    randomize: bool = False,
    *,
    data: str | os.PathLike[str] = "samples",
    filter: str | Filter | Callable[[np.ndarray], np.ndarray] | None = None,
    targets: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    download: bool = False,
    crop_size: int = 64,
    cache: bool = True,
    limit: int | None = None,
    stream: bool = False,
    progress: bool = False,
) -> (
    tuple[FilteredDataset, FilteredDataset]
    | tuple[FolderCrops, FolderCrops]
    | tuple[PairedCrops, PairedCrops]
):
    """Photos from a data source, split without leakage, paired with the filter to imitate.

    Both datasets share one uint8 array ``(N, 3, crop, crop)`` (a memory map when
    decoded from files) and select their rows with ``indices``. The split is by
    photo: crops of one photo are never on both sides. Everything is
    deterministic given ``seed``.

    Data sources:
        * ``"samples"``: the built-in photos (:func:`load_samples`), shorter side
          shrunk to 256, crops with stride ``crop_size // 2``, split by photo with
          ``val_fraction``.
        * ``"tiny-imagenet"``: the folder of :func:`find_tiny_imagenet`; missing, it is
          downloaded when ``download`` is true, else ``FileNotFoundError`` says how.
        * a folder path: in the Tiny ImageNet layout, its ``train`` split for
          training and its official ``val`` split for validation (``val_fraction``
          only matters when 0: no validation); any other folder of images
          (recursive), each image cut into crops on a grid (stride ``crop_size``)
          and split by image with ``val_fraction``. Unreadable files are skipped
          with a warning. (A folder named ``samples`` or ``tiny-imagenet`` is
          reached as ``"./samples"`` or a :class:`~pathlib.Path`.) With
          ``stream=True`` nothing is decoded in advance: :class:`FolderCrops`
          draw ``crop_size`` crops from the files when batches need them, new
          ones every epoch (for folders larger than memory or of mixed sizes).
        * with ``targets``: photo pairs, ``data`` a folder of inputs and ``targets``
          a folder of targets matched by name (:func:`img2img_filters.data.pairs.load_pairs`);
          :class:`~img2img_filters.data.pairs.PairedCrops` of aligned random crops, split by pair.

    Teachers (``filter="cmd:..."`` or a callable, see :mod:`img2img_filters.filters.external`)
    work with every source: their outputs are computed for every crop here (a
    program's are cached on disk), and a crop the teacher fails on is dropped
    and listed on ``.skipped``. With ``stream=True`` they are computed batch by batch.

    Args:
        randomize: With ``filter=None``, use the study's random 3x3 filter drawn
            from ``seed`` (``"study-random:seed=<seed>"``) instead of its Sobel
            target (``"study-sobel"``).
        data: ``"samples"``, ``"tiny-imagenet"`` or a folder.
        filter: The filter (spec, :class:`~img2img_filters.filters.Filter` or a callable
            ``(H, W, 3) uint8 -> (H, W[, C])``); when given, ``randomize`` is ignored.
            A ``cmd:`` spec given here runs its program.
        targets: A folder of targets paired by name with the photos of the
            ``data`` folder; ``filter`` must then be ``None``.
        val_fraction: The share of photos for validation, in [0, 1).
        seed: Seed of the split, of the ``limit`` subsets and of the random filter.
        download: Download Tiny ImageNet when it is missing.
        crop_size: Side of the square photos, in pixels (at most 64 for Tiny ImageNet).
        cache: Cache decoded files on disk (``cache_dir()/decoded``), to memory-map them later.
        limit: For quick runs and tests: at most this many training items and at
            most ``ceil(limit * val_fraction / (1 - val_fraction))`` validation
            items (at least one), drawn with ``seed``; for file sources only the
            files needed are decoded.
        stream: For a folder (not in the Tiny ImageNet layout): return
            :class:`FolderCrops` (one random crop per file and epoch) instead of
            decoding every file into the cache.
        progress: Show progress bars while photos are decoded and a ``cmd:`` teacher
            runs on them (only when stderr is a terminal).

    Returns:
        ``(train, val)`` :class:`FilteredDataset` s; items are ``(input (3, H, W), target (C, H, W))``
        float32.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: For an unknown data source or filter, or a value out of range.
        FileNotFoundError: If Tiny ImageNet or the folder is missing, with the fix.
    """
    if not isinstance(randomize, bool):
        raise TypeError(f"randomize must be a bool; got {type(randomize).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    val_fraction = check_fraction(val_fraction)
    check_limit(limit)
    if limit == 0:
        raise ValueError("limit must be a positive integer or None; got 0")
    if targets is not None:
        return _pairs(data, targets, filter, stream, crop_size, val_fraction, int(seed), limit)
    target = create_filter(
        filter if filter is not None else default_filter(randomize, int(seed)),
        allow_commands=True,  # the caller's own spec
    )
    val_limit = _val_limit(limit, val_fraction)
    kind, path = _resolve_source(data, download)
    if stream:
        if kind != "folder":
            raise ValueError(
                f"stream=True needs a folder of images for data; got {str(data)!r} ({kind})"
            )
        train, val = folder_crops(
            path, target, crop_size=crop_size, val_fraction=val_fraction, seed=int(seed)
        )
        if limit is not None:
            train.paths = [train.paths[i] for i in choose_indices(len(train.paths), limit, seed)]
            if val_fraction == 0:  # validation on the training files, as folder_crops does
                val.paths = list(train.paths)
            else:
                val.paths = [val.paths[i] for i in choose_indices(len(val.paths), val_limit, seed)]
        if isinstance(target, TeacherFilter):
            _teach_rows(target, val.uint8(np.arange(len(val))), None, [], [])
        return train, val
    if kind == "samples":
        samples = load_samples(
            crop_size=crop_size,
            stride=max(1, crop_size // 2),
            max_side=max(_SAMPLES_MAX_SIDE, crop_size),
        )
        images, groups, labels = samples.images, samples.groups, None
        train, val = split_by_group(groups, val_fraction, seed)
        source, skipped, photo_files = "samples", [], None
    elif kind == "tiny-imagenet":
        images, groups, labels, train, val, skipped = _tiny_imagenet(
            path, download, crop_size, val_fraction, seed, limit, val_limit, cache, progress
        )
        source, photo_files = f"tiny-imagenet:{path}", None
    else:
        files = None if limit is None else limit + (val_limit or 0)
        decoded = load_image_folder(
            path, crop_size=crop_size, limit=files, seed=seed, cache=cache, progress=progress
        )
        images, groups, labels, skipped = decoded.images, decoded.groups, None, decoded.skipped
        train, val = split_by_group(groups, val_fraction, seed)
        source, photo_files = f"folder:{path}", decoded.paths
    if len(images) == 0:
        raise ValueError(
            f"no {crop_size}x{crop_size} crop could be cut from {source!r}; lower crop_size"
        )
    train = train[choose_indices(len(train), limit, [int(seed), 1])]
    val = val[choose_indices(len(val), val_limit, [int(seed), 2])]
    if isinstance(target, TeacherFilter):
        skipped = list(skipped)
        where = photo_files if photo_files is not None else source
        train, val = _teach(target, images, groups, train, val, where, skipped, progress)
    common = {"groups": groups, "labels": labels, "source": source, "skipped": skipped}
    return (
        FilteredDataset(images, target, indices=train, **common),
        FilteredDataset(images, target, indices=val, **common),
    )


def _pairs(
    data: str | os.PathLike[str],
    targets: str | os.PathLike[str],
    filter: object,
    stream: bool,
    crop_size: int,
    val_fraction: float,
    seed: int,
    limit: int | None,
) -> tuple[PairedCrops, PairedCrops]:
    """Photo pairs from ``data`` (inputs) and ``targets``, after checking the arguments."""
    if filter is not None:
        raise ValueError(
            "filter and targets exclude each other: the targets are what the model learns; "
            f"got filter={filter!r}"
        )
    if stream:
        raise ValueError("stream=True does not apply to photo pairs (targets=); drop it")
    if not isinstance(targets, (str, os.PathLike)):
        raise TypeError(f"targets must be a folder path; got {type(targets).__name__}")
    if not isinstance(data, (str, os.PathLike)) or not Path(data).expanduser().is_dir():
        raise ValueError(
            f"with targets, data must be the folder of input photos; got {str(data)!r}"
        )
    return load_pairs(
        Path(data).expanduser(),
        Path(targets).expanduser(),
        crop_size=crop_size,
        val_fraction=val_fraction,
        seed=seed,
        limit=limit,
    )


def _teach(
    teacher: TeacherFilter,
    images: np.ndarray,
    groups: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    where: str | list[Path],
    skipped: list[tuple[str, str]],
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Compute the teacher's outputs for the rows in use; rows it fails on leave both splits."""
    rows = np.union1d(train, val)
    failed = set()
    with tqdm(
        total=len(rows),
        desc=f"teacher {teacher.spec[:30]}",
        unit="crop",
        leave=False,
        disable=None if progress else True,  # None: a bar only when stderr is a terminal
    ) as bar:
        for start in range(0, len(rows), _TEACH_CHUNK):
            chunk = rows[start : start + _TEACH_CHUNK]
            names = [
                f"crop {row} of {where}, photo {groups[row]}"
                if isinstance(where, str)
                else f"crop {row} of {str(where[groups[row]])!r}"
                for row in chunk
            ]
            failed |= _teach_rows(teacher, images[chunk], names, chunk, skipped)
            bar.update(len(chunk))
    if failed:
        _log.warning(
            "the teacher %r failed on %d of %d crops, which are left out (each is listed "
            "with its reason on the datasets' .skipped): %s",
            teacher.spec,
            len(failed),
            len(rows),
            "; ".join(f"{n}: {r}" for n, r in skipped[-len(failed) :][:3]),
        )
        train = train[~np.isin(train, list(failed))]
        val = val[~np.isin(val, list(failed))]
    return train, val


def _teach_rows(
    teacher: TeacherFilter,
    photos: np.ndarray,
    names: list[str] | None,
    rows: np.ndarray | list,
    skipped: list[tuple[str, str]],
) -> set[int]:
    """Run the teacher on ``photos``; the rows it failed on (their reasons appended to ``skipped``)."""
    failures = teacher.prepare(np.asarray(photos), names)
    for index, reason in failures:
        skipped.append((names[index] if names else f"photo {index}", reason))
    return {int(rows[index]) for index, _ in failures} if len(rows) else set()


def _val_limit(limit: int | None, val_fraction: float) -> int | None:
    """How many validation items go with ``limit`` training items (``None``: no cap)."""
    if limit is None:
        return None
    if val_fraction == 0:
        return 0
    return max(1, math.ceil(limit * val_fraction / (1 - val_fraction)))


def _resolve_source(data: str | os.PathLike[str], download: bool) -> tuple[str, Path | None]:
    """``("samples" | "tiny-imagenet" | "folder", path)`` for a ``data`` argument."""
    allowed = f"{list(DATA_SOURCES)} or a folder of images"
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be one of {allowed}; got {type(data).__name__}")
    if isinstance(data, str) and data == "samples":
        return "samples", None
    if isinstance(data, str) and data == "tiny-imagenet":
        return "tiny-imagenet", find_tiny_imagenet()
    path = Path(data).expanduser()
    if path.is_dir():
        return ("tiny-imagenet" if is_tiny_imagenet_layout(path) else "folder"), path
    if path.exists():
        raise ValueError(f"data must be one of {allowed}; got {str(data)!r}, a file, not a folder")
    if isinstance(data, str):
        raise ValueError(f"data must be one of {allowed}; got {data!r} (no such folder)")
    raise FileNotFoundError(f"data folder {str(path)!r} not found")


def _tiny_imagenet(
    root: Path,
    download: bool,
    crop_size: int,
    val_fraction: float,
    seed: int,
    limit: int | None,
    val_limit: int | None,
    cache: bool,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the train (and official val) split of a Tiny ImageNet folder into one array.

    Returns:
        ``images`` uint8 ``(N, 3, crop, crop)``, ``groups`` ``(N,)`` (file indices, train
        files first), ``labels`` ``(N,)``, and the train and val row indices.
    """
    train_set = TinyImageNet(root, "train", download=download)
    pick = choose_indices(len(train_set), limit, [int(seed), 3])
    paths = [train_set.paths[i] for i in pick]
    file_labels = [train_set.labels[pick]]
    if val_fraction > 0:
        val_set = TinyImageNet(root, "val")
        pick = choose_indices(len(val_set), val_limit, [int(seed), 4])
        paths += [val_set.paths[i] for i in pick]
        file_labels.append(val_set.labels[pick])
    n_train = len(file_labels[0])
    decoded = decode_images(
        paths, crop_size=crop_size, stride=crop_size, cache=cache, progress=progress
    )
    report_skipped(decoded, root)
    groups = decoded.groups
    labels = np.concatenate(file_labels)[groups]
    return (
        decoded.images,
        groups,
        labels,
        np.flatnonzero(groups < n_train).astype(np.int64),
        np.flatnonzero(groups >= n_train).astype(np.int64),
        decoded.skipped,
    )

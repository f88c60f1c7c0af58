"""Decode once: image files -> one uint8 array of crops, cached on disk as a memory-mappable ``.npy``.

A cache entry is ``cache_dir()/decoded/<key>.npy`` plus ``<key>.json``. The key
hashes the cache format version, the paths in order, each file's size and
``mtime_ns``, and the crop parameters, so a changed file gives a new key. An
entry is used only when the sidecar's version and key match and the ``.npy``
has exactly the shape, dtype and byte length the sidecar records; anything else
(truncated, stale, foreign) is decoded again and rewritten. Files are written
under temporary names and renamed, so a reader never sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from img2img_filters.data.crops import check_crop_params, grid_crops, resize_shorter
from img2img_filters.data.paths import cache_dir
from img2img_filters.fileio import atomic_write, atomic_write_text
from img2img_filters.imageio import ImageReadError, read_image

__all__ = ["CACHE_FORMAT", "DecodedImages", "cache_key", "decode_images", "decoded_cache_dir"]

_log = logging.getLogger(__name__)

#: Version of the cache's format and of the decoding it stores; bump it to orphan old entries.
CACHE_FORMAT = 1

_HEADER_BYTES = 256  # fixed .npy header size, so the data can be streamed before N is known
_PARALLEL_MIN = 4096  # shorter lists are decoded in this process (starting workers takes ~1 s)
_MAX_CHUNK = 256


@dataclass
class DecodedImages:
    """Crops decoded from image files.

    Attributes:
        images: uint8 ``(N, 3, crop, crop)`` RGB; a read-only ``numpy.memmap`` when cached.
        groups: int64 ``(N,)``: the index in ``paths`` of the file each crop came from.
        paths: The files, in the order given.
        skipped: ``(path, reason)`` for each file that gave no crop (unreadable or too small).
        cached: Whether the crops came from the cache without decoding.
        cache_file: The ``.npy`` of the cache entry, or ``None``.
    """

    images: np.ndarray
    groups: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    cached: bool = False
    cache_file: Path | None = None

    def __len__(self) -> int:
        return len(self.images)


def decoded_cache_dir() -> Path:
    """Where decoded crops are cached: ``cache_dir() / "decoded"``."""
    return cache_dir() / "decoded"


def cache_key(paths: Sequence[Path], params: dict[str, object]) -> str:
    """The cache key: a SHA-256 of the format version, the paths, their sizes and times, and ``params``."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, "params": params}, sort_keys=True).encode())
    for path in paths:
        try:
            info = os.stat(path)
            signature = f"{info.st_size}:{info.st_mtime_ns}"
        except OSError:
            signature = "missing"
        digest.update(f"\0{os.fspath(path)}\0{signature}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def decode_images(
    paths: Sequence[str | os.PathLike[str]],
    *,
    crop_size: int = 64,
    stride: int | None = None,
    max_side: int | None = None,
    cache: bool = True,
    workers: int = 2,
    progress: bool = False,
) -> DecodedImages:
    """Decode image files into crops, once: later calls with the same files memory-map the cache.

    Each file is read with :func:`img2img_filters.imageio.read_image`, shrunk so its
    shorter side is at most ``max_side`` (when given) and cut into crops on a
    grid. Files that cannot be read, or are smaller than one crop, give no crop
    and are listed in ``skipped``; they never stop the decoding.

    Args:
        paths: The image files; their order sets the order of the crops.
        crop_size: Side of each crop.
        stride: Step between crops (``None``: ``crop_size``).
        max_side: Shrink each image so its shorter side is at most this, first.
        cache: Use and fill the on-disk cache (``cache_dir()/decoded``).
        workers: Processes that decode (lists shorter than 4,096 files use this one).
        progress: Show a progress bar over the files while they are decoded (only when
            stderr is a terminal; none when the cache has them).

    Returns:
        :class:`DecodedImages`: ``images`` uint8 ``(N, 3, crop, crop)``, ``groups`` ``(N,)``.

    Raises:
        TypeError: If a crop parameter is not an integer.
        ValueError: If a crop parameter is not positive.
    """
    stride = check_crop_params(crop_size, stride, max_side)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}")
    paths = [Path(os.path.abspath(p)) for p in paths]
    params = {"crop_size": crop_size, "stride": stride, "max_side": max_side}
    if not cache:
        return _decode_in_memory(paths, params, workers, progress)
    key = cache_key(paths, params)
    folder = decoded_cache_dir()
    npy, sidecar = folder / f"{key[:40]}.npy", folder / f"{key[:40]}.json"
    found = _load_entry(npy, sidecar, key, paths)
    if found is not None:
        return found
    try:
        return _build_entry(paths, params, workers, key, npy, sidecar, progress)
    except OSError as error:  # an unwritable cache folder must not stop the work
        _log.warning(
            "cannot write the decoded-image cache in %r (%s); decoding in memory",
            str(folder),
            error,
        )
        return _decode_in_memory(paths, params, workers, progress)


# -- decoding ------------------------------------------------------------------------------------

_Chunk = tuple[np.ndarray, list[int], list[tuple[int, str]]]


def _decode_chunk(start: int, paths: list[str], params: dict) -> _Chunk:
    """Decode ``paths`` (numbered from ``start``): crops, crops per file, and the skipped files."""
    crop_size, stride, max_side = params["crop_size"], params["stride"], params["max_side"]
    crops, counts, skipped = [], [], []
    for offset, path in enumerate(paths):
        try:
            image = read_image(path)
        except (ImageReadError, OSError) as error:
            counts.append(0)
            skipped.append((start + offset, " ".join(str(error).split())))
            continue
        image = resize_shorter(image, max_side)
        cut = grid_crops(image, crop_size, stride)
        if len(cut) == 0:
            height, width = image.shape[:2]
            skipped.append(
                (
                    start + offset,
                    f"smaller than one {crop_size}x{crop_size} crop ({height}x{width})",
                )
            )
        crops.append(cut)
        counts.append(len(cut))
    images = np.concatenate(crops) if crops else np.empty((0, 3, crop_size, crop_size), np.uint8)
    return images, counts, skipped


def _chunks(paths: list[Path], params: dict, workers: int, progress: bool) -> Iterator[_Chunk]:
    """Decoded chunks in path order, with a bar over the files (``progress``, on a terminal)."""
    bar = tqdm(
        total=len(paths),
        desc="decoding photos",
        unit="photo",
        leave=False,
        disable=None if progress else True,  # None: a bar only when stderr is a terminal
    )
    try:
        for chunk in _decoded_chunks(paths, params, workers):
            bar.update(len(chunk[1]))
            yield chunk
    finally:
        bar.close()


def _decoded_chunks(paths: list[Path], params: dict, workers: int) -> Iterator[_Chunk]:
    """Decoded chunks in path order, from a process pool when the list is long enough.

    The pool starts its processes with ``spawn``: forked children can hang on
    thread pools (OpenCV's, PyTorch's) that the parent had running. If the pool
    breaks, the remaining chunks are decoded in this process.
    """
    names = [os.fspath(p) for p in paths]
    parallel = workers > 1 and len(names) >= _PARALLEL_MIN
    size = max(16, min(_MAX_CHUNK, len(names) // (workers * 8))) if parallel else _MAX_CHUNK
    starts = list(range(0, len(names), size))
    done = 0
    if parallel:
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                batches = [names[start : start + size] for start in starts]
                for chunk in pool.map(_decode_chunk, starts, batches, [params] * len(starts)):
                    yield chunk
                    done += 1
        except BrokenProcessPool as error:
            _log.warning(
                "the decoding processes failed (%s); decoding in this process instead", error
            )
    for start in starts[done:]:
        yield _decode_chunk(start, names[start : start + size], params)


def _finish(
    paths: list[Path], counts: list[int], skipped: list[tuple[int, str]]
) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Per-crop group ids from the per-file counts, and the skipped files by path."""
    groups = np.repeat(np.arange(len(paths), dtype=np.int64), np.asarray(counts, dtype=np.int64))
    return groups, [(paths[i], reason) for i, reason in skipped]


def _decode_in_memory(
    paths: list[Path], params: dict, workers: int, progress: bool
) -> DecodedImages:
    arrays, counts, skipped = [], [], []
    for images, chunk_counts, chunk_skipped in _chunks(paths, params, workers, progress):
        arrays.append(images)
        counts += chunk_counts
        skipped += chunk_skipped
    size = params["crop_size"]
    images = np.concatenate(arrays) if arrays else np.empty((0, 3, size, size), np.uint8)
    groups, skipped_paths = _finish(paths, counts, skipped)
    return DecodedImages(images, groups, paths, skipped_paths)


# -- the cache entry -----------------------------------------------------------------------------


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header for uint8 C-order ``shape``, padded to :data:`_HEADER_BYTES`."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape!r}, }}"
    body = _HEADER_BYTES - 10
    if len(text) + 1 > body:
        raise ValueError(f"shape {shape} does not fit in the cache's .npy header")
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", body)
        + (text.ljust(body - 1) + "\n").encode("latin1")
    )


def _build_entry(
    paths: list[Path],
    params: dict,
    workers: int,
    key: str,
    npy: Path,
    sidecar: Path,
    progress: bool,
) -> DecodedImages:
    """Decode, streaming the crops into a temporary ``.npy``, then rename it and write the sidecar."""
    counts: list[int] = []
    skipped: list[tuple[int, str]] = []
    total = 0

    def write(temporary: Path) -> None:
        nonlocal total
        with open(temporary, "wb") as file:
            file.write(b"\0" * _HEADER_BYTES)
            for images, chunk_counts, chunk_skipped in _chunks(paths, params, workers, progress):
                file.write(np.ascontiguousarray(images).tobytes())
                total += len(images)
                counts.extend(chunk_counts)
                skipped.extend(chunk_skipped)
            file.seek(0)
            file.write(_npy_header((total, 3, params["crop_size"], params["crop_size"])))

    atomic_write(npy, write)
    shape = (total, 3, params["crop_size"], params["crop_size"])
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "shape": list(shape),
        "dtype": "uint8",
        "bytes": _HEADER_BYTES + int(np.prod(shape)),
        "params": params,
        "n_paths": len(paths),
        "counts": counts,
        "skipped": skipped,
    }
    atomic_write_text(sidecar, json.dumps(meta))
    groups, skipped_paths = _finish(paths, counts, skipped)
    images = _memmap(npy, shape)
    return DecodedImages(images, groups, paths, skipped_paths, cached=False, cache_file=npy)


def _memmap(npy: Path, shape: tuple[int, ...]) -> np.ndarray:
    if shape[0] == 0:  # an empty array cannot be memory-mapped
        return np.empty(shape, dtype=np.uint8)
    return np.load(npy, mmap_mode="r", allow_pickle=False)


def _load_entry(npy: Path, sidecar: Path, key: str, paths: list[Path]) -> DecodedImages | None:
    """The cached crops when the entry is complete and consistent, else ``None``.

    A damaged entry (truncated, stale, foreign) gives a warning and ``None``, so it is rebuilt.
    """
    if not npy.exists() and not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("the sidecar is not a JSON object")
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {CACHE_FORMAT}")
        if meta.get("key") != key or meta.get("n_paths") != len(paths):
            raise ValueError("the sidecar belongs to other files")
        shape = tuple(int(v) for v in meta["shape"])
        expected = _HEADER_BYTES + int(np.prod(shape))
        if meta.get("dtype") != "uint8" or meta.get("bytes") != expected:
            raise ValueError("the sidecar's dtype or size is inconsistent")
        actual = npy.stat().st_size
        if actual != expected:
            raise ValueError(f"the .npy has {actual} bytes, expected {expected}")
        images = _memmap(npy, shape)
        if images.dtype != np.uint8 or images.shape != shape:
            raise ValueError(
                f"the .npy holds {images.dtype} {images.shape}, expected uint8 {shape}"
            )
        counts = [int(c) for c in meta["counts"]]
        if len(counts) != len(paths) or sum(counts) != shape[0] or min(counts, default=0) < 0:
            raise ValueError("the crop counts do not match the array")
        skipped = [(int(i), str(reason)) for i, reason in meta["skipped"]]
        if any(not 0 <= i < len(paths) for i, _ in skipped):
            raise ValueError("a skipped file index is out of range")
    except (OSError, ValueError, KeyError, TypeError) as error:
        _log.warning(
            "the decoded-image cache entry %r is unusable (%s); decoding again", str(npy), error
        )
        return None
    groups, skipped_paths = _finish(paths, counts, skipped)
    return DecodedImages(images, groups, paths, skipped_paths, cached=True, cache_file=npy)

"""Target images at their own depth: 8- or 16-bit PNG/TIFF, float32 TIFF or ``.npy``, 1 or 3 channels.

Targets are what a model learns to output, so they are never squashed to 8
bits: :func:`read_target` returns uint8, uint16 or float32 as stored, and
:func:`target_scale` is the factor that maps them to floats (``1/255``,
``1/65535`` or ``1``). Only PNG and TIFF are decoded (Pillow reads the header
first, and the size is checked against :func:`~img2img_filters.imageio.max_pixels_limit`
before anything is decoded); ``.npy`` files are read without pickles and their
header's shape and dtype are checked before the data is.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import cv2
import numpy as np
from numpy.lib import format as npy_format
from PIL import Image, UnidentifiedImageError

from img2img_filters.imageio import ImageReadError, max_pixels_limit

__all__ = ["TARGET_DTYPES", "TARGET_EXTENSIONS", "check_target", "read_target", "target_scale"]

#: The extensions a target may have.
TARGET_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")

#: The sample types a target keeps.
TARGET_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

_LOG = logging.getLogger(__name__)


def target_scale(dtype: np.dtype) -> float:
    """The factor that maps stored samples to floats: ``1/255``, ``1/65535`` or ``1`` (floats)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 1.0 / 255.0
    if dtype == np.uint16:
        return 1.0 / 65535.0
    return 1.0


def check_target(array: object, name: str) -> np.ndarray:
    """A target array as ``(H, W, C)`` with ``C`` in {1, 3} and a kept dtype, or a one-line error.

    Args:
        array: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; uint8, uint16, float32 or float64
            (float64 becomes float32).
        name: What the array is, for the error.

    Returns:
        ``(H, W, C)`` uint8, uint16 or float32, C-contiguous.

    Raises:
        TypeError: If it is not an array of a kept dtype.
        ValueError: For another shape, or non-finite floats.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array; got {type(array).__name__}")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype not in TARGET_DTYPES:
        raise TypeError(f"{name}: expected uint8, uint16 or float32 samples; got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or 0 in array.shape:
        raise ValueError(
            f"{name}: expected shape (H, W), (H, W, 1) or (H, W, 3); got {array.shape}"
        )
    if array.dtype == np.float32 and not np.isfinite(array).all():
        raise ValueError(f"{name}: holds NaN or infinite values")
    return np.ascontiguousarray(array)


def read_target(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read a target file at its own depth.

    Args:
        path: A ``.png``, ``.tif``/``.tiff`` (8/16-bit gray or RGB, float32 gray or RGB)
            or ``.npy`` (``(H, W)`` or ``(H, W, C)``, uint8/uint16/float32/float64).
        max_pixels: The largest image accepted (default: the project's limit).

    Returns:
        ``(H, W, C)``, ``C`` in {1, 3}; uint8, uint16 or float32. An alpha channel is dropped.

    Raises:
        FileNotFoundError: If the file does not exist.
        ImageReadError: If it cannot be read as a target (format, shape, size, dtype).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot read target {str(path)!r}: file not found")
    limit = max_pixels_limit(max_pixels)
    suffix = path.suffix.lower()
    if suffix not in TARGET_EXTENSIONS:
        raise ImageReadError(
            f"cannot read target {str(path)!r}: extension {suffix or '(none)'!r}, expected one of "
            f"{list(TARGET_EXTENSIONS)}"
        )
    try:
        array = _read_npy(path, limit) if suffix == ".npy" else _read_picture(path, limit)
        return check_target(array, f"target {str(path)!r}")
    except (TypeError, ValueError) as error:
        raise ImageReadError(" ".join(str(error).split())) from None


def _read_npy(path: Path, limit: int) -> np.ndarray:
    """A ``.npy`` whose header is checked (shape, dtype, byte count) before the data is read."""
    with open(path, "rb") as file:
        try:
            version = npy_format.read_magic(file)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(file)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(file)
        except Exception as error:
            raise ValueError(f"target {str(path)!r}: not a valid .npy file ({error})") from None
        allowed = (*TARGET_DTYPES, np.dtype(np.float64))
        if dtype.hasobject or dtype.newbyteorder("=") not in allowed:
            raise ValueError(
                f"target {str(path)!r}: dtype {dtype} (expected uint8, uint16, float32 or float64)"
            )
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
            raise ValueError(f"target {str(path)!r}: shape {shape} (expected (H, W) or (H, W, C))")
        if shape[0] * shape[1] > limit:
            raise ValueError(
                f"target {str(path)!r}: {shape[0]}x{shape[1]} pixels, more than the limit of {limit:,}"
            )
        count = int(np.prod(shape))
        data = file.read(count * dtype.itemsize + 1)
    if len(data) != count * dtype.itemsize:
        raise ValueError(
            f"target {str(path)!r}: {len(data)} data bytes, expected {count * dtype.itemsize}"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.astype(dtype.newbyteorder("="), copy=True)


def _tiff_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from a classic TIFF's first directory, or ``None`` when it is not one."""
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8 or head[:4] not in (b"II*\0", b"MM\0*"):
            return None
        order = "<" if head[:2] == b"II" else ">"
        file.seek(struct.unpack(order + "I", head[4:])[0])
        count_bytes = file.read(2)
        if len(count_bytes) < 2:
            return None
        count = struct.unpack(order + "H", count_bytes)[0]
        entries = file.read(12 * count)
    found: dict[int, int] = {}
    for start in range(0, len(entries) - 11, 12):
        tag, kind = struct.unpack(order + "HH", entries[start : start + 4])
        if tag in (256, 257) and kind in (3, 4):  # ImageWidth, ImageLength as SHORT or LONG
            value = entries[start + 8 : start + 12]
            found[tag] = struct.unpack(
                order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4]
            )[0]
    if 256 not in found or 257 not in found:
        return None
    return found[256], found[257]


def _read_picture(path: Path, limit: int) -> np.ndarray:
    """A PNG or TIFF: the header checked with Pillow, the samples decoded by OpenCV at their depth."""
    try:
        with Image.open(path, formats=["PNG", "TIFF"]) as image:
            width, height = image.size
            mode = image.mode
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        size = _tiff_size(path)  # Pillow does not open 3-channel float TIFFs; OpenCV does
        if size is None:
            raise ValueError(
                f"target {str(path)!r}: not a readable PNG or TIFF ({error})"
            ) from None
        (width, height), mode = size, "float TIFF"
    if width <= 0 or height <= 0 or width * height > limit:
        raise ValueError(
            f"target {str(path)!r}: {width}x{height} pixels (at most {limit:,}, none zero)"
        )
    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError(f"target {str(path)!r}: OpenCV cannot decode this {mode} image")
    if decoded.shape[:2] != (height, width):
        raise ValueError(
            f"target {str(path)!r}: decoded size {decoded.shape[:2]} disagrees with the header"
        )
    if decoded.ndim == 3 and decoded.shape[2] == 4:
        _LOG.info("target %s: the alpha channel is dropped", path)
        decoded = decoded[..., :3]
    if decoded.ndim == 3 and decoded.shape[2] == 2:  # gray + alpha
        _LOG.info("target %s: the alpha channel is dropped", path)
        decoded = decoded[..., :1]
    if decoded.ndim == 3 and decoded.shape[2] == 3:
        decoded = decoded[..., ::-1]  # OpenCV's BGR -> RGB
    return np.ascontiguousarray(decoded)

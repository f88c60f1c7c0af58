"""Writing arrays as image files (or ``.npy``), atomically and with ordinary permissions.

>>> from img2img_filters.imagewrite import write_image
>>> write_image("edges.png", edges, value_range=(-4, 4))  # doctest: +SKIP
PosixPath('edges.png')
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np

from img2img_filters.fileio import atomic_write_bytes

__all__ = [
    "SCALES",
    "default_scale",
    "scaled_for_writing",
    "write_image",
]

_WRITE_EXTENSIONS_8 = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_WRITE_EXTENSIONS_16 = (".png", ".tif", ".tiff")
_WRITE_EXTENSIONS_32 = (".tif", ".tiff")

#: How filter outputs become integer pixels (see :func:`scaled_for_writing`).
SCALES = ("auto", "range", "abs")

# Values that ``"auto"`` takes its percentiles from (a regular sample of larger results).
_PERCENTILE_SAMPLE = 4_000_000


def _integer_range(array: np.ndarray) -> tuple[float, float]:
    """The default ``value_range`` of an array for :func:`write_image`."""
    if array.dtype == np.bool_:
        return 0.0, 1.0
    if np.issubdtype(array.dtype, np.floating):
        return 0.0, 1.0
    if array.dtype == np.uint8:
        return 0.0, 255.0
    if array.dtype == np.uint16:
        return 0.0, 65535.0
    raise ValueError(
        f"write_image: pass value_range for an array of dtype {array.dtype} "
        "(the default covers float [0, 1], bool, uint8 and uint16)"
    )


# Over 80 lines only for its docstring.
def write_image(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    bit_depth: int = 8,
    value_range: tuple[float, float] | None = None,
    quality: int = 95,
) -> Path:
    """Write an array as an image file (or a ``.npy``), atomically.

    ``.npy``: the array is saved as float32, values unchanged. Image files
    (``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.bmp``, ``.webp``): values
    are mapped linearly from ``value_range = (low, high)`` to ``[0, 2**bit_depth - 1]``,
    clipped and rounded: ``round((v - low) / (high - low) * (2**bit_depth - 1))``.
    The default range is ``(0, 1)`` for float and bool arrays and the full range
    of the dtype for uint8 and uint16 (so uint8 written as 16-bit is ``v * 257``).
    ``bit_depth=32`` (TIFF only) writes float32 samples, values unchanged, as ``.npy``.
    The file is written with :func:`atomic_write_bytes`, so a reader never sees
    half a file and a failure leaves the previous file as it was.

    Args:
        path: The file; its extension chooses the format.
        array: ``(H, W)``, ``(H, W, 1)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA.
        bit_depth: 8, 16 (``.png`` and ``.tif`` only) or 32 (float, ``.tif`` only).
        value_range: ``(low, high)`` mapped to black and full white (8 and 16 bits).
        quality: JPEG/WebP quality, 1 to 100.

    Returns:
        The path written.

    Raises:
        TypeError: If ``array`` is not a NumPy array.
        ValueError: For a bad shape, extension, bit depth, range or non-finite values.
        OSError: If the file cannot be written (nothing is left behind).
    """
    path = Path(path)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"write_image: array must be a numpy.ndarray; got {type(array).__name__}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(path, buffer.getbuffer())
        return path
    if bit_depth not in (8, 16, 32):
        raise ValueError(f"write_image: bit_depth must be 8, 16 or 32; got {bit_depth!r}")
    allowed = {8: _WRITE_EXTENSIONS_8, 16: _WRITE_EXTENSIONS_16, 32: _WRITE_EXTENSIONS_32}[
        bit_depth
    ]
    if suffix not in allowed:
        raise ValueError(
            f"write_image: extension {suffix or '(none)'!r} cannot hold {bit_depth}-bit images; "
            f"expected one of {[*allowed, '.npy']}"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(
            f"write_image: array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"write_image: array has a zero dimension: {array.shape}")
    low, high = _integer_range(array) if value_range is None else map(float, value_range)
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        raise ValueError(
            f"write_image: value_range must be finite (low, high) with low < high; got {value_range}"
        )
    values = array.astype(np.float64)
    bad = np.count_nonzero(~np.isfinite(values))
    if bad:
        raise ValueError(
            f"write_image: array has {bad} NaN or infinite values; cannot write {str(path)!r}"
        )
    if bit_depth == 32:
        pixels = array.astype(np.float32)  # the values themselves
    else:
        top = 2**bit_depth - 1
        scaled = np.clip(np.rint((values - low) / (high - low) * top), 0, top)
        pixels = scaled.astype(np.uint8 if bit_depth == 8 else np.uint16)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(
            pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        )
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, encoded = cv2.imencode(suffix, pixels, params)
    if not ok:
        raise ValueError(
            f"write_image: OpenCV cannot encode a {pixels.shape} {pixels.dtype} image as {suffix}"
        )
    atomic_write_bytes(path, encoded.data)
    return path


def default_scale(filter_range: tuple[float, float] | None) -> str:
    """``"auto"`` for a filter whose outputs can be negative (edges, differences), else ``"range"``."""
    return "auto" if filter_range is not None and filter_range[0] < 0 else "range"


def scaled_for_writing(
    result: np.ndarray, scale: str, filter_range: tuple[float, float] | None
) -> tuple[np.ndarray, tuple[float, float]]:
    """The values to write as integer pixels, and the ``(low, high)`` mapped to black and white.

    For :func:`write_image`'s ``value_range``; ``img2img apply`` and
    :func:`img2img_filters.infer.apply_folder` take ``scale``.

    * ``"range"``: the filter's output range (``(0, 1)`` when unknown), the same
      mapping for every image;
    * ``"auto"``: the result's own 1st and 99th percentiles (over all channels), so
      that a signed output such as an edge map uses the whole grey scale; a flat
      result falls back to ``"range"``;
    * ``"abs"``: the magnitude ``|v|``, from 0 to the largest magnitude of the
      filter's range (of the result, when the range is unknown).

    Args:
        result: A filter output, ``(H, W)`` or ``(H, W, C)`` float.
        scale: One of :data:`SCALES`.
        filter_range: The filter's ``(low, high)``, or ``None``.

    Returns:
        ``(values, (low, high))`` for :func:`img2img_filters.imageio.write_image`.

    Raises:
        ValueError: For an unknown ``scale``.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}; got {scale!r}")
    known = filter_range or (0.0, 1.0)
    if scale == "abs":
        magnitude = np.abs(result)
        top = max(map(abs, filter_range)) if filter_range else float(magnitude.max())
        return magnitude, (0.0, top if top > 0 else 1.0)
    if scale == "auto":
        values = result.reshape(-1)
        values = values[:: max(1, values.size // _PERCENTILE_SAMPLE)]
        low, high = (float(v) for v in np.percentile(values, [1, 99]))
        if high > low:
            return result, (low, high)
    return result, known

"""Cutting photos into square crops on a grid, and shrinking them first when asked."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["check_crop_params", "grid_crops", "grid_positions", "resize_shorter"]


def check_crop_params(crop_size: int, stride: int | None, max_side: int | None = None) -> int:
    """Check the crop parameters and return the stride in force (``crop_size`` when ``None``).

    Args:
        crop_size: Side of each square crop, in pixels.
        stride: Step between crops, or ``None`` for ``crop_size`` (no overlap).
        max_side: The shorter side photos are shrunk to, or ``None``.

    Returns:
        The stride.

    Raises:
        TypeError: If a parameter is not an integer.
        ValueError: If a parameter is not positive, or ``max_side < crop_size``.
    """
    for name, value in (("crop_size", crop_size), ("stride", stride), ("max_side", max_side)):
        if value is None and name != "crop_size":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int; got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value}")
    if max_side is not None and max_side < crop_size:
        raise ValueError(f"max_side must be at least crop_size ({crop_size}); got {max_side}")
    return int(crop_size if stride is None else stride)


def resize_shorter(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink an image so that its shorter side is at most ``max_side`` (``cv2.INTER_AREA``).

    Images already small enough are returned unchanged; nothing is enlarged.

    Args:
        image: ``(H, W, C)``.
        max_side: The largest allowed shorter side, or ``None`` to keep the size.

    Returns:
        ``(H', W', C)`` with ``min(H', W') == min(min(H, W), max_side)``.
    """
    if max_side is None:
        return image
    height, width = image.shape[:2]
    shorter = min(height, width)
    if shorter <= max_side:
        return image
    scale = max_side / shorter
    size = (
        max_side if width == shorter else max(1, round(width * scale)),
        max_side if height == shorter else max(1, round(height * scale)),
    )
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def grid_positions(height: int, width: int, crop_size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the crops that fit, row by row.

    Crops start at 0 and step by ``stride`` while they fit entirely; the
    remainder at the right and bottom edges is left out.
    """
    ys = range(0, height - crop_size + 1, stride)
    xs = range(0, width - crop_size + 1, stride)
    return [(y, x) for y in ys for x in xs]


def grid_crops(image: np.ndarray, crop_size: int, stride: int) -> np.ndarray:
    """Cut an image into square crops on a grid.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        crop_size: Side of each crop.
        stride: Step between crops.

    Returns:
        ``(n, 3, crop_size, crop_size)`` uint8, row-major grid order; ``n == 0``
        when the image is smaller than one crop.
    """
    positions = grid_positions(image.shape[0], image.shape[1], crop_size, stride)
    crops = np.empty((len(positions), 3, crop_size, crop_size), dtype=np.uint8)
    for i, (y, x) in enumerate(positions):
        crops[i] = image[y : y + crop_size, x : x + crop_size].transpose(2, 0, 1)
    return crops

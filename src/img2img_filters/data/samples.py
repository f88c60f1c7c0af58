"""The built-in photos: shipped inside scikit-image's wheel, so they need no download."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from skimage import data as skdata

from img2img_filters.data.crops import check_crop_params, grid_crops, resize_shorter

__all__ = [
    "COLOR_SAMPLES",
    "GRAY_SAMPLES",
    "SAMPLE_NAMES",
    "Samples",
    "load_sample",
    "load_samples",
]

#: Colour photos (``stereo_motorcycle`` is the left image of the pair).
COLOR_SAMPLES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)
#: Grayscale photos, replicated to 3 channels. (``cat`` is the same photo as ``chelsea``.)
GRAY_SAMPLES = (
    "camera",
    "moon",
    "coins",
    "clock",
    "page",
    "text",
    "grass",
    "gravel",
    "brick",
    "cell",
)
#: Every built-in photo, in the order their group ids follow.
SAMPLE_NAMES = COLOR_SAMPLES + GRAY_SAMPLES


class Samples(NamedTuple):
    """Crops of the built-in photos.

    Attributes:
        images: uint8 ``(N, 3, crop, crop)`` RGB.
        groups: int64 ``(N,)``: the index in ``names`` of the photo each crop came from.
        names: The photo names, in group order.
    """

    images: np.ndarray
    groups: np.ndarray
    names: tuple[str, ...]


def load_sample(name: str) -> np.ndarray:
    """One built-in photo at full size.

    Args:
        name: One of :data:`SAMPLE_NAMES`.

    Returns:
        uint8 ``(H, W, 3)`` RGB (grayscale photos replicated to 3 channels).

    Raises:
        ValueError: For an unknown name.
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample photo {name!r}; expected one of {list(SAMPLE_NAMES)}")
    image = getattr(skdata, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        raise RuntimeError(f"sample photo {name!r} is {image.dtype}, expected uint8")
    return np.ascontiguousarray(image)


def load_samples(
    crop_size: int = 64, stride: int | None = 32, max_side: int | None = 256
) -> Samples:
    """Crops of every built-in photo, deterministic.

    Each photo is shrunk (``cv2.INTER_AREA``) so that its shorter side is at most
    ``max_side``, then cut into ``crop_size`` crops on a grid with step ``stride``.
    With the defaults this gives 1,076 crops from 19 photos.

    Args:
        crop_size: Side of each crop.
        stride: Step between crops (``None``: ``crop_size``).
        max_side: The largest shorter side before cutting (``None``: full size).

    Returns:
        :class:`Samples` ``(images (N, 3, crop, crop) uint8, groups (N,) int64, names)``.

    Raises:
        TypeError: If a parameter is not an integer.
        ValueError: If a parameter is not positive or ``max_side < crop_size``.
    """
    stride = check_crop_params(crop_size, stride, max_side)
    crops, groups = [], []
    for index, name in enumerate(SAMPLE_NAMES):
        photo = resize_shorter(load_sample(name), max_side)
        cut = grid_crops(photo, crop_size, stride)
        crops.append(cut)
        groups.append(np.full(len(cut), index, dtype=np.int64))
    return Samples(np.concatenate(crops), np.concatenate(groups), SAMPLE_NAMES)

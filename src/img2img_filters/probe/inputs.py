"""What the probe measures: operators, probe photos and example pairs, checked and adapted.

An *operator* is any callable ``(H, W, 3) uint8 RGB -> (H, W)`` or ``(H, W, C)``
array; a :class:`~img2img_filters.filters.Filter` (or a filter spec) is adapted to one.
*Pairs* are ``(input, target)`` examples: ``(H, W, 3)`` uint8 inputs and
``(H, W)`` or ``(H, W, C)`` float targets, for when only examples exist.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from img2img_filters.data.crops import resize_shorter
from img2img_filters.data.pairs import match_pairs
from img2img_filters.data.samples import load_sample
from img2img_filters.data.targets import read_target, target_scale
from img2img_filters.filters import Filter, create_filter
from img2img_filters.imageio import read_image

__all__ = [
    "DEFAULT_PHOTOS",
    "MIN_SIDE",
    "PROBE_SIDE",
    "Operator",
    "OperatorRunner",
    "as_operator",
    "check_pairs",
    "check_photos",
    "default_photos",
    "read_pair_folders",
]

#: ``(H, W, 3) uint8 -> (H, W) | (H, W, C)``.
Operator = Callable[[np.ndarray], Any]
#: The built-in photos the probe uses by default (two colour, two grayscale).
DEFAULT_PHOTOS = ("astronaut", "coffee", "camera", "chelsea")
#: Side of the square probe photos: each is shrunk and centre-cropped to this size.
PROBE_SIDE = 128
#: The smallest probe photo side accepted.
MIN_SIDE = 48


def default_photos(side: int = PROBE_SIDE) -> list[np.ndarray]:
    """Centre crops of the built-in photos, shrunk so that the shorter side is ``side``.

    Returns:
        A list of uint8 ``(side, side, 3)`` RGB arrays.
    """
    return [
        _centre_square(resize_shorter(load_sample(name), side), side) for name in DEFAULT_PHOTOS
    ]


def _centre_square(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(side, height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def check_photos(photos: Any) -> list[np.ndarray]:
    """Probe photos as square uint8 ``(S, S, 3)`` centre crops of at most :data:`PROBE_SIDE`.

    Raises:
        TypeError: If ``photos`` is not a sequence of uint8 arrays.
        ValueError: If it is empty or a photo is not ``(H, W, 3)`` with sides of at
            least :data:`MIN_SIDE`.
    """
    if isinstance(photos, np.ndarray) and photos.ndim == 4:
        photos = list(photos)
    if not isinstance(photos, Sequence) or isinstance(photos, (str, bytes)):
        raise TypeError(
            f"photos must be a list of uint8 (H, W, 3) arrays; got {type(photos).__name__}"
        )
    if len(photos) < 2:
        raise ValueError(f"photos must hold at least 2 photos; got {len(photos)}")
    checked = []
    for index, photo in enumerate(photos):
        if not isinstance(photo, np.ndarray) or photo.dtype != np.uint8:
            kind = f"{photo.dtype} array" if isinstance(photo, np.ndarray) else type(photo).__name__
            raise TypeError(f"photos[{index}] must be a uint8 (H, W, 3) array; got {kind}")
        if photo.ndim != 3 or photo.shape[2] != 3 or min(photo.shape[:2]) < MIN_SIDE:
            raise ValueError(
                f"photos[{index}] must have shape (H, W, 3) with H, W >= {MIN_SIDE}; "
                f"got {photo.shape}"
            )
        checked.append(_centre_square(photo, PROBE_SIDE))
    side = min(photo.shape[0] for photo in checked)
    return [_centre_square(photo, side) for photo in checked]


def check_pairs(pairs: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Example pairs as ``(uint8 (H, W, 3), float64 (H, W, C))``, every target with ``C`` channels.

    Raises:
        TypeError: For a wrong type of container, input or target.
        ValueError: For an empty list, wrong shapes, sizes that differ within a pair,
            targets with different channel counts or non-finite values.
    """
    if not isinstance(pairs, Sequence) or isinstance(pairs, (str, bytes)) or not pairs:
        raise TypeError(
            "pairs must be a non-empty list of (input (H, W, 3) uint8, target (H, W, C)) "
            f"tuples; got {type(pairs).__name__}"
            + (" of length 0" if isinstance(pairs, Sequence) else "")
        )
    checked: list[tuple[np.ndarray, np.ndarray]] = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"pairs[{index}] must be an (input, target) tuple; got {pair!r:.60}")
        image, target = pair
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            raise TypeError(f"pairs[{index}] input must be a uint8 (H, W, 3) array")
        if image.shape[2] != 3 or min(image.shape[:2]) < 16:
            raise ValueError(
                f"pairs[{index}] input must be (H, W, 3) with H, W >= 16; got {image.shape}"
            )
        if not isinstance(target, np.ndarray) or not np.issubdtype(target.dtype, np.number):
            raise TypeError(f"pairs[{index}] target must be a numeric (H, W, C) array")
        target = target[..., None] if target.ndim == 2 else target
        if target.ndim != 3 or target.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"pairs[{index}] target must be (H, W) or (H, W, C) with the input's H, W "
                f"{image.shape[:2]}; got {target.shape}"
            )
        if checked and target.shape[2] != checked[0][1].shape[2]:
            raise ValueError(
                f"pairs[{index}] target has {target.shape[2]} channels; the first has "
                f"{checked[0][1].shape[2]}"
            )
        target = target.astype(np.float64)
        if not np.isfinite(target).all():
            raise ValueError(f"pairs[{index}] target holds NaN or infinite values")
        checked.append((image, target))
    return checked


class OperatorRunner:
    """Calls an operator, checks what it returns and keeps the range of its outputs.

    Attributes:
        calls: How many times the operator ran.
        low, high: The smallest and largest output value seen.
        channels_out: Output channels (known after the first call).
        integer_output: Whether the operator returns integer arrays (quantised outputs).
    """

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.calls = 0
        self.low, self.high = np.inf, -np.inf
        self.channels_out: int | None = None
        self.integer_output = False

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8 -> (H, W, C) float64``."""
        out = np.asarray(self.operator(image.copy()))  # a copy: the operator may write to it
        self.calls += 1
        if not (np.issubdtype(out.dtype, np.number) or out.dtype == np.bool_):
            raise TypeError(f"the operator must return a numeric array; got dtype {out.dtype}")
        out = out[..., None] if out.ndim == 2 else out
        if out.ndim != 3 or out.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"the operator must return (H, W) or (H, W, C) for a {image.shape} input; "
                f"got shape {out.shape}"
            )
        if self.channels_out is not None and out.shape[2] != self.channels_out:
            raise ValueError(
                f"the operator returned {out.shape[2]} channels, earlier {self.channels_out}"
            )
        self.channels_out = out.shape[2]
        self.integer_output = bool(np.issubdtype(out.dtype, np.integer))
        out = out.astype(np.float64)
        if not np.isfinite(out).all():
            raise ValueError("the operator returned NaN or infinite values")
        self.low, self.high = min(self.low, float(out.min())), max(self.high, float(out.max()))
        return out


def as_operator(operator_or_spec: Any) -> tuple[Operator, Filter | None]:
    """An operator from a filter spec, a :class:`Filter` or a callable.

    A filter receives the image as ``(1, 3, H, W)`` float32 in [0, 1] and its
    output comes back as ``(H, W, C)``.

    Returns:
        ``(operator, filter)``: the filter is ``None`` for a plain callable.

    Raises:
        TypeError: For anything else.
        ValueError: For a bad spec (from :func:`~img2img_filters.filters.create_filter`).
    """
    if isinstance(operator_or_spec, str):
        operator_or_spec = create_filter(operator_or_spec)
    if isinstance(operator_or_spec, Filter):
        filter_ = operator_or_spec

        def apply(image: np.ndarray) -> np.ndarray:
            batch = torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255.0)
            with torch.no_grad():
                return filter_(batch)[0].permute(1, 2, 0).double().cpu().numpy()

        return apply, filter_
    if callable(operator_or_spec):
        return operator_or_spec, None
    raise TypeError(
        "operator_or_spec must be a filter spec, a Filter or a callable "
        f"(H, W, 3) uint8 -> (H, W, C); got {type(operator_or_spec).__name__}"
    )


def read_pair_folders(
    inputs: str | os.PathLike[str], targets: str | os.PathLike[str], *, limit: int | None = 32
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Example pairs from two folders, matched as training matches them.

    ``inputs/a/b.jpg`` pairs with ``targets/a/b.png`` (:func:`img2img_filters.data.pairs.match_pairs`).
    Inputs are read as 8-bit RGB; targets at their own depth
    (:func:`img2img_filters.data.targets.read_target`: 8- or 16-bit PNG/TIFF, float TIFF, ``.npy``)
    and scaled to floats; RGB targets whose three channels are equal everywhere become
    one gray channel. Unlike training, which skips them, the probe refuses files without
    a partner: it measures one operator, and a stray file is more likely a mistake.

    Args:
        inputs: The folder of input photos.
        targets: The folder of target images.
        limit: At most this many pairs, in sorted order (``None``: all).

    Returns:
        ``[(input uint8 (H, W, 3), target float64 (H, W, C)), ...]``.

    Raises:
        FileNotFoundError: If a folder is missing.
        ValueError: If no file pairs up, a file has no partner or a pair's sizes differ.
    """
    for folder, argument in ((inputs, "--data"), (targets, "--targets")):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{argument}: folder {str(folder)!r} not found")
    matched, unmatched = match_pairs(inputs, targets)
    if unmatched:
        names = [f"{name} ({reason})" for name, reason in unmatched[:3]]
        raise ValueError(
            f"{len(unmatched)} file(s) have no partner in the other folder (matched by relative "
            f"path without extension), e.g. {names}"
        )
    pairs, gray = [], True
    for name, source, target_path in matched[:limit]:
        image, target = read_image(source), read_target(target_path)
        if image.shape[:2] != target.shape[:2]:
            raise ValueError(
                f"pair {name!r}: input is {image.shape[1]}x{image.shape[0]}, target "
                f"{target.shape[1]}x{target.shape[0]}; they must be the same size"
            )
        values = target.astype(np.float64) * target_scale(target.dtype)
        gray = gray and (values.shape[2] == 1 or bool((values == values[..., :1]).all()))
        pairs.append((image, values))
    if gray:
        pairs = [(image, target[..., :1]) for image, target in pairs]
    return pairs

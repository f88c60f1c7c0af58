"""Batched building blocks: grayscale conversion, correlation, morphology, OpenCV per image.

The one convolution, :func:`~img2img_filters.filters.convolution.filter2d`, is
re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from img2img_filters.border import pad2d
from img2img_filters.filters.convolution import SEPARABLE_FROM, filter2d, opencv_path

__all__ = [
    "GRAY_WEIGHTS",
    "SEPARABLE_FROM",
    "correlate",
    "filter2d",
    "morphology",
    "per_image_opencv",
    "rgb_to_gray",
    "to_uint8",
]

#: OpenCV's RGB -> GRAY weights (``cv2.COLOR_RGB2GRAY``), in R, G, B order, exactly as
#: OpenCV stores them: the float32 numbers nearest to 0.299, 0.587 and 0.114.
GRAY_WEIGHTS: tuple[float, float, float] = (
    float(np.float32(0.299)),
    float(np.float32(0.587)),
    float(np.float32(0.114)),
)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``COLOR_RGB2GRAY`` on a float batch, with OpenCV's own arithmetic.

    ``cv2.cvtColor`` on float32 computes ``fma(B, 0.114f, fma(R, 0.299f, G * 0.587f))``
    (its vectorised path): the float32 weights, that order, and fused multiply-adds
    that round once. Every product of two float32 numbers is exact in float64, so
    one float64 multiply-add rounded to float32 is that fused operation; the
    result equals ``cv2.cvtColor`` bit for bit on every image whose pixels OpenCV
    sends down its vectorised path (any uint8 colour, any image of width 64) and
    differs by at most one float32 ulp elsewhere. Where float64 is unavailable
    (Apple's MPS) the same sums run in float32: one ulp from OpenCV. On the CPU,
    float32 batches go through ``cv2.cvtColor`` itself (all photos stacked into one
    tall image), which is faster and equal to OpenCV everywhere.

    Args:
        x: ``(B, 3, H, W)`` RGB, float.

    Returns:
        ``(B, 1, H, W)`` of ``x``'s dtype: ``0.299 R + 0.587 G + 0.114 B``.
    """
    wr, wg, wb = GRAY_WEIGHTS
    if opencv_path(x):
        batch, _, height, width = x.shape
        planes = x.detach().transpose(0, 1)
        if planes.is_contiguous():  # stored channel by channel: interleave with OpenCV
            rgb = planes.numpy().reshape(3, batch * height, width)
            interleaved = cv2.merge([rgb[0], rgb[1], rgb[2]])
        else:
            interleaved = x.detach().permute(0, 2, 3, 1).contiguous().numpy()
        gray = cv2.cvtColor(interleaved.reshape(batch * height, width, 3), cv2.COLOR_RGB2GRAY)
        return torch.from_numpy(gray).view(batch, 1, height, width)
    if x.dtype != torch.float32 or x.device.type == "mps":
        return x[:, 2:3] * wb + (x[:, 0:1] * wr + x[:, 1:2] * wg)
    acc = x[:, 1:2] * wg  # a float32 product rounds once, as OpenCV's first step does
    acc = x[:, 0:1].double().mul_(wr).add_(acc).float()
    return x[:, 2:3].double().mul_(wb).add_(acc).float()


def correlate(x: torch.Tensor, kernel: np.ndarray, border: str) -> torch.Tensor:
    """Correlate each channel with a centred 2-D kernel: :func:`filter2d` with odd sides.

    Args:
        x: ``(B, C, H, W)`` float.
        kernel: ``(kh, kw)`` with odd sides.
        border: Border mode (see :mod:`img2img_filters.border`).

    Returns:
        ``(B, C, H, W)``.
    """
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"correlate: kernel sides must be odd (centred); got {kernel.shape}")
    return filter2d(x, kernel, border)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A float batch in [0, 1] ``(B, C, H, W)`` as uint8 images ``(B, H, W, C)`` (rounded)."""
    scaled = (x.detach().float() * 255.0).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def per_image_opencv(
    x: torch.Tensor,
    function: Callable[[np.ndarray], np.ndarray],
    *,
    as_uint8: bool = False,
) -> torch.Tensor:
    """Apply an OpenCV function image by image on the CPU, keeping the batch's device.

    Args:
        x: ``(B, C, H, W)`` float; values in [0, 1] when ``as_uint8``.
        function: Maps one ``(H, W)`` or ``(H, W, C)`` image to an image of the same size.
        as_uint8: Convert to uint8 (``round(255 x)``) before, and back to [0, 1] after.

    Returns:
        ``(B, C', H, W)`` float32 on ``x``'s device.
    """
    images = to_uint8(x) if as_uint8 else x.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    outputs = []
    for image in images:
        image = np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image)
        result = function(image)
        if result.ndim == 2:
            result = result[..., None]
        outputs.append(result)
    stacked = np.stack(outputs).astype(np.float32)
    if as_uint8:
        stacked /= 255.0
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous().to(x.device)


def morphology(x: torch.Tensor, mask: np.ndarray, border: str, op: str) -> torch.Tensor:
    """Dilation (``op="max"``) or erosion (``op="min"``) with a structuring element.

    Equals ``cv2.dilate``/``cv2.erode`` with the same border (``constant``: zeros,
    ``borderValue=0``) exactly: maxima and minima pick input values, whatever the
    order they are taken in. The maximum runs over shifted views of the padded
    batch, row by row then column by column for a full rectangle.

    Args:
        x: ``(B, C, H, W)``.
        mask: ``(kh, kw)`` of 0/1 with odd sides, anchor at the centre.
        border: Border mode.
        op: ``"max"`` or ``"min"``.

    Returns:
        ``(B, C, H, W)``.
    """
    if op not in ("max", "min"):
        raise ValueError(f"morphology: op must be 'max' or 'min'; got {op!r}")
    if not mask.any():
        raise ValueError("morphology: the structuring element is empty")
    pick = torch.maximum if op == "max" else torch.minimum
    kh, kw = mask.shape
    height, width = x.shape[-2:]
    padded = pad2d(x, kw // 2, kw // 2, kh // 2, kh // 2, border)
    if mask.all():
        rows = padded[..., 0:width]
        for dx in range(1, kw):
            rows = pick(rows, padded[..., dx : dx + width])
        result = rows[..., 0:height, :]
        for dy in range(1, kh):
            result = pick(result, rows[..., dy : dy + height, :])
        return result
    found: torch.Tensor | None = None
    for dy, dx in zip(*np.nonzero(mask), strict=True):
        shifted = padded[..., dy : dy + height, dx : dx + width]
        found = shifted if found is None else pick(found, shifted)
    assert found is not None  # the element is not empty
    return found

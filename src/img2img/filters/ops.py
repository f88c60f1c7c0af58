"""Batched building blocks: grayscale conversion, correlation, morphology, OpenCV per image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from img2img.border import pad2d
from img2img.filters.base import GRAY_WEIGHTS

__all__ = ["correlate", "morphology", "per_image_opencv", "rgb_to_gray", "to_uint8"]


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``COLOR_RGB2GRAY`` on a float batch.

    Args:
        x: ``(B, 3, H, W)`` RGB.

    Returns:
        ``(B, 1, H, W)``: ``0.299 R + 0.587 G + 0.114 B``.
    """
    r, g, b = GRAY_WEIGHTS
    return x[:, 0:1] * r + x[:, 1:2] * g + x[:, 2:3] * b


def correlate(x: torch.Tensor, kernel: np.ndarray, border: str) -> torch.Tensor:
    """Correlate each channel with a 2-D kernel, as ``cv2.filter2D`` does (anchor at the centre).

    Args:
        x: ``(B, C, H, W)`` float.
        kernel: ``(kh, kw)`` with odd sides.
        border: Border mode (see :mod:`img2img.border`).

    Returns:
        ``(B, C, H, W)``.
    """
    kh, kw = kernel.shape
    channels = x.shape[1]
    weight = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    padded = pad2d(x, kw // 2, kw // 2, kh // 2, kh // 2, border)
    rank_one = _separable(kernel)
    if rank_one is not None:
        column, row = rank_one
        col = torch.as_tensor(column, dtype=x.dtype, device=x.device).view(1, 1, kh, 1)
        rw = torch.as_tensor(row, dtype=x.dtype, device=x.device).view(1, 1, 1, kw)
        out = F.conv2d(padded, rw.expand(channels, 1, 1, kw), groups=channels)
        return F.conv2d(out, col.expand(channels, 1, kh, 1), groups=channels)
    return F.conv2d(padded, weight.view(1, 1, kh, kw).expand(channels, 1, kh, kw), groups=channels)


def _separable(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Column and row factors of a kernel of rank one, or ``None``.

    Only kernels whose outer product of factors reproduces them exactly are
    split, so that the separable path changes nothing but speed.
    """
    if kernel.shape[0] == 1 or kernel.shape[1] == 1:
        return None
    pivot_row = int(np.abs(kernel).max(axis=1).argmax())
    row = kernel[pivot_row]
    pivot = int(np.abs(row).argmax())
    if row[pivot] == 0:
        return None
    column = kernel[:, pivot] / row[pivot]
    if not np.array_equal(np.outer(column, row), kernel):
        return None
    return column, row


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
    if as_uint8:
        images = to_uint8(x)
    else:
        images = x.detach().float().permute(0, 2, 3, 1).cpu().numpy()
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

    Equals ``cv2.dilate``/``cv2.erode`` with the same border: max and min are exact.

    Args:
        x: ``(B, C, H, W)``.
        mask: ``(kh, kw)`` of 0/1, anchor at the centre.
        border: Border mode.
        op: ``"max"`` or ``"min"``.

    Returns:
        ``(B, C, H, W)``.
    """
    kh, kw = mask.shape
    padded = pad2d(x, kw // 2, kw // 2, kh // 2, kh // 2, border)
    if mask.all():
        if op == "max":
            return F.max_pool2d(padded, (kh, kw), stride=1)
        return -F.max_pool2d(-padded, (kh, kw), stride=1)
    batch, channels, height, width = x.shape
    result = None
    for dy, dx in zip(*np.nonzero(mask), strict=True):
        shifted = padded[:, :, dy : dy + height, dx : dx + width]
        if result is None:
            result = shifted
        elif op == "max":
            result = torch.maximum(result, shifted)
        else:
            result = torch.minimum(result, shifted)
    assert result is not None  # a structuring element always has its anchor set
    return result

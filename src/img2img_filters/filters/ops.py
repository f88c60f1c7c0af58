"""Batched building blocks: grayscale conversion, correlation, morphology, OpenCV per image."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from img2img_filters.border import CV2_BORDER_FLAGS, pad2d

__all__ = ["GRAY_WEIGHTS", "correlate", "morphology", "per_image_opencv", "rgb_to_gray", "to_uint8"]

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
    if _opencv_path(x):
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


def _opencv_path(x: torch.Tensor) -> bool:
    """Whether a batch takes the OpenCV path: a float32 CPU batch, outside autograd, not empty."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.numel() > 0
        and not (torch.is_grad_enabled() and x.requires_grad)
    )


def _weights(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A NumPy array as a tensor of ``like``'s dtype on ``like``'s device (cast on the CPU)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    return tensor.to(dtype=like.dtype).to(like.device)


#: Rank-one kernels this wide or wider run as a row pass and a column pass; smaller
#: ones as one 2-D pass, which is faster below this size.
SEPARABLE_FROM = 11


def correlate(x: torch.Tensor, kernel: np.ndarray, border: str) -> torch.Tensor:
    """Correlate each channel with a 2-D kernel, as ``cv2.filter2D`` does (anchor at the centre).

    The batch's images and channels become the channels of one depthwise
    convolution. Large kernels of rank one (Gaussian, Sobel, box) run as a row
    pass then a column pass, the order of OpenCV's separable filters. On the CPU,
    float32 batches with kernels narrower than :data:`SEPARABLE_FROM` (any border
    but ``wrap``, which ``cv2.filter2D`` refuses) are ``cv2.filter2D`` itself, image
    by image: OpenCV's own result, and faster than the depthwise convolution.

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
    batch, channels, height, width = x.shape
    n = batch * channels
    if max(kh, kw) < SEPARABLE_FROM and border != "wrap" and _opencv_path(x):
        return _filter2d_each(x, kernel, border)
    padded = pad2d(x, kw // 2, kw // 2, kh // 2, kh // 2, border)
    padded = padded.reshape(1, n, height + kh - 1, width + kw - 1)
    rank_one = _separable(kernel) if max(kh, kw) >= SEPARABLE_FROM else None
    if rank_one is not None:
        column, row = rank_one
        rw = _weights(row, x).view(1, 1, 1, kw).expand(n, 1, 1, kw)
        col = _weights(column, x).view(1, 1, kh, 1).expand(n, 1, kh, 1)
        out = F.conv2d(F.conv2d(padded, rw, groups=n), col, groups=n)
    else:
        weight = _weights(kernel, x).view(1, 1, kh, kw).expand(n, 1, kh, kw)
        out = F.conv2d(padded, weight, groups=n)
    return out.view(batch, channels, height, width)


def _filter2d_each(x: torch.Tensor, kernel: np.ndarray, border: str) -> torch.Tensor:
    """``cv2.filter2D`` on each ``(H, W)`` plane of a float32 CPU batch ``(B, C, H, W)``."""
    planes = x.detach().contiguous().numpy().reshape(-1, *x.shape[-2:])
    out = np.empty_like(planes)
    weights = np.ascontiguousarray(kernel, dtype=np.float32)
    flag = CV2_BORDER_FLAGS[border]
    for plane, result in zip(planes, out, strict=True):
        cv2.filter2D(plane, -1, weights, dst=result, borderType=flag)
    return torch.from_numpy(out).view(x.shape)


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

"""The OpenCV work behind :mod:`img2img_filters.backends.cpu.opencv_conv`: planes, blocks, scratch.

The photos of a batch become tall images, one per channel; each pair of input
and output channels is one ``cv2.filter2D`` over them (zero border), block by
block so that a block's planes stay in the cache while every kernel runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

#: Photos per block: a block's planes stay in the cache while all its taps run.
_BLOCK = 16


def _kernels(weight: torch.Tensor, dilation: tuple[int, int], flip: bool) -> list[list[np.ndarray]]:
    """``[o][i]`` float32 kernels for ``cv2.filter2D`` (dilated; flipped for the input gradient)."""
    dh, dw = dilation
    values = weight.detach().numpy()
    out_channels, in_channels, kh, kw = values.shape
    kernels = []
    for o in range(out_channels):
        row = []
        for i in range(in_channels):
            kernel = np.zeros((dh * (kh - 1) + 1, dw * (kw - 1) + 1), dtype=np.float32)
            kernel[::dh, ::dw] = values[o, i]
            row.append(np.ascontiguousarray(kernel[::-1, ::-1]) if flip else kernel)
        kernels.append(row)
    return kernels


_scratch = threading.local()


def _buffer(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A zero-initialised float32 scratch array of this thread, kept for the next call.

    Callers only ever write the same region of a buffer (its name says which), so
    whatever stays zero (the padding around each photo) is written once, when the
    buffer is made.
    """
    pool = getattr(_scratch, "pool", None)
    if pool is None:
        pool = _scratch.pool = {}
    key = (name, shape)
    array = pool.get(key)
    if array is None:
        if len(pool) > 32:  # shapes change rarely; do not hoard
            pool.clear()
        array = pool[key] = np.zeros(shape, dtype=np.float32)
    return array


def _blocks(batch: int) -> Iterator[tuple[int, int]]:
    """``(first, end)`` photo indices of each block, in order.

    (Running blocks on several threads was measured: on two shared cores the
    hand-offs cost more than they gained, while OpenCV and BLAS already spread
    each call over the cores.)
    """
    for start in range(0, batch, _BLOCK):
        yield start, min(batch, start + _BLOCK)


def _correlate_into(
    sources: np.ndarray,
    kernels: list[np.ndarray],
    dst: np.ndarray,
    tmp: np.ndarray,
    delta: float,
    anchor: tuple[int, int] = (-1, -1),
) -> None:
    """``dst = sum_i filter2D(sources[i], kernels[i]) + delta`` (zero border; ``tmp``: scratch)."""
    for i, kernel in enumerate(kernels):
        cv2.filter2D(
            sources[i],
            -1,
            kernel,
            dst=dst if i == 0 else tmp,
            anchor=anchor,
            delta=float(delta) if i == 0 else 0.0,
            borderType=cv2.BORDER_CONSTANT,
        )
        if i:
            np.add(dst, tmp, out=dst)


def _correlate_block(
    sources: np.ndarray,
    kernels: list[list[np.ndarray]],
    dst: np.ndarray,
    tmp: np.ndarray,
    anchor: tuple[int, int],
    delta: Sequence[float],
    out: Callable[[int, np.ndarray], None],
) -> None:
    """For each output channel ``o``: ``sum_i filter2D(sources[i], kernels[o][i]) + delta[o]``.

    ``sources`` is ``(C_in, rows, width)``: photos stacked as bands of rows with
    zeros between them, like OpenCV's constant border. The result of each ``o``
    lands in ``dst`` (``(rows, width)``) and is handed to ``out(o, dst)``.
    """
    for o, row in enumerate(kernels):
        _correlate_into(sources, row, dst, tmp, delta[o], anchor)
        out(o, dst)


def _same_correlate(
    planes: np.ndarray,
    kernels: list[list[np.ndarray]],
    out: np.ndarray,
    delta: Sequence[float],
) -> None:
    """``out[o] = sum_i filter2D(planes[i], kernels[o][i]) + delta[o]`` with zero padding, same size.

    Every channel's photos form one tall image without gaps (``(C, B, H, W)``
    contiguous); OpenCV's constant border pads the columns. Only the rows within
    half a kernel of a photo's top or bottom would see the neighbouring photo:
    they are computed again from bands that hold their own photo's rows and zeros.
    Each pixel sums the same products in the same order either way, so every
    output equals ``cv2.filter2D`` on that photo alone.

    Args:
        planes: ``(C_in, B, H, W)`` float32, C-contiguous.
        kernels: ``[o][i]`` float32 kernels with odd sides, anchored at their centres.
        out: ``(C_out, B, H, W)`` float32, C-contiguous; overwritten.
        delta: Added to each output channel (the bias).
    """
    in_channels, batch, height, width = planes.shape
    half = kernels[0][0].shape[0] // 2
    tall_in = planes.reshape(in_channels, batch * height, width)
    tall_out = out.reshape(out.shape[0], batch * height, width)

    for start, end in _blocks(batch):
        rows = slice(start * height, end * height)
        tmp = _buffer("same", (_BLOCK * height, width))[: (end - start) * height]
        for o, row in enumerate(kernels):
            _correlate_into(tall_in[:, rows], row, tall_out[o, rows], tmp, delta[o])
    if half == 0:
        return
    for top in (True, False):
        # Bands of 3 * half rows: half zero rows, then the photo's first 2 * half rows
        # (or its last 2 * half rows, then zeros); their middle rows are the answer.
        band = _buffer("top" if top else "bottom", (in_channels, batch, 3 * half, width))
        if top:
            band[:, :, half:] = planes[:, :, : 2 * half]
        else:
            band[:, :, : 2 * half] = planes[:, :, height - 2 * half :]
        result = _buffer("band", (batch * 3 * half, width))
        scratch = _buffer("band_tmp", (batch * 3 * half, width))
        tall_band = band.reshape(in_channels, batch * 3 * half, width)
        for o in range(len(kernels)):
            _correlate_into(tall_band, kernels[o], result, scratch, delta[o])
            middle = result.reshape(batch, 3 * half, width)[:, half : 2 * half]
            if top:
                out[o, :, :half] = middle
            else:
                out[o, :, height - half :] = middle


def _channel_major(tensor: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` as a C-contiguous ``(C, B, H, W)`` array (no copy when it already is)."""
    planes = tensor.detach().transpose(0, 1)
    return (planes if planes.is_contiguous() else planes.contiguous()).numpy()

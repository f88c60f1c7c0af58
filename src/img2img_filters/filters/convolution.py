"""One convolution for applying a kernel to images: :func:`filter2d`, ``cv2.filter2D``'s twin.

Every place outside the training engines that applies a kernel to images calls
:func:`filter2d`: the linear filter stages, the gradient magnitude, a linear
filter's effective kernel (:meth:`~img2img_filters.filters.chain.Filter.apply_kernel`)
and the folded fast path of inference (:mod:`img2img_filters.infer.fast`). It
correlates (no kernel flip), with OpenCV's anchor and OpenCV's borders
(:mod:`img2img_filters.border`), on tensors ``(B, C, H, W)`` and on NumPy images
``(H, W)`` / ``(H, W, C)``.

>>> import numpy as np, torch
>>> box = np.full((3, 3), 1 / 9)
>>> filter2d(torch.ones(2, 3, 8, 8), box).shape
torch.Size([2, 3, 8, 8])
>>> filter2d(np.ones((8, 8, 3), np.uint8), box).dtype
dtype('float32')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias, overload

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from img2img_filters.border import CV2_BORDER_FLAGS, check_border, pad2d

__all__ = ["SEPARABLE_FROM", "filter2d"]

#: Rank-one kernels this wide or wider run as a row pass and a column pass on tensors;
#: smaller ones as one 2-D pass, which is faster below this size. Below it, float32 CPU
#: batches are ``cv2.filter2D`` itself (OpenCV switches to a DFT from 11x11 on).
SEPARABLE_FROM = 11

#: A kernel: ``(kh, kw)``, ``(C_out, C_in, kh, kw)``, or the factors ``(ky, kx)`` of a separable one.
Kernel: TypeAlias = np.ndarray | torch.Tensor | tuple[np.ndarray, np.ndarray]

#: The NumPy depths :func:`filter2d` takes (``cv2.filter2D`` into float32 accepts them).
ARRAY_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)


@overload
def filter2d(
    images: torch.Tensor,
    kernel: Kernel,
    border: str = ...,
    *,
    anchor: tuple[int, int] | None = ...,
) -> torch.Tensor: ...


@overload
def filter2d(
    images: np.ndarray,
    kernel: Kernel,
    border: str = ...,
    *,
    anchor: tuple[int, int] | None = ...,
) -> np.ndarray: ...


def filter2d(
    images: torch.Tensor | np.ndarray,
    kernel: Kernel,
    border: str = "reflect101",
    *,
    anchor: tuple[int, int] | None = None,
) -> torch.Tensor | np.ndarray:
    """Correlate each channel of images with a kernel, as ``cv2.filter2D`` does.

    ``out[y, x] = sum_ij kernel[i, j] * image[y + i - ay, x + j - ax]``, the image
    extended by ``border`` where the kernel reaches past it. Tensors stay on their
    device: float32 CPU batches with kernels narrower than :data:`SEPARABLE_FROM`
    (any border but ``wrap``, which ``cv2.filter2D`` refuses) are ``cv2.filter2D``
    itself, plane by plane, bit for bit; the others are depthwise ``F.conv2d`` of
    the padded batch, with exact rank-one kernels of side :data:`SEPARABLE_FROM` or
    more as a row pass then a column pass, equal to OpenCV up to float32 rounding.
    NumPy images are ``cv2.filter2D`` (``cv2.sepFilter2D`` for a pair of factors)
    into float32 on the whole image (plane by plane for a 4-D kernel); ``wrap``
    pads with ``cv2.copyMakeBorder`` first.

    Args:
        images: A float tensor ``(B, C, H, W)`` on any device, or a NumPy image
            ``(H, W)`` or ``(H, W, C)`` of uint8, uint16, int16 or float32.
        kernel: One of
            ``(kh, kw)`` array or tensor: every channel is correlated with it;
            ``(ky, kx)``, a tuple of two 1-D arrays or tensors: the separable kernel
            ``outer(ky, kx)``, run as a row pass with ``kx`` then a column pass with ``ky``;
            ``(C_out, C_in, kh, kw)``: output channel ``o`` sums the correlations of
            input channel ``c`` with ``kernel[o, c]`` (``C_in`` must equal ``C``).
            The weights are used in float32 for NumPy images and float32 tensors.
        border: A border mode of :data:`img2img_filters.border.BORDER_MODES`.
        anchor: ``(ax, ay)``, the kernel element over the output pixel; ``None`` is
            OpenCV's default ``(kw // 2, kh // 2)``: the centre of odd sides, the
            element after it for even ones.

    Returns:
        For a tensor, ``(B, C, H, W)`` (``(B, C_out, H, W)`` for a 4-D kernel) of its
        dtype on its device. For an array, float32 of its shape (``(H, W, C_out)``
        for a 4-D kernel).

    Raises:
        TypeError: If ``images`` is not a float tensor or an array of a listed dtype.
        ValueError: For images or a kernel of another shape, an empty kernel, a 4-D
            kernel whose ``C_in`` is not the images' channel count, an anchor outside
            the kernel, or an unknown border.
    """
    border = check_border(border)
    factors, full = _read_kernel(kernel)
    kh, kw = (len(factors[0]), len(factors[1])) if factors is not None else full.shape[-2:]
    anchor = _check_anchor(anchor, kh, kw)
    if isinstance(images, torch.Tensor):
        if not images.is_floating_point():
            raise TypeError(f"filter2d: images must be a float tensor; got a {images.dtype} tensor")
        if images.dim() != 4:
            raise ValueError(
                f"filter2d: a tensor of images must be (B, C, H, W); got shape {tuple(images.shape)}"
            )
        if full is not None and full.ndim == 4:
            _check_channels(full, images.shape[1])
            return _tensor_full(images, full, border, anchor)
        return _tensor_each(images, factors, full, border, anchor)
    if isinstance(images, np.ndarray):
        if images.dtype not in ARRAY_DTYPES:
            raise TypeError(
                f"filter2d: a NumPy image must hold {[np.dtype(t).name for t in ARRAY_DTYPES]}; "
                f"got {images.dtype}"
            )
        if images.ndim not in (2, 3):
            raise ValueError(
                f"filter2d: a NumPy image must be (H, W) or (H, W, C); got shape {images.shape}"
            )
        return _array(images, factors, full, border, anchor)
    raise TypeError(
        f"filter2d: images must be a torch.Tensor or a numpy.ndarray; got {type(images).__name__}"
    )


def _read_kernel(kernel: Kernel) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]:
    """``(factors, None)`` for a pair of 1-D factors, else ``(None, kernel as a float64 array)``."""
    if _is_factor_pair(kernel):
        ky, kx = (np.asarray(_numpy(f), dtype=np.float64) for f in kernel)
        if not ky.size or not kx.size:
            raise ValueError(
                f"filter2d: separable factors must not be empty; got {ky.shape} and {kx.shape}"
            )
        return (ky, kx), None
    full = np.asarray(_numpy(kernel), dtype=np.float64)
    if full.ndim not in (2, 4) or 0 in full.shape:
        raise ValueError(
            "filter2d: kernel must be (kh, kw), (C_out, C_in, kh, kw) or a pair (ky, kx); "
            f"got shape {full.shape}"
        )
    return None, full


def _is_factor_pair(kernel: object) -> bool:
    """Whether ``kernel`` is a tuple of two 1-D arrays or tensors (a separable kernel)."""
    return (
        isinstance(kernel, tuple)
        and len(kernel) == 2
        and all(isinstance(f, np.ndarray | torch.Tensor) and f.ndim == 1 for f in kernel)
    )


def _numpy(values: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    """Kernel weights as a NumPy array (a tensor is moved to the CPU, its dtype kept)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_anchor(anchor: tuple[int, int] | None, kh: int, kw: int) -> tuple[int, int]:
    """The anchor ``(ax, ay)`` (OpenCV's default for ``None``), checked to lie in the kernel."""
    if anchor is None:
        return kw // 2, kh // 2
    if (
        not isinstance(anchor, tuple | list)
        or len(anchor) != 2
        or not all(isinstance(a, int | np.integer) and not isinstance(a, bool) for a in anchor)
        or not (0 <= anchor[0] < kw and 0 <= anchor[1] < kh)
    ):
        raise ValueError(
            f"filter2d: anchor must be None or (ax, ay) with 0 <= ax < {kw} and 0 <= ay < {kh} "
            f"(the kernel's width and height); got {anchor!r}"
        )
    return int(anchor[0]), int(anchor[1])


def _check_channels(kernel: np.ndarray, channels: int) -> None:
    """Fail unless a 4-D kernel takes ``channels`` input channels."""
    if kernel.shape[1] != channels:
        raise ValueError(
            f"filter2d: a (C_out, C_in, kh, kw) kernel needs C_in equal to the images' "
            f"{channels} channels; got kernel shape {kernel.shape}"
        )


def _pads(kh: int, kw: int, anchor: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)``: how far the kernel reaches past each side."""
    ax, ay = anchor
    return ax, kw - 1 - ax, ay, kh - 1 - ay


def opencv_path(x: torch.Tensor) -> bool:
    """Whether a batch may go through OpenCV: float32 on the CPU, outside autograd, not empty."""
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


def _tensor_each(
    x: torch.Tensor,
    factors: tuple[np.ndarray, np.ndarray] | None,
    kernel: np.ndarray | None,
    border: str,
    anchor: tuple[int, int],
) -> torch.Tensor:
    """Every channel of ``(B, C, H, W)`` correlated with one kernel (2-D or a pair of factors)."""
    kh, kw = (len(factors[0]), len(factors[1])) if factors is not None else kernel.shape
    if factors is None and max(kh, kw) < SEPARABLE_FROM and border != "wrap" and opencv_path(x):
        return _opencv_each(x, kernel, border, anchor)
    batch, channels, height, width = x.shape
    n = batch * channels
    padded = pad2d(x, *_pads(kh, kw, anchor), border)
    padded = padded.reshape(1, n, height + kh - 1, width + kw - 1)
    if factors is None and max(kh, kw) >= SEPARABLE_FROM:
        factors = _separable(kernel)
    if factors is not None:
        column, row = factors
        rw = _weights(row, x).view(1, 1, 1, kw).expand(n, 1, 1, kw)
        col = _weights(column, x).view(1, 1, kh, 1).expand(n, 1, kh, 1)
        out = F.conv2d(F.conv2d(padded, rw, groups=n), col, groups=n)
    else:
        weight = _weights(kernel, x).view(1, 1, kh, kw).expand(n, 1, kh, kw)
        out = F.conv2d(padded, weight, groups=n)
    return out.view(batch, channels, height, width)


def _opencv_each(
    x: torch.Tensor, kernel: np.ndarray, border: str, anchor: tuple[int, int]
) -> torch.Tensor:
    """``cv2.filter2D`` on each ``(H, W)`` plane of a float32 CPU batch ``(B, C, H, W)``."""
    planes = x.detach().contiguous().numpy().reshape(-1, *x.shape[-2:])
    out = np.empty_like(planes)
    weights = np.ascontiguousarray(kernel, dtype=np.float32)
    flag = CV2_BORDER_FLAGS[border]
    for plane, result in zip(planes, out, strict=True):
        cv2.filter2D(plane, -1, weights, dst=result, anchor=anchor, borderType=flag)
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


def _tensor_full(
    batch: torch.Tensor, kernel: np.ndarray, border: str, anchor: tuple[int, int]
) -> torch.Tensor:
    """``(B, C_in, H, W)`` through a ``(C_out, C_in, kh, kw)`` kernel, on the batch's device.

    One padding, then per output channel one depthwise convolution summed over
    the input channels (PyTorch's fast path).
    """
    out_channels, in_channels, kh, kw = kernel.shape
    batch_size, _, height, width = batch.shape
    padded = pad2d(batch, *_pads(kh, kw, anchor), border)
    padded = padded.reshape(1, batch_size * in_channels, height + kh - 1, width + kw - 1)
    weights = torch.from_numpy(kernel).to(batch.dtype).to(batch.device)
    outputs = []
    for c in range(out_channels):
        weight = weights[c].unsqueeze(1).repeat(batch_size, 1, 1, 1)  # (B * C_in, 1, kh, kw)
        out = F.conv2d(padded, weight, groups=batch_size * in_channels)
        outputs.append(out.view(batch_size, in_channels, height, width).sum(dim=1))
    return torch.stack(outputs, dim=1)


def _array(
    image: np.ndarray,
    factors: tuple[np.ndarray, np.ndarray] | None,
    kernel: np.ndarray | None,
    border: str,
    anchor: tuple[int, int],
) -> np.ndarray:
    """A NumPy image ``(H, W)`` or ``(H, W, C)`` filtered into float32 by OpenCV."""
    if kernel is not None and kernel.ndim == 4:
        channels = 1 if image.ndim == 2 else image.shape[-1]
        _check_channels(kernel, channels)
        planes = [image] if image.ndim == 2 else [image[..., c] for c in range(channels)]
        planes = [np.ascontiguousarray(plane) for plane in planes]
        outputs = []
        for row in kernel.astype(np.float32):
            result = _opencv_image(planes[0], row[0], None, border, anchor)
            for plane, weight in zip(planes[1:], row[1:], strict=True):
                result += _opencv_image(plane, weight, None, border, anchor)
            outputs.append(result)
        return np.stack(outputs, axis=-1)
    if factors is not None:
        factors = (factors[0].astype(np.float32), factors[1].astype(np.float32))
    weight = kernel.astype(np.float32) if kernel is not None else None
    result = _opencv_image(np.ascontiguousarray(image), weight, factors, border, anchor)
    return result.reshape(image.shape)  # OpenCV returns a one-channel (H, W, 1) as (H, W)


def _opencv_image(
    image: np.ndarray,
    kernel: np.ndarray | None,
    factors: tuple[np.ndarray, np.ndarray] | None,
    border: str,
    anchor: tuple[int, int],
) -> np.ndarray:
    """One image ``(H, W)`` or ``(H, W, C)`` (any depth OpenCV filters) correlated into float32.

    OpenCV's filters take no ``BORDER_WRAP`` (``cv2.filter2D`` only for the kernels
    it runs by DFT): that border is padded with ``cv2.copyMakeBorder`` and cut off.
    """
    left, right, top, bottom = _pads(
        *((len(factors[0]), len(factors[1])) if factors is not None else kernel.shape), anchor
    )
    if border == "wrap":
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_WRAP)
        flag = cv2.BORDER_CONSTANT
    else:
        flag = CV2_BORDER_FLAGS[border]
    if factors is not None:
        ky, kx = factors
        result = cv2.sepFilter2D(image, cv2.CV_32F, kx, ky, anchor=anchor, borderType=flag)
    else:
        result = cv2.filter2D(image, cv2.CV_32F, kernel, anchor=anchor, borderType=flag)
    if border == "wrap":
        result = result[top : result.shape[0] - bottom, left : result.shape[1] - right]
    return result

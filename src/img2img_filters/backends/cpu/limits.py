"""Which convolutions the OpenCV path takes, and the PyTorch thread count while it trains.

The limits live apart from the convolutions themselves (:mod:`img2img_filters.backends.cpu.opencv_conv`)
so that choosing an engine needs no OpenCV call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

__all__ = [
    "MAX_CHANNEL_PAIRS",
    "MAX_KERNEL_SIDE",
    "as_pair",
    "has_tiny_convs",
    "is_tiny_conv",
    "only_tiny_convs",
    "torch_threads",
    "within_limits",
]

#: Convolutions with at most this many (input, output) channel pairs take the OpenCV path.
MAX_CHANNEL_PAIRS = 16
#: ... and kernels (dilation included) no wider than this (OpenCV switches to a DFT above).
MAX_KERNEL_SIDE = 9


def as_pair(value: Any) -> tuple[int, int] | None:
    """``3`` or ``(3, 3)`` -> ``(3, 3)``; anything else (``"same"``) -> ``None``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return int(value[0]), int(value[1])
    return None


def within_limits(pairs: int, kernel: Sequence[int], dilation: Sequence[int]) -> bool:
    """At most :data:`MAX_CHANNEL_PAIRS` channel pairs, kernels (dilated) at most :data:`MAX_KERNEL_SIDE`."""
    sides = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    return pairs <= MAX_CHANNEL_PAIRS and max(sides) <= MAX_KERNEL_SIDE


def is_tiny_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> bool:
    """Whether :func:`~img2img_filters.backends.cpu.opencv_conv.tiny_conv2d` takes this ``conv2d`` call.

    (Else ``F.conv2d`` should.)

    Eligible: CPU float32 tensors, a batch ``(B, C, H, W)``, ``groups=1``, stride 1,
    integer padding no wider than the kernel's half-width (zeros), at most
    :data:`MAX_CHANNEL_PAIRS` channel pairs and kernels of at most
    :data:`MAX_KERNEL_SIDE` pixels a side (dilation included).
    """
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)):
        return False
    if x.device.type != "cpu" or weight.device.type != "cpu":
        return False
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or x.dim() != 4:
        return False
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or groups != 1:
        return False
    if bias is not None and (bias.dtype != torch.float32 or bias.device.type != "cpu"):
        return False
    if x.is_sparse or weight.is_sparse or x.numel() == 0:
        return False
    pads, dilations, strides = as_pair(padding), as_pair(dilation), as_pair(stride)
    if pads is None or dilations is None or strides != (1, 1) or min(dilations) < 1:
        return False
    out_channels, in_channels, kh, kw = weight.shape
    if not within_limits(out_channels * in_channels, (kh, kw), dilations):
        return False
    khe, kwe = dilations[0] * (kh - 1) + 1, dilations[1] * (kw - 1) + 1
    ph, pw = pads
    if ph < 0 or pw < 0 or 2 * ph > khe - 1 or 2 * pw > kwe - 1:
        return False
    return x.shape[2] + 2 * ph >= khe and x.shape[3] + 2 * pw >= kwe


def _tiny_layer(conv: torch.nn.Conv2d) -> bool:
    """Whether a convolution layer is one :func:`is_tiny_conv` takes (judged from the layer)."""
    return (
        conv.groups == 1
        and tuple(conv.stride) == (1, 1)
        and within_limits(conv.in_channels * conv.out_channels, conv.kernel_size, conv.dilation)
    )


def only_tiny_convs(model: torch.nn.Module) -> bool:
    """Whether every convolution of ``model`` is one :func:`is_tiny_conv` would take.

    Judged from the layers alone (channels, kernel, dilation, stride, groups): a
    model made only of such convolutions and cheap pointwise layers (the ``study``
    and ``linear`` networks) spends its time in OpenCV, not in PyTorch's kernels.
    """
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return bool(convs) and all(_tiny_layer(conv) for conv in convs)


def has_tiny_convs(model: torch.nn.Module) -> bool:
    """Whether some convolution of ``model`` is one :func:`is_tiny_conv` may take."""
    return any(_tiny_layer(m) for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` PyTorch threads, then restore the previous number.

    Training a network of tiny convolutions on the CPU gives PyTorch one thread:
    its only work there is pointwise (ReLU, the loss, Adam) on small tensors,
    and idle OpenMP threads spinning between those calls take the cores that
    OpenCV's convolutions and the batch thread need. The convolutions' results
    do not depend on the number of threads; PyTorch's sums (the loss's mean) may
    differ from a many-thread run in float32 rounding.

    Args:
        count: Threads inside the block; ``None`` leaves the setting alone.
    """
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)

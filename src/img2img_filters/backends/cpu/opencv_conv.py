"""Convolutions with very few channels on the CPU, run by OpenCV: ``F.conv2d``'s results, faster.

PyTorch's CPU convolutions are built for many channels. With one to a few input
and output channels (the study's 48-parameter network: 3 -> 1 -> 1 -> 1) they
run far below memory speed, slower per image on a batch of 128 than on one
image. Here each pair of input and output channels is one ``cv2.filter2D`` over
all the photos of the batch stacked into one tall image, block by block (a block
of photos stays in the cache while every kernel runs over it). Zero padding comes from OpenCV's constant
border; the few rows where a photo would see its neighbour are computed again
from bands that hold only that photo, so every output pixel is exactly
``cv2.filter2D`` on its own photo. The weight gradient is nine dot products per
pair of channels, block by block, added up in block order. The results equal
``F.conv2d`` and its gradients up to float32 rounding (the order of the sums
differs), and do not depend on the number of threads.

:func:`tiny_conv_mode` routes every eligible ``conv2d`` call made inside it
(from any model: ``nn.Conv2d``, :class:`img2img_filters.models.layers.BorderConv2d`)
through :func:`tiny_conv2d`; any other call runs unchanged.
:class:`~img2img_filters.backends.cpu.engines.OpenCVEngine` trains inside it on the CPU; which
calls qualify is decided in :mod:`img2img_filters.backends.cpu.limits`.

>>> x, w = torch.rand(2, 3, 8, 8), torch.rand(1, 3, 3, 3)
>>> with tiny_conv_mode():
...     y = torch.nn.functional.conv2d(x, w, padding=1)
>>> torch.allclose(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-5)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from img2img_filters.backends.cpu.limits import (
    MAX_CHANNEL_PAIRS,
    MAX_KERNEL_SIDE,
    as_pair,
    is_tiny_conv,
)
from img2img_filters.backends.cpu.opencv_planes import (
    _BLOCK,
    _blocks,
    _buffer,
    _channel_major,
    _correlate_block,
    _kernels,
    _same_correlate,
)

__all__ = ["tiny_conv2d", "tiny_conv_mode"]

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


class _TinyConv2d(torch.autograd.Function):
    """``F.conv2d`` (stride 1, zero padding, groups 1) through OpenCV, with its gradients.

    "Same" convolutions (output as large as the input) run on the photos where
    they lie (:func:`_same_correlate`); the others, and the weight gradient, take
    the photos :data:`_BLOCK` at a time into a zero-padded scratch array
    (``(C, block, Hp, Wp)``, each channel one tall image) that stays in the cache
    while every kernel runs over it.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        padding: tuple[int, int],
        dilation: tuple[int, int],
    ) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        out_channels, _, kh, kw = weight.shape
        (ph, pw), (dh, dw) = padding, dilation
        khe, kwe = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        hp, wp = height + 2 * ph, width + 2 * pw
        ho, wo = hp - khe + 1, wp - kwe + 1
        kernels = _kernels(weight, dilation, flip=False)
        delta = bias.detach().tolist() if bias is not None else [0.0] * out_channels
        same = 2 * ph == khe - 1 and 2 * pw == kwe - 1 and height >= khe - 1
        ctx.save_for_backward(x, weight)
        ctx.geometry = (ph, pw, dh, dw, bias is not None, same)
        if same:
            out = torch.empty((out_channels, batch, height, width), dtype=torch.float32)
            _same_correlate(_channel_major(x), kernels, out.numpy(), delta)
            return out.transpose(0, 1)
        source = x.detach().numpy()
        out = torch.empty((batch, out_channels, ho, wo), dtype=torch.float32)
        result = out.numpy()

        def block(start: int, end: int) -> None:
            n = end - start
            padded = _buffer(f"x{ph},{pw}", (in_channels, _BLOCK, hp, wp))[:, :n]
            padded[:, :, ph : ph + height, pw : pw + width] = source[start:end].transpose(
                1, 0, 2, 3
            )

            def put(o: int, values: np.ndarray) -> None:
                result[start:end, o] = values.reshape(n, hp, wp)[:, :ho, :wo]

            _correlate_block(
                padded.reshape(in_channels, n * hp, wp),
                kernels,
                _buffer("dst", (_BLOCK * hp, wp))[: n * hp],
                _buffer("tmp", (_BLOCK * hp, wp))[: n * hp],
                (0, 0),
                delta,
                put,
            )

        for start, end in _blocks(batch):
            block(start, end)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        ph, pw, dh, dw, has_bias, same = ctx.geometry
        batch, in_channels, height, width = x.shape
        out_channels, _, kh, kw = weight.shape
        hp, wp = height + 2 * ph, width + 2 * pw
        khe, kwe = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        ho, wo = hp - khe + 1, wp - kwe + 1
        c0 = (wp - wo) // 2  # the output gradient's first column in its padded band
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = has_bias and ctx.needs_input_grad[2]
        grads = _channel_major(grad)  # (C_out, B, Ho, Wo)
        flipped = _kernels(weight, (dh, dw), flip=True)
        transposed = [[flipped[o][i] for o in range(out_channels)] for i in range(in_channels)]
        grad_x = None
        if need_x and same:
            planes = torch.empty((in_channels, batch, height, width), dtype=torch.float32)
            _same_correlate(grads, transposed, planes.numpy(), [0.0] * in_channels)
            grad_x = planes.transpose(0, 1)
        elif need_x:
            grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
        result = grad_x.numpy() if need_x and not same else None
        source = x.detach().numpy()
        offsets = [ky * dh * wp + kx * dw - c0 for ky in range(kh) for kx in range(kw)]

        def block(start: int, end: int) -> np.ndarray:
            """Make the block's input gradient; return its weight and bias gradient sums."""
            n = end - start
            g_block = _buffer(f"g{ho},{c0},{wo}", (out_channels, _BLOCK, hp, wp))[:, :n]
            g_block[:, :, :ho, c0 : c0 + wo] = grads[:, start:end]
            if result is not None:

                def put(i: int, values: np.ndarray) -> None:
                    rows = values.reshape(n, hp, wp)
                    result[start:end, i] = rows[:, ph : ph + height, pw : pw + width]

                _correlate_block(
                    g_block.reshape(out_channels, n * hp, wp),
                    transposed,
                    _buffer("dst", (_BLOCK * hp, wp))[: n * hp],
                    _buffer("tmp", (_BLOCK * hp, wp))[: n * hp],
                    (kwe - 1 - c0, khe - 1),
                    [0.0] * in_channels,
                    put,
                )
            sums = np.zeros((out_channels, in_channels * kh * kw + 1), dtype=np.float64)
            flat_g = g_block.reshape(out_channels, -1)
            if need_b:
                sums[:, -1] = flat_g.sum(axis=1)
            if not need_w:
                return sums
            x_block = _buffer(f"x{ph},{pw}", (in_channels, _BLOCK, hp, wp))[:, :n]
            x_block[:, :, ph : ph + height, pw : pw + width] = source[start:end].transpose(
                1, 0, 2, 3
            )
            flat_x = x_block.reshape(in_channels, -1)
            lo, hi = c0, flat_g.shape[1] - offsets[-1]
            for o in range(out_channels):
                g_row = flat_g[o, lo:hi]
                for i in range(in_channels):
                    x_row = flat_x[i]
                    for k, offset in enumerate(offsets):
                        sums[o, i * kh * kw + k] = np.dot(g_row, x_row[lo + offset : hi + offset])
            return sums

        # Weight and bias gradients add up block by block, in block order: the same
        # sums with any number of threads.
        total = np.zeros((out_channels, in_channels * kh * kw + 1), dtype=np.float64)
        if need_w or need_b or result is not None:
            for start, end in _blocks(batch):
                total += block(start, end)
        totals = torch.from_numpy(total.astype(np.float32))
        grad_w = totals[:, :-1].reshape(weight.shape) if need_w else None
        grad_b = totals[:, -1].clone() if need_b else None
        return grad_x, grad_w, grad_b, None, None


def tiny_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding, dilation=dilation)`` through OpenCV.

    Differentiable in ``x``, ``weight`` and ``bias``. Equal to ``F.conv2d`` up to
    float32 rounding.

    Args:
        x: ``(B, C_in, H, W)`` float32 on the CPU.
        weight: ``(C_out, C_in, kh, kw)`` float32.
        bias: ``(C_out,)`` or ``None``.
        padding: Zero padding, at most the kernel's half-width on each axis.
        dilation: Dilation.

    Returns:
        ``(B, C_out, H + 2 ph - dh (kh - 1), W + 2 pw - dw (kw - 1))`` float32.

    Raises:
        ValueError: If the call is not one :func:`is_tiny_conv` accepts.
    """
    if not is_tiny_conv(x, weight, bias, 1, padding, dilation, 1):
        raise ValueError(
            "tiny_conv2d: expected CPU float32 x (B, C, H, W) and weight (O, C, kh, kw) with "
            f"O * C <= {MAX_CHANNEL_PAIRS}, kernel sides <= {MAX_KERNEL_SIDE} and padding at "
            f"most half the kernel; got x {tuple(x.shape)} {x.dtype}, weight "
            f"{tuple(weight.shape)} {weight.dtype}, padding {padding!r}, dilation {dilation!r}"
        )
    return _TinyConv2d.apply(x, weight, bias, as_pair(padding), as_pair(dilation))


class _TinyConvMode(TorchFunctionMode):
    """Sends eligible ``conv2d`` calls to :func:`tiny_conv2d`; everything else runs as is."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.conv2d:
            call = dict(zip(_CONV_ARGS, args, strict=False))
            call.update(kwargs)
            if (
                len(args) <= len(_CONV_ARGS)
                and set(call) <= set(_CONV_ARGS)
                and is_tiny_conv(
                    call.get("input"),
                    call.get("weight"),
                    call.get("bias"),
                    call.get("stride", 1),
                    call.get("padding", 0),
                    call.get("dilation", 1),
                    call.get("groups", 1),
                )
            ):
                return _TinyConv2d.apply(
                    call["input"],
                    call["weight"],
                    call.get("bias"),
                    as_pair(call.get("padding", 0)),
                    as_pair(call.get("dilation", 1)),
                )
        return func(*args, **kwargs)


@contextmanager
def tiny_conv_mode(enabled: bool = True) -> Iterator[None]:
    """Run eligible ``conv2d`` calls inside the block through :func:`tiny_conv2d`.

    Args:
        enabled: ``False`` makes the block a no-op (convenient for a flag).
    """
    if not enabled:
        yield
        return
    with _TinyConvMode():
        yield

"""Folding a stack of linear convolutions into one kernel, and comparing it with a filter's."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from img2img_filters.filters import Filter, create_filter
from img2img_filters.filters.chain import compose_kernels

__all__ = ["fold_linear", "kernel_error"]


def _linear_layers(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Conv2d]]:
    """The convolutions of ``module`` in order; raise on the first layer that is not linear."""
    for name, child in module.named_children():
        qualified = f"{prefix}{name}"
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            yield from _linear_layers(child, f"{qualified}.")
        elif isinstance(child, nn.Conv2d):
            yield qualified, child
        elif isinstance(child, nn.Identity):
            continue
        else:
            raise ValueError(
                f"fold_linear: layer {qualified!r} ({type(child).__name__}) is not linear; only "
                "Conv2d, BorderConv2d, Identity, Sequential and ModuleList can be folded"
            )


def _full_weight(name: str, conv: nn.Conv2d) -> torch.Tensor:
    """A convolution's weight as a dense, undilated kernel ``(O, I, kh, kw)`` float64."""
    if tuple(conv.stride) != (1, 1):
        raise ValueError(f"fold_linear: layer {name!r} has stride {tuple(conv.stride)}; expected 1")
    weight = conv.weight.detach().to(torch.float64)
    out_channels, per_group, kh, kw = weight.shape
    groups = conv.groups
    if groups > 1:
        dense = weight.new_zeros(out_channels, per_group * groups, kh, kw)
        per_out = out_channels // groups
        for g in range(groups):
            rows = slice(g * per_out, (g + 1) * per_out)
            dense[rows, g * per_group : (g + 1) * per_group] = weight[rows]
        weight = dense
    dh, dw = conv.dilation
    if (dh, dw) != (1, 1):
        dilated = weight.new_zeros(*weight.shape[:2], (kh - 1) * dh + 1, (kw - 1) * dw + 1)
        dilated[..., ::dh, ::dw] = weight
        weight = dilated
    return weight


def fold_linear(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a stack of linear convolutions into the single kernel and bias it computes.

    The model's children are walked in order (recursing into ``nn.Sequential``
    and ``nn.ModuleList``), which is the order a plain stack applies them.
    ``nn.Conv2d`` and ``BorderConv2d`` of any dilation and groups (stride 1) and
    ``nn.Identity`` are accepted; biases propagate through later layers
    (``b2 + sum(W2) @ b1``). On pixels far enough from the border for every
    layer's padding to be irrelevant, ``conv2d(x, weight, bias)`` (correlation,
    kernel centred) equals the model's output.

    Args:
        model: A linear model (e.g. a ``"linear"`` model of any depth), or a single
            convolution.

    Returns:
        ``weight`` ``(C_out, C_in, kh, kw)`` and ``bias`` ``(C_out,)``, float64, on the CPU.

    Raises:
        ValueError: Naming the first layer that is not linear (e.g. ``'relu1' (ReLU)``),
            a layer with stride, mismatched channels, or a model without convolutions.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    layers = [("", model)] if isinstance(model, nn.Conv2d) else list(_linear_layers(model))
    if not layers:
        raise ValueError(f"fold_linear: {type(model).__name__} has no convolution to fold")
    kernel: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    for name, conv in layers:
        weight = _full_weight(name or type(conv).__name__, conv).cpu()
        layer_bias = (
            conv.bias.detach().to(torch.float64).cpu()
            if conv.bias is not None
            else torch.zeros(weight.shape[0], dtype=torch.float64)
        )
        if kernel is None:
            kernel, bias = weight, layer_bias
            continue
        if weight.shape[1] != kernel.shape[0]:
            raise ValueError(
                f"fold_linear: layer {name!r} expects {weight.shape[1]} input channels; the "
                f"layers before it give {kernel.shape[0]}"
            )
        bias = layer_bias + weight.sum(dim=(2, 3)) @ bias
        kernel = compose_kernels(kernel, weight)
    return kernel, bias


def _centre_pad(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    kh, kw = kernel.shape[-2:]
    top, left = (height - kh) // 2, (width - kw) // 2
    return F.pad(kernel, (left, width - kw - left, top, height - kh - top))


def kernel_error(model: nn.Module, filter: str | Filter) -> dict[str, Any]:
    """Compare a linear model's folded kernel with a linear filter's exact kernel.

    The smaller kernel is zero-padded, centred, to the size of the larger one.

    Args:
        model: A linear model (see :func:`fold_linear`), ``3 -> C`` channels.
        filter: A linear filter or its spec (e.g. ``"study-sobel"``).

    Returns:
        ``max_abs`` (largest absolute difference of kernel entries), ``relative``
        (Frobenius norm of the difference over that of the true kernel), ``bias_max_abs``
        (largest absolute bias; linear filters have none), ``model_kernel_size``,
        ``filter_kernel_size`` and ``compared_size``, each ``(kh, kw)``.

    Raises:
        ValueError: If the filter is not linear, the model is not linear, the channel
            counts differ, or the sizes cannot be centred on each other.
    """
    filt = create_filter(filter)
    if not filt.linear:
        raise ValueError(f"kernel_error: filter {filt.spec!r} is not linear: it has no kernel")
    weight, bias = fold_linear(model)
    true = filt.kernel.to(torch.float64).cpu()
    if weight.shape[:2] != true.shape[:2]:
        raise ValueError(
            f"kernel_error: the model maps {weight.shape[1]} -> {weight.shape[0]} channels but "
            f"filter {filt.spec!r} maps {true.shape[1]} -> {true.shape[0]}"
        )
    (mh, mw), (fh, fw) = weight.shape[-2:], true.shape[-2:]
    if (mh - fh) % 2 or (mw - fw) % 2:
        raise ValueError(
            f"kernel_error: kernels of sizes {(mh, mw)} and {(fh, fw)} cannot be centred on "
            "each other (their sides differ by an odd number)"
        )
    height, width = max(mh, fh), max(mw, fw)
    difference = _centre_pad(weight, height, width) - _centre_pad(true, height, width)
    norm = float(torch.linalg.vector_norm(true))
    frobenius = float(torch.linalg.vector_norm(difference))
    return {
        "max_abs": float(difference.abs().max()),
        "relative": frobenius / norm if norm > 0 else (0.0 if frobenius == 0 else math.inf),
        "bias_max_abs": float(bias.abs().max()),
        "model_kernel_size": (mh, mw),
        "filter_kernel_size": (fh, fw),
        "compared_size": (height, width),
    }

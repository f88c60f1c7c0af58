"""Layers shared by the architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from img2img_filters.border import check_border, pad2d

__all__ = ["LEVELS_8BIT", "BorderConv2d", "straight_through"]

#: The highest level of an 8-bit value: the models that round as 8-bit tools do work in levels
#: ``0 .. LEVELS_8BIT``.
LEVELS_8BIT = 255


def straight_through(exact: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` in the forward pass, the gradient of ``exact`` in the backward pass.

    Rounding has no useful gradient; a model that rounds as a tool does learns its other
    parameters as if the rounding were not there.

    Args:
        exact: The values before rounding (any shape).
        rounded: The rounded values (the same shape).
    """
    return exact + (rounded - exact).detach()


class BorderConv2d(nn.Conv2d):
    """A stride-1 ``nn.Conv2d`` that keeps the image size, padding with an OpenCV border mode.

    Its parameters are named ``weight`` and ``bias`` like ``nn.Conv2d``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel side.
        border: A border mode of :mod:`img2img_filters.border` (``"constant"``: zeros).
        dilation: Dilation.
        bias: Whether to learn a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        border: str = "reflect101",
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer; got {kernel_size!r}")
        self.border = check_border(border)
        self.halo = dilation * (kernel_size // 2)
        padding = self.halo if self.border == "constant" else 0
        super().__init__(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``."""
        height, width = x.shape[-2:]
        if self.halo >= min(height, width) and not torch.jit.is_tracing():
            return self._forward_folded(x)
        if self.border != "constant" and self.halo:
            x = pad2d(x, self.halo, self.halo, self.halo, self.halo, self.border)
        return F.conv2d(x, self.weight, self.bias, padding=self.padding, dilation=self.dilation)

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """The same output for a halo as wide as the image, without padding by the halo.

        Every border mode maps a tap's offset onto the image periodically (reflections,
        wrap) or saturates it (replicate, zeros), so a dilation ``d`` reads the same pixels
        as a dilation reduced to less than two image sides (:func:`_axis_dilation`); a
        reduced dilation of 0 puts every tap of an axis on the centre, and that axis of
        the kernel is summed. A 48x40 image is then padded by at most about 96 pixels
        whatever the dilation (2**18 in a depth-20 ``can``), instead of by the dilation.
        """
        weight = self.weight
        dilations, pads = [], []
        for axis, size in ((2, x.shape[-2]), (3, x.shape[-1])):
            dilation, flip = _axis_dilation(self.dilation[axis - 2], size, self.border)
            if flip:
                weight = weight.flip(axis)
            if dilation == 0:
                weight = weight.sum(dim=axis, keepdim=True)
                dilation = 1
            dilations.append(dilation)
            pads.append(dilation * (weight.shape[axis] // 2))
        pad_h, pad_w = pads
        x = pad2d(x, pad_w, pad_w, pad_h, pad_h, self.border)
        return F.conv2d(x, weight, self.bias, dilation=tuple(dilations))

    def receptive_field(self) -> int:
        """Side of the receptive field: ``dilation * (kernel_size - 1) + 1``."""
        return 2 * self.halo + 1


def _axis_dilation(dilation: int, size: int, border: str) -> tuple[int, bool]:
    """A dilation that reads the same pixels as ``dilation`` along an axis of ``size`` pixels.

    Reflections and wrap repeat with a period ``P`` (``2 (size - 1)``, ``2 size``,
    ``size``), so the dilation counts modulo ``P``, and a dilation ``P - e`` reads with
    tap ``j`` what ``e`` reads with tap ``-j``: the kernel flipped. ``replicate`` reads
    the edge pixel from any offset of ``size - 1`` or more, and zeros lie at any offset of
    ``size`` or more.

    Returns:
        ``(dilation, flip)``: the reduced dilation (0: every tap reads the centre pixel)
        and whether the kernel must be flipped along the axis.
    """
    if border == "constant":
        return min(dilation, size), False
    if size == 1:
        return 0, False
    if border == "replicate":
        return min(dilation, size - 1), False
    period = {"reflect101": 2 * (size - 1), "reflect": 2 * size, "wrap": size}[border]
    reduced = dilation % period
    if period - reduced < reduced:
        return period - reduced, True
    return reduced, False

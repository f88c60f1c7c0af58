"""Box blurs repeated, each pass rounded to 8 bits: the fast Gaussian blur as 8-bit tools compute it.

A Gaussian blur is often computed as a few passes of a box filter along rows,
then along columns: the passes' variances add up to the Gaussian's. A box of a
fractional radius ``R = r + a`` averages the ``2r + 1`` pixels around the centre
with one weight and gives the two pixels just beyond them the fraction ``a`` of
it, so the blur's width varies smoothly with ``R``. Tools that blur 8-bit
photos (Pillow's ``GaussianBlur`` and ``BoxBlur``) hold the weights as integers
with 24 fractional bits and round every pass back to 8 bits:

    inner = floor(2**24 / (2R + 1)),   outer = floor((2**24 - (2r + 1) * inner) / 2)
    pass(x)[i] = floor((inner * sum(x[i - r .. i + r]) + outer * (x[i - r - 1] + x[i + r + 1])
                        + 2**23) / 2**24)

A linear kernel cannot reproduce the rounding between the passes (a least-squares
kernel leaves about a quarter of such a blur's values one level off); this model
computes it exactly, in float64, where every sum of the integer arithmetic is
exact (so it exports to TorchScript, not ONNX: ONNX Runtime has no float64
convolution).

Its radius and number of passes are searched, not trained
(:func:`img2img_filters.auto.box_cascade.box_cascade_candidate`); its one learnt
part is the channel map in front of the passes (``(out, in)``, gradients pass the
rounding straight through), which starts as the identity, so that each channel is
blurred on its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from img2img_filters.border import check_border, pad2d
from img2img_filters.limits import MAX_KERNEL_SIZE
from img2img_filters.models.layers import LEVELS_8BIT, straight_through
from img2img_filters.models.options import check_int, check_number
from img2img_filters.models.registry import register_arch

__all__ = ["FRACTION_BITS", "MAX_PASSES", "BoxCascadeNet", "box_weights"]

#: The fractional bits of the passes' integer weights.
FRACTION_BITS = 24
#: The most passes along each axis.
MAX_PASSES = 16


def box_weights(radius: float) -> tuple[int, int, int]:
    """The integer weights of one pass of a box of fractional radius ``radius``.

    Args:
        radius: ``R >= 0``.

    Returns:
        ``(r, inner, outer)``: the whole radius ``floor(R)``, the weight of the ``2r + 1``
        pixels around the centre and that of the two just beyond them, with
        :data:`FRACTION_BITS` fractional bits.
    """
    whole = math.floor(radius)
    one = 1 << FRACTION_BITS
    inner = math.floor(one / (2.0 * radius + 1.0))
    outer = (one - (2 * whole + 1) * inner) // 2
    return whole, inner, outer


@register_arch(
    "box_cascade",
    "box blurs repeated along rows then columns, each pass rounded to 8 bits (the fast "
    "Gaussian blur of 8-bit tools); exact where a kernel is not",
)
class BoxCascadeNet(nn.Module):
    """A channel map, then ``passes`` rounded box blurs along rows and as many along columns.

    Input ``(B, in, H, W)`` in ``[0, 1]``; output ``(B, out, H, W)`` on the 8-bit grid
    (multiples of ``1 / 255``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        radius: The box's fractional radius ``R`` (``> 0``; see the module's docstring).
        passes: Box passes along each axis.
        border: How each pass extends the image (OpenCV's names).

    Raises:
        ValueError: For a bad option, or a support wider than
            :data:`~img2img_filters.limits.MAX_KERNEL_SIZE`.
    """

    is_linear = False
    #: The passes' sums need float64 (exact to 2**53), which ONNX Runtime cannot convolve;
    #: the export refuses ONNX and names TorchScript.
    exports_to_onnx = False
    #: Its outputs are rounded: a change smaller than half a level may not show.
    quantised = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        radius: float = 1.5,
        passes: int = 3,
        border: str = "replicate",
    ) -> None:
        super().__init__()
        self.radius = check_number("radius", radius, positive=True)
        self.passes = check_int("passes", passes, 1, maximum=MAX_PASSES)
        self.border = check_border(border)
        if self.radius > MAX_KERNEL_SIZE:
            raise ValueError(f"radius must be at most {MAX_KERNEL_SIZE}; got {radius!r}")
        self.whole, inner, outer = box_weights(self.radius)
        side = 2 * self.passes * (self.whole + 1) + 1
        if side > MAX_KERNEL_SIZE:
            raise ValueError(
                f"radius {radius!r} and passes {passes!r} make a support {side} pixels wide; "
                f"the limit is {MAX_KERNEL_SIZE} (img2img_filters.limits.MAX_KERNEL_SIZE)"
            )
        self.reach = self.whole + (1 if outer else 0)  # how far one pass reads
        weights = [outer] * (self.reach - self.whole) + [inner] * (2 * self.whole + 1)
        weights += [outer] * (self.reach - self.whole)
        row = torch.tensor(weights, dtype=torch.float64).expand(out_channels, 1, 1, -1)
        self.register_buffer("row_kernel", row.contiguous(), persistent=False)
        self.register_buffer("column_kernel", row.transpose(2, 3).contiguous(), persistent=False)
        self.mix = nn.Parameter(torch.zeros(out_channels, in_channels))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Output channel ``c`` starts as input channel ``c % in_channels``."""
        self.mix.zero_()
        for channel in range(self.mix.shape[0]):
            self.mix[channel, channel % self.mix.shape[1]] = 1.0

    def receptive_field(self) -> int:
        """``2 * passes * reach + 1``, ``reach`` the pixels one pass reads on each side."""
        return 2 * self.passes * self.reach + 1

    def _pass(self, levels: torch.Tensor, vertical: bool) -> torch.Tensor:
        """One rounded box pass along columns (``vertical``) or rows."""
        reach = self.reach
        if vertical:
            padded = pad2d(levels, 0, 0, reach, reach, self.border)
            kernel = self.column_kernel
        else:
            padded = pad2d(levels, reach, reach, 0, 0, self.border)
            kernel = self.row_kernel
        scale = float(1 << FRACTION_BITS)
        total = F.conv2d(padded, kernel, groups=kernel.shape[0])
        rounded = torch.floor((total + scale / 2) / scale)
        return straight_through(total / scale, rounded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``: map the channels, round, blur."""
        mixed = torch.einsum("oi,bihw->bohw", self.mix.double(), x.double()) * LEVELS_8BIT
        levels = straight_through(mixed, torch.round(mixed))
        for _ in range(self.passes):
            levels = self._pass(levels, vertical=False)
        for _ in range(self.passes):
            levels = self._pass(levels, vertical=True)
        return (levels / LEVELS_8BIT).to(x.dtype)

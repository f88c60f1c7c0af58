"""Each pixel blended with its own gray, rounded as 8-bit tools round: saturation and brightness.

A saturation change moves each pixel's colour away from (or towards) its gray:
``out = g + factor * (x - g)``, ``g`` a weighted sum of the pixel's channels. It
is linear, so the exact least-squares colour matrix matches it to within the
rounding; but tools that work on 8-bit photos round twice: the gray is computed
in integers and rounded to a level first (Pillow's ``ImageEnhance.Color`` blends
with the photo converted to ``L``), and the blend, computed in float32, is cut to
a level after (``floor``). A colour matrix rounded once leaves about one value in
twelve a level off; this model rounds where the tool does:

    levels = round(255 x)                            (the 8-bit input)
    g      = round(gray . levels)                    (``gray_rounding``: nearest, floor, none)
    out    = floor(clip(g + factor * (levels - g), 0, 255)) / 255   (``rounding``: floor, nearest)

in float32, in this order, so that the products round as the tool's do. With
gray weights of zero it is a brightness change (``out = floor(factor * x)``).
Output channel ``c`` blends input channel ``c % in_channels``.

The gray weights and the factor are parameters: gradients pass the rounding
straight through. ``--arch auto`` fits them in closed form and snaps them to the
short fractions tools use (:func:`img2img_filters.solve.fit_gray_blend`).
"""

from __future__ import annotations

import torch
from torch import nn

from img2img_filters.models.layers import LEVELS_8BIT, straight_through
from img2img_filters.models.options import check_str
from img2img_filters.models.registry import register_arch

__all__ = ["GRAY_ROUNDINGS", "ROUNDINGS", "GrayBlendNet"]

#: How the output is rounded to a level.
ROUNDINGS = ("floor", "nearest")
#: How the gray is rounded to a level before the blend (``none``: not at all).
GRAY_ROUNDINGS = ("nearest", "floor", "none")


def _rounded(values: torch.Tensor, rounding: str) -> torch.Tensor:
    """``values`` rounded to whole levels (``floor``, or ``nearest`` with halves up)."""
    if rounding == "floor":
        return straight_through(values, torch.floor(values))
    if rounding == "nearest":
        return straight_through(values, torch.floor(values + 0.5))
    return values


@register_arch(
    "gray_blend",
    "each pixel blended with its gray rounded to 8 bits, the blend cut to a level "
    "(saturation, brightness as 8-bit tools compute them); exact where a colour matrix is not",
)
class GrayBlendNet(nn.Module):
    """``out = round(clip(g + factor * (x - g)))``, ``g`` the pixel's rounded gray.

    Input ``(B, in, H, W)`` in ``[0, 1]``; output ``(B, out, H, W)`` on the 8-bit grid.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (channel ``c`` blends input channel ``c % in``).
        rounding: How the blend is rounded to a level: ``"floor"`` or ``"nearest"``.
        gray_rounding: How the gray is rounded first: ``"nearest"``, ``"floor"`` or ``"none"``.

    Raises:
        ValueError: For a bad option.
    """

    is_linear = False
    #: Its outputs are rounded: a change smaller than half a level may not show.
    quantised = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rounding: str = "floor",
        gray_rounding: str = "nearest",
    ) -> None:
        super().__init__()
        self.rounding = check_str("rounding", rounding, ROUNDINGS)
        self.gray_rounding = check_str("gray_rounding", gray_rounding, GRAY_ROUNDINGS)
        self.gray = nn.Parameter(torch.full((in_channels,), 1.0 / in_channels))
        self.factor = nn.Parameter(torch.ones(out_channels))
        sources = torch.arange(out_channels) % in_channels
        self.register_buffer("sources", sources, persistent=False)

    def receptive_field(self) -> int:
        """1: each output reads one pixel."""
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``, multiples of ``1 / 255`` in ``[0, 1]``."""
        scaled = x.float() * LEVELS_8BIT
        levels = straight_through(scaled, torch.floor(scaled + 0.5))
        weighted = torch.einsum("i,bihw->bhw", self.gray.float(), levels).unsqueeze(1)
        gray = _rounded(weighted, self.gray_rounding)
        source = levels.index_select(1, self.sources)
        blended = gray + self.factor.float().view(1, -1, 1, 1) * (source - gray)
        out = _rounded(blended.clamp(0.0, LEVELS_8BIT), self.rounding)
        return (out / LEVELS_8BIT).to(x.dtype)

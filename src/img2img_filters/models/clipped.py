"""A linear filter whose output is clipped to a range: sharpening, edges and colour boosts as tools save them.

Many operators of image tools are a convolution (or a colour matrix) whose
result is clipped to the range of the file it is saved in: ImageMagick's
``-sharpen`` and ``-edge``, scikit-image's ``unsharp_mask``, Pillow's kernel
filters (``CONTOUR``, ``EMBOSS``) and ``ImageEnhance.Color``. The clipping makes
them non-linear, so a probe calls them local (or pointwise), yet inside the range
they are exactly linear: :func:`img2img_filters.solve.fit_linear` with
``clip=True`` fits the kernel on the pixels the clipping left alone, and this
model applies it and clips the same way.

Some tools also leave the outermost pixels of the photo as they were (Pillow's
kernel filters leave a ring as wide as the kernel's radius): ``keep_edge``
copies the input there.

A contrast or brightness change about the photo's mean (Pillow's
``ImageEnhance.Contrast``) is linear too, but global: each output moves with the
mean of the whole photo. ``image_mean`` adds a learnt linear map of the photo's
mean colour to every output; such a model reads the whole photo
(``whole_image``): inference sums its :meth:`ClippedLinearNet.photo_statistics`
strip by strip, then filters it tile by tile with them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from img2img_filters.models.options import check_bool, check_int, check_number
from img2img_filters.models.registry import register_arch
from img2img_filters.models.study import LinearNet

__all__ = ["ClippedLinearNet"]


@register_arch(
    "clipped_linear",
    "a linear filter clipped to the output range (sharpen, edges, colour boost); exact for "
    "convolutions saved to 8 bits",
)
class ClippedLinearNet(LinearNet):
    """:class:`~img2img_filters.models.LinearNet`, its output clipped to ``[low, high]``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd side of every kernel.
        depth: Number of convolutions.
        width: Channels between convolutions (default: ``out_channels``).
        border: Padding of every convolution (OpenCV's names; match the target's).
        bias: Whether the convolutions learn a bias.
        low: The smallest output value.
        high: The largest output value (``> low``).
        keep_edge: The output is the input in this many rows and columns at each side of
            the image (needs ``in_channels == out_channels``; at most the kernel's radius,
            so that tiled inference stays exact).
        image_mean: Add ``mean_weight @ mean colour of the photo`` to every output pixel
            (``mean_weight`` ``(out, in)``, learnt; zeros at first).

    Raises:
        ValueError: For a bad option.
    """

    is_linear = False
    #: Whether an output depends on the whole photo (``image_mean``): see ``photo_statistics``.
    whole_image = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        depth: int = 1,
        width: int | None = None,
        border: str = "reflect101",
        bias: bool = True,
        low: float = 0.0,
        high: float = 1.0,
        keep_edge: int = 0,
        image_mean: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, depth, width, border, bias)
        self.low, self.high = check_number("low", low), check_number("high", high)
        if self.high <= self.low:
            raise ValueError(f"high must be greater than low; got low={low!r}, high={high!r}")
        self.keep_edge = check_int("keep_edge", keep_edge, 0)
        radius = self.receptive_field() // 2
        if self.keep_edge > radius:
            raise ValueError(
                f"keep_edge must be at most the kernel's radius ({radius}); got {keep_edge!r}"
            )
        if self.keep_edge and in_channels != out_channels:
            raise ValueError(
                "keep_edge needs as many output channels as input channels; got "
                f"{in_channels} in and {out_channels} out"
            )
        self.image_mean = check_bool("image_mean", image_mean)
        self.whole_image = self.image_mean
        if self.image_mean:
            self.mean_weight = nn.Parameter(torch.zeros(out_channels, in_channels))

    def photo_statistics(self, x: torch.Tensor) -> torch.Tensor:
        """What ``image_mean`` reads of the whole photo, as sums over its pixels.

        Args:
            x: Photos or parts of them ``(B, in, H, W)``.

        Returns:
            ``(B, in + 1)`` float64: the sum of each channel, then the number of pixels;
            the sum over the parts of a photo is the photo's, for :meth:`forward` on its
            tiles.
        """
        sums = x.double().sum(dim=(2, 3))
        pixels = torch.ones_like(x[:, :1]).double().sum(dim=(2, 3))  # not a traced constant
        return torch.cat([sums, pixels], dim=1)

    def forward(self, x: torch.Tensor, statistics: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``, in ``[low, high]``.

        Args:
            x: Photos, or tiles of them with ``statistics``.
            statistics: With ``image_mean``: the whole photos' :meth:`photo_statistics`
                ``(B, in + 1)``; ``None``: the mean colour of ``x``.
        """
        out = self.layers(x)
        if self.image_mean:
            if statistics is None:
                mean = x.mean(dim=(2, 3))
            else:
                mean = (statistics[:, :-1] / statistics[:, -1:]).to(x.dtype)
            out = out + (mean @ self.mean_weight.T)[:, :, None, None]
        out = out.clamp(self.low, self.high)
        e = self.keep_edge
        if not e:
            return out
        kept = x.clamp(self.low, self.high)
        if x.shape[-2] <= 2 * e or x.shape[-1] <= 2 * e:  # all ring
            return kept
        inside = F.pad(torch.ones_like(out[:, :1, e:-e, e:-e]), (e, e, e, e))  # 0 on the ring
        return out * inside + kept * (1.0 - inside)

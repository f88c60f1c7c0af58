"""A local network, then each photo's levels stretched between two of its quantiles: auto-levels.

Many tools end an operator by stretching the photo's levels to the full range:
the darkest share of pixels becomes black, the brightest white, the rest is
mapped linearly between (ImageMagick's ``-normalize`` and ``-contrast-stretch``,
Pillow's ``ImageOps.autocontrast``, scikit-image's ``rescale_intensity`` of
percentiles). ImageMagick's ``-charcoal`` is such an operator: an edge filter,
a blur, then the levels stretched and the result made gray and negated. An
output then depends on the whole photo through two numbers, the quantiles, and
on a small neighbourhood through the rest:

    I   = local(x)                       (a neighbourhood network, one channel)
    lo, hi = quantiles of I over the photo at ``levels`` (two shares, e.g. 0.15% and 99.95%)
    out = head(clip((I - lo) / (hi - lo), 0, 1))    (a per-pixel linear map to the outputs)

The quantile levels are not options but fitted values (the buffer ``levels``,
``(2,)``, kept in the checkpoint): a run (``img2img train``, ``train_run``) first
trains the local network with each photo's stretch solved in closed form, then
picks the levels that explain the photos best
(:func:`img2img_filters.auto.stretch.pretrain_stretch`).
They start at ``(0, 1)``: the photo's minimum and maximum. The model reads the
whole photo (``whole_image``: never tiled); ONNX cannot express the quantiles,
TorchScript can.
"""

from __future__ import annotations

import torch
from torch import nn

from img2img_filters.models.neighbourhood import NeighbourhoodNet
from img2img_filters.models.registry import register_arch

__all__ = ["LevelStretchNet", "photo_quantiles"]

#: The least spread between the two quantiles a stretch divides by.
_SPREAD_MIN = 1e-6


def photo_quantiles(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Each photo's quantiles at ``levels``, interpolated linearly between ranks.

    Args:
        values: ``(B, N)``: each photo's values.
        levels: ``(L,)`` shares in ``[0, 1]``.

    Returns:
        ``(B, L)``; differentiable in ``values``.
    """
    ordered = values.sort(dim=1).values
    position = levels.to(values.dtype) * (values.shape[1] - 1)
    below = position.floor().long().clamp(0, values.shape[1] - 1)
    above = (below + 1).clamp(max=values.shape[1] - 1)
    fraction = position - below.to(values.dtype)
    return ordered[:, below] * (1.0 - fraction) + ordered[:, above] * fraction


@register_arch(
    "stretch",
    "a local network, then each photo's levels stretched between two quantiles and a per-pixel "
    "head (auto-levels, charcoal); reads the whole photo",
)
class LevelStretchNet(nn.Module):
    """``head(clip((I - lo) / (hi - lo)))``, ``I`` a neighbourhood network's one channel.

    Input ``(B, in, H, W)``; output ``(B, out, H, W)``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        features: The local network's linear features (see
            :class:`~img2img_filters.models.NeighbourhoodNet`).
        feature_size: Their odd side.
        window: The odd side of each feature's window.
        hidden: The local network's MLP width.
        layers: Its hidden layers.
        border: How it extends the photo.

    Raises:
        ValueError: For a bad option.
    """

    is_linear = False
    whole_image = True
    exports_to_onnx = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: int = 8,
        feature_size: int = 3,
        window: int = 3,
        hidden: int = 32,
        layers: int = 2,
        border: str = "replicate",
    ) -> None:
        super().__init__()
        self.local = NeighbourhoodNet(
            in_channels, 1, features=features, feature_size=feature_size, window=window,
            values=True, sort=False, absolute=True, hidden=hidden, layers=layers, border=border,
        )  # fmt: skip
        self.local.linear.bias = None  # the stretch removes any constant added to I
        self.register_buffer("levels", torch.tensor([0.0, 1.0]))
        self.head = nn.Conv2d(1, out_channels, 1)
        with torch.no_grad():
            self.head.weight.fill_(1.0)
            self.head.bias.zero_()

    def receptive_field(self) -> int:
        """The local network's: every output also reads the whole photo through the quantiles."""
        return self.local.receptive_field()

    def intensity(self, x: torch.Tensor) -> torch.Tensor:
        """The local network's channel ``I``, ``(B, H, W)``, before the stretch."""
        return self.local(x)[:, 0]

    def stretched(self, intensity: torch.Tensor) -> torch.Tensor:
        """``clip((I - lo) / (hi - lo), 0, 1)``, ``(B, 1, H, W)``, each photo by its own quantiles."""
        bounds = photo_quantiles(intensity.flatten(1), self.levels)
        low, high = bounds[:, 0, None, None], bounds[:, 1, None, None]
        spread = (high - low).clamp(min=_SPREAD_MIN)
        return ((intensity - low) / spread).clamp(0.0, 1.0).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``."""
        return self.head(self.stretched(self.intensity(x)))

"""Adaptive contrast operators learnt on top of a tile-histogram equalisation.

Local contrast enhancement (scikit-image's ``equalize_adapthist``, CLAHE in
editing tools) equalises a gray channel of the photo tile by tile
(:func:`~img2img_filters.models.tile_histogram.equalise_tiles`) and then puts
the colour back. :class:`AdaptiveEqualisationNet` computes that channel (the
photo's ``max`` of R, G, B: HSV's value; its ``luma``; its ``mean``; or each
``channel`` on its own), equalises it with the tile grid and clip limit given,
and hands a per-pixel head the photo, the channel, its equalised version and
the photo rescaled by their ratio (the colour kept, the value replaced, as a
conversion to HSV and back does). The head is linear plus an MLP that starts at
zero; started as the ratio, the model with ``value="max"`` and the defaults is
scikit-image's CLAHE of an RGB photo.

The equalisation reads the whole photo (``whole_image``: never tiled). Its
histograms and clipping loop are TorchScript, so a TorchScript export runs at
every size; ONNX cannot express the loop (``exports_to_onnx`` is false and the
export refuses, saying so).
"""

from __future__ import annotations

import torch
from torch import nn

from img2img_filters.models.options import check_int, check_number, check_str
from img2img_filters.models.registry import register_arch
from img2img_filters.models.structured import ACTIVATIONS, LinearHead, pixel_mlp
from img2img_filters.models.tile_histogram import GRAY_LEVELS, equalise_tiles

__all__ = ["VALUES", "AdaptiveEqualisationNet"]

#: The channels that can be equalised.
VALUES = ("max", "luma", "mean", "channels")
#: Rec. 601 luma weights of R, G, B.
_LUMA = (0.299, 0.587, 0.114)


@register_arch(
    "equalisation",
    "a tile-by-tile histogram equalisation (CLAHE) of a gray channel and a per-pixel head; "
    "for adaptive contrast operators (whole photo)",
)
class AdaptiveEqualisationNet(LinearHead, nn.Module):
    """A channel of the photo equalised tile by tile, then a per-pixel head.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        value: The channel equalised (one of :data:`VALUES`): ``"max"``, ``"luma"``
            (Rec. 601; the mean without three channels), ``"mean"``, or ``"channels"``
            (each input channel on its own).
        tiles: Tiles per side of the grid (a tile is ``size // tiles`` pixels, at least 1).
        clip_limit: The share of a tile's pixels a histogram bin keeps, in [0, 1]
            (0: no clipping).
        bins: Histogram bins, from 2 to 16384.
        hidden: Channels of each hidden layer of the head's MLP.
        layers: Hidden layers of the head's MLP (0: the head is linear).
        activation: One of :data:`~img2img_filters.models.structured.ACTIVATIONS`.

    Raises:
        ValueError: For a bad option.
    """

    is_linear = False
    #: The equalising curves come from the whole photo: inference does not tile it.
    whole_image = True
    #: ONNX cannot express the clipping loop; TorchScript can.
    exports_to_onnx = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        value: str = "max",
        tiles: int = 8,
        clip_limit: float = 0.01,
        bins: int = 256,
        hidden: int = 32,
        layers: int = 1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.value = check_str("value", value, VALUES)
        self.tiles = check_int("tiles", tiles, 1, maximum=4096)
        self.clip_limit = check_number("clip_limit", clip_limit)
        if not 0.0 <= self.clip_limit <= 1.0:
            raise ValueError(f"clip_limit must be in [0, 1]; got {clip_limit!r}")
        self.bins = check_int("bins", bins, 2, maximum=GRAY_LEVELS)
        check_int("hidden", hidden, 1)
        check_int("layers", layers, 0)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
        self.in_channels = in_channels
        gray = in_channels if value == "channels" else 1
        # the photo, the channel and its equalised version, the photo rescaled by their ratio
        inputs = 2 * in_channels if value == "channels" else 2 * in_channels + 2 * gray
        self.linear = nn.Linear(inputs, out_channels)
        self.mlp = pixel_mlp(inputs, hidden, layers, out_channels, activation)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Start as the equalisation with the colour kept; the MLP's output layer at zero.

        Output ``c`` is the equalised channel ``c`` (``value="channels"``) or input channel
        ``c`` rescaled by the equalised-to-original ratio; outputs beyond the inputs start
        as the mean of those.
        """
        self.linear.weight.zero_()
        self.linear.bias.zero_()
        first = self.linear.in_features - self.in_channels  # where the rescaled photo starts
        for c in range(self.linear.out_features):
            if c < self.in_channels:
                self.linear.weight[c, first + c] = 1.0
            else:
                self.linear.weight[c, first:] = 1.0 / self.in_channels
        if len(self.mlp):
            self.mlp[-1].weight.zero_()

    def gray(self, x: torch.Tensor) -> torch.Tensor:
        """The channel equalised: ``(B, 1, H, W)``, or ``(B, C, H, W)`` for ``"channels"``."""
        if self.value == "max":
            return x.amax(dim=1, keepdim=True)
        if self.value == "luma" and x.shape[1] == 3:
            weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return (x * weights).sum(dim=1, keepdim=True)
        if self.value == "channels":
            return x
        return x.mean(dim=1, keepdim=True)

    def head_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads ``(B, H, W, F)``, channels last.

        The photo and the equalised channel(s) for ``"channels"``; otherwise the photo, the
        channel ``g``, its equalisation ``e`` and the photo times ``e / g`` (``e`` where
        ``g`` is 0, as HSV's black).
        """
        gray = self.gray(x)
        b, g, h, w = gray.shape
        flat = gray.detach().reshape(b * g, h, w)
        equalised = equalise_tiles(flat, self.tiles, self.clip_limit, self.bins)
        equalised = equalised.to(x.dtype).reshape(b, g, h, w)
        if self.value == "channels":
            features = [x, equalised]
        else:
            ratio = torch.where(gray > 0, x / gray.clamp_min(1e-12), torch.ones_like(x))
            features = [x, gray, equalised, ratio * equalised]
        return torch.cat(features, dim=1).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` in [0, 1] -> ``(B, out, H, W)``."""
        return self.head(self.head_inputs(x)).permute(0, 3, 1, 2)

    def memory_per_pixel(self) -> int:
        """Bytes one pixel of a photo takes at most in :meth:`forward` (float32), about.

        The equalisation's float64 and index arrays of each gray channel (about twelve
        eight-byte values a pixel, the margins included), the head's inputs, and its
        hidden layers.
        """
        gray = self.in_channels if self.value == "channels" else 1
        hidden = sum(layer.out_features for layer in self.mlp if isinstance(layer, nn.Linear))
        return 8 * 12 * gray + 4 * (2 * self.linear.in_features + hidden + self.in_channels)

    def receptive_field(self) -> int:
        """1: no window; every output reads the whole photo (``whole_image``)."""
        return 1

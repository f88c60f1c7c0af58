"""A neighbourhood network: each pixel's window of linear features, in place and sorted.

Rank filters pick one value of a neighbourhood by its order: the dilation takes
the largest, the erosion the smallest, the median the middle one. Convolutions
and ReLUs can represent ``max(a, b) = b + relu(a - b)``, but a network must
discover such a comparison tree among the pixels of a window, which gradient
descent does slowly and inexactly. This architecture hands the head the sorted
window instead, so that every order statistic is one input: a rank filter is
then a *linear* function of the head's inputs, learnt exactly. The window's
values in place, their absolute values and a per-pixel MLP cover what is not a
rank filter: gradient norms (sums of absolute derivatives), the
range-dependent weights of a bilateral filter (differences to the centre), the
comparisons of an edge detector. The head runs channels last, as matrix
products over pixels, which the CPU does several times faster than 1x1
convolutions. ``benchmarks/quality.py`` and :mod:`img2img_filters.auto` give the
numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from img2img_filters.border import check_border, pad2d
from img2img_filters.models.histogram import (
    histogram_feature_count,
    histogram_features,
    histogram_statistics,
)
from img2img_filters.models.layers import BorderConv2d
from img2img_filters.models.options import check_bool, check_int, check_str
from img2img_filters.models.registry import register_arch
from img2img_filters.models.structured import ACTIVATIONS, pixel_mlp

__all__ = ["NeighbourhoodNet"]


@register_arch(
    "neighbourhood",
    "each pixel's window of linear features (in place, absolute, sorted) then a linear + MLP "
    "head; for rank filters, bilateral, edges",
)
class NeighbourhoodNet(nn.Module):
    """Linear features, the window of each around every pixel (in place and sorted), then a head.

    1. ``f = conv(x)``: ``features`` linear channels of a ``feature_size`` kernel
       (1x1 by default: a learnt grayscale conversion).
    2. For every pixel, the ``window x window`` values of each feature around it,
       the image extended by ``border`` (``values``), their absolute values
       (``absolute``), and the values sorted in increasing order, feature by
       feature (``sort``).
    3. The head, per pixel: a linear map of those inputs plus an MLP of them
       (``layers`` hidden layers of ``hidden`` channels with the activation; none
       when ``layers`` is 0), summed. With ``relative`` the MLP sees every value
       minus the window's centre value instead (the centre itself left out), so
       that its part of the output does not change when a constant is added to
       the features: the right bias for filters that commute with a change of
       brightness (rank filters, bilateral, derivatives).

    With ``sort`` the window's minimum, median and maximum are single inputs of
    the head, so dilation, erosion and median filters are linear in them and
    the linear part learns them exactly; the MLP learns the rest. With
    ``absolute``, magnitudes of derivatives are linear too: ``|gx| + |gy|`` (the
    L1 gradient norm of Canny), sums of ``|u . g|`` over directions ``u`` (the
    Euclidean norm ``|g|`` to within a percent with eight directions), and the
    comparisons of non-maximum suppression (``|gy| < tan(22.5 deg) |gx|``).

    The defaults (one 1x1 feature, a learnt gray, its 3x3 window in place and
    sorted, two hidden layers of 32) hold every 3x3 rank filter of a gray image
    exactly in the linear part, in about 1.8k parameters.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        features: Linear feature channels.
        feature_size: Odd side of the feature kernel.
        window: Odd side of the neighbourhood of each feature.
        values: Give the head the window's values in place.
        sort: Give the head the window's values sorted, per feature.
        absolute: Give the head the absolute values of the window too.
        relative: Give the MLP the values minus the centre value (needs ``window > 1``).
        hidden: Channels of each hidden layer of the MLP.
        layers: Hidden layers of the MLP (0: the head is linear).
        activation: One of :data:`~img2img_filters.models.structured.ACTIVATIONS`.
        border: How the image is extended, for the features and the window (OpenCV's names;
            match the target's).
        histogram: Give the head what the whole photo's histograms say of each pixel too
            (:func:`~img2img_filters.models.histogram.histogram_features`: its rank in
            the photo's red, green, blue and gray, and their quantiles and means), for
            global operators (auto-levels, normalisation, equalisation). The model then
            reads the whole photo (``whole_image``): inference gathers its
            :meth:`photo_statistics` strip by strip, then filters it tile by tile with them.
    """

    is_linear = False
    #: Whether an output depends on the whole photo (``histogram``): see :meth:`photo_statistics`.
    whole_image = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: int = 1,
        feature_size: int = 1,
        window: int = 3,
        values: bool = True,
        sort: bool = True,
        absolute: bool = False,
        relative: bool = False,
        hidden: int = 32,
        layers: int = 2,
        activation: str = "relu",
        border: str = "reflect101",
        histogram: bool = False,
    ) -> None:
        super().__init__()
        check_int("features", features, 1)
        check_int("feature_size", feature_size, 1, odd=True)
        check_int("window", window, 1, odd=True)
        check_int("hidden", hidden, 1)
        check_int("layers", layers, 0)
        check_bool("values", values)
        check_bool("sort", sort)
        check_bool("absolute", absolute)
        check_bool("relative", relative)
        self.histogram = check_bool("histogram", histogram)
        self.whole_image = self.histogram
        if not (values or absolute or sort):
            raise ValueError(
                "values, absolute and sort cannot all be False: the head would see nothing"
            )
        if relative and window == 1:
            raise ValueError("relative needs window > 1: a 1x1 window minus its centre is zero")
        check_str("activation", activation, tuple(ACTIVATIONS))
        self.border = check_border(border)
        self.window = window
        self.values = values
        self.sort = sort
        self.absolute = absolute
        self.relative = relative
        self.features = BorderConv2d(in_channels, features, feature_size, border)
        taps = window * window
        in_place = int(values) + int(absolute)  # parts that keep the window's order
        extra = histogram_feature_count(in_channels) if histogram else 0
        inputs = features * taps * (in_place + int(sort)) + extra
        self.linear = nn.Linear(inputs, out_channels)
        channels = inputs - features * in_place * int(relative)  # the centre minus itself
        self.mlp = pixel_mlp(channels, hidden, layers, out_channels, activation)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Start as the mean of the input channels: a gray image.

        Feature 0 is the mean of the input channels (its centre tap ``1 / in``,
        no bias); the other features keep PyTorch's default initialisation. The
        linear part of the head passes feature 0 at the centre of the window (its
        absolute value, or its median, when ``values`` is off) to every output; the MLP's output layer
        starts at zero, so the MLP joins in as training moves it.
        """
        conv = self.features
        centre = conv.kernel_size[0] // 2
        conv.weight[0].zero_()
        conv.weight[0, :, centre, centre] = 1.0 / conv.in_channels
        conv.bias[0] = 0.0
        self.linear.weight.zero_()
        self.linear.bias.zero_()
        taps = self.window * self.window
        # Feature 0's first part (in place, absolute or sorted) has the centre at taps // 2.
        self.linear.weight[:, taps // 2] = 1.0
        if len(self.mlp):
            self.mlp[-1].weight.zero_()

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """Each pixel's window of each feature ``(B, F, H, W, window**2)``, raster order."""
        f = self.features(x)
        r = self.window // 2
        if r == 0:
            return f.unsqueeze(-1)
        height, width = f.shape[-2:]
        padded = pad2d(f, r, r, r, r, self.border)
        return torch.stack(
            [
                padded[..., i : i + height, j : j + width]
                for i in range(self.window)
                for j in range(self.window)
            ],
            dim=-1,
        )

    def _inputs(self, window: torch.Tensor, sorted_window: torch.Tensor | None) -> torch.Tensor:
        """``(B, F, H, W, K)`` parts -> ``(B, H, W, F * K)``, channels last."""
        parts = [window] if self.values else []
        if self.absolute:
            parts.append(window.abs())
        if sorted_window is not None:
            parts.append(sorted_window)
        z = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        return z.permute(0, 2, 3, 1, 4).flatten(3)

    def photo_statistics(self, x: torch.Tensor) -> torch.Tensor:
        """What ``histogram`` reads of the whole photo, as sums over its pixels.

        Args:
            x: Photos or parts of them ``(B, in, H, W)``.

        Returns:
            :func:`~img2img_filters.models.histogram.histogram_statistics` ``(B, S)``; the
            sum over the parts of a photo is the photo's, for :meth:`forward` on its tiles.
        """
        return histogram_statistics(x)

    def forward(self, x: torch.Tensor, statistics: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``.

        Args:
            x: Photos, or tiles of them with ``statistics``.
            statistics: With ``histogram``: the whole photos' :meth:`photo_statistics`
                ``(B, S)``; ``None``: those of ``x``.
        """
        window = self.windows(x)
        sorted_window = window.sort(dim=-1).values if self.sort else None
        inputs = self._inputs(window, sorted_window)
        photo = histogram_features(x, statistics=statistics) if self.histogram else None
        if photo is not None:
            inputs = torch.cat([inputs, photo], dim=-1)
        out = self.linear(inputs)
        if len(self.mlp):
            z = inputs
            if self.relative:
                taps = window.shape[-1]
                centre = window[..., taps // 2 : taps // 2 + 1]
                around = torch.cat([window[..., : taps // 2], window[..., taps // 2 + 1 :]], -1)
                z = self._inputs(
                    around - centre, None if sorted_window is None else sorted_window - centre
                )
                if photo is not None:
                    z = torch.cat([z, photo], dim=-1)
            out = out + self.mlp(z)
        return out.permute(0, 3, 1, 2)

    def receptive_field(self) -> int:
        """``feature_size + window - 1``: the head is pointwise."""
        return self.features.receptive_field() + self.window - 1

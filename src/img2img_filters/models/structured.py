"""A structured network: a bank of linear features followed by a per-pixel MLP.

Many filters are a pointwise function of a few linear responses of the image:
the gradient magnitude ``sqrt(gx**2 + gy**2)``, the absolute value of a
derivative, a threshold of a blurred image, a clipped sharpening. This
architecture has exactly that shape, so it learns such filters with few
parameters and generalises across image sizes and contents.
"""

from __future__ import annotations

import torch
from torch import nn

from img2img_filters.models.layers import BorderConv2d
from img2img_filters.models.options import check_bool, check_int, check_str
from img2img_filters.models.registry import register_arch

__all__ = ["ACTIVATIONS", "StructuredNet", "pixel_mlp"]

#: The activations of the per-pixel MLP, by name.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
}


def pixel_mlp(
    inputs: int, hidden: int, layers: int, outputs: int, activation: str
) -> nn.Sequential:
    """A per-pixel MLP on channels-last inputs ``(..., inputs) -> (..., outputs)``.

    ``layers`` hidden layers of ``hidden`` channels, each followed by the activation, then
    an output layer without bias; empty when ``layers`` is 0.
    """
    mlp: list[nn.Module] = []
    channels = inputs
    for _ in range(layers):
        mlp += [nn.Linear(channels, hidden), ACTIVATIONS[activation]()]
        channels = hidden
    if layers:
        mlp.append(nn.Linear(channels, outputs, bias=False))
    return nn.Sequential(*mlp)


@register_arch(
    "structured",
    "linear kxk features (and their squares) then a per-pixel MLP; for pointwise functions "
    "of linear responses",
)
class StructuredNet(nn.Module):
    """Linear ``k x k`` features, optionally their squares, then a 1x1-convolution MLP.

    ``features = conv_kxk(x)``; the MLP input is ``[features, features**2]``
    (``squares=True``) or ``features``; the MLP is ``layers`` hidden 1x1
    convolutions of ``hidden`` channels, each followed by the activation, and a
    1x1 output convolution without activation.

    Why the squares: the energy of a set of responses (``gx**2 + gy**2``, the
    local variance) is then a *linear* function of the MLP input, so a gradient
    magnitude only asks the MLP for a one-dimensional square root. Absolute
    values need no help: ``|f| = relu(f) + relu(-f)`` is exact with ReLU. The
    default activation is ReLU because the pointwise parts of the filters in the
    registry (absolute values, thresholds, clipping) are piecewise linear.

    The defaults (eight 3x3 features, two hidden layers of 32) hold the
    derivative pairs of a 3x3 Sobel or Scharr, a blur and a Laplacian with room
    to spare, in about 1.9k parameters.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd side of the linear features.
        features: Number of linear features.
        hidden: Channels of each hidden layer of the MLP.
        layers: Number of hidden layers (0: the output is linear in ``[f, f**2]``).
        activation: One of :data:`ACTIVATIONS`.
        squares: Whether to append the squared features to the MLP input.
        border: Padding of the feature convolution (OpenCV's names; match the target's).
    """

    is_linear = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        features: int = 8,
        hidden: int = 32,
        layers: int = 2,
        activation: str = "relu",
        squares: bool = True,
        border: str = "reflect101",
    ) -> None:
        super().__init__()
        check_int("kernel_size", kernel_size, 1, odd=True)
        check_int("features", features, 1)
        check_int("hidden", hidden, 1)
        check_int("layers", layers, 0)
        check_str("activation", activation, tuple(ACTIVATIONS))
        self.squares = check_bool("squares", squares)
        self.features = BorderConv2d(in_channels, features, kernel_size, border)
        mlp: list[nn.Module] = []
        channels = 2 * features if squares else features
        for _ in range(layers):
            mlp += [nn.Conv2d(channels, hidden, 1), ACTIVATIONS[activation]()]
            channels = hidden
        mlp.append(nn.Conv2d(channels, out_channels, 1))
        self.mlp = nn.Sequential(*mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``."""
        f = self.features(x)
        if self.squares:
            f = torch.cat([f, f * f], dim=1)
        return self.mlp(f)

    def receptive_field(self) -> int:
        """``kernel_size``: the MLP is pointwise."""
        return self.features.receptive_field()

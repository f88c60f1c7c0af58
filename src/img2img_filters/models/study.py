"""The study's network and the plain linear stack."""

from __future__ import annotations

import torch
from torch import nn

from img2img_filters.models.layers import BorderConv2d
from img2img_filters.models.options import check_bool, check_int
from img2img_filters.models.registry import register_arch

__all__ = ["LinearNet", "StudyNet"]


@register_arch(
    "study", "the study's 3-layer CNN (3x3 convs, ReLU, zero padding); 48 params for RGB->1"
)
class StudyNet(nn.Module):
    """The study's three-layer CNN: conv1 (in -> out), ReLU, conv2, ReLU, conv3; all 3x3.

    With ``in=3, out=1`` it has 48 parameters, named ``conv1.weight``,
    ``conv1.bias``, ... as in the study, so the study's state dicts load unchanged.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (also the width of the hidden layers).
        border: Padding of every convolution; ``"constant"`` (zeros) is the study's.
    """

    is_linear = False

    def __init__(self, in_channels: int, out_channels: int, border: str = "constant") -> None:
        super().__init__()
        self.conv1 = BorderConv2d(in_channels, out_channels, 3, border)
        self.relu1 = nn.ReLU()
        self.conv2 = BorderConv2d(out_channels, out_channels, 3, border)
        self.relu2 = nn.ReLU()
        self.conv3 = BorderConv2d(out_channels, out_channels, 3, border)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``."""
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        return self.conv3(x)

    def layer_chain(self) -> list[nn.Module]:
        """The layers in the order :meth:`forward` applies them (``compile=True`` fuses them)."""
        return [self.conv1, self.relu1, self.conv2, self.relu2, self.conv3]

    def receptive_field(self) -> int:
        """7: three 3x3 convolutions."""
        return 7


@register_arch("linear", "a stack of convolutions without activation; exact for linear filters")
class LinearNet(nn.Module):
    """A stack of convolutions with no activation: an affine filter of its input.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd side of every kernel.
        depth: Number of convolutions.
        width: Channels between convolutions (default: ``out_channels``).
        border: Padding of every convolution (OpenCV's names; match the target's).
        bias: Whether the convolutions learn a bias.
    """

    is_linear = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        depth: int = 1,
        width: int | None = None,
        border: str = "reflect101",
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_int("kernel_size", kernel_size, 1, odd=True)
        check_int("depth", depth, 1)
        if width is not None:
            check_int("width", width, 1)
        check_bool("bias", bias)
        width = width or out_channels
        channels = [in_channels] + [width] * (depth - 1) + [out_channels]
        self.layers = nn.Sequential(
            *(
                BorderConv2d(channels[i], channels[i + 1], kernel_size, border, bias=bias)
                for i in range(depth)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``."""
        return self.layers(x)

    def layer_chain(self) -> list[nn.Module]:
        """The layers in the order :meth:`forward` applies them (``compile=True`` fuses them)."""
        return list(self.layers)

    def receptive_field(self) -> int:
        """``depth * (kernel_size - 1) + 1``."""
        return 1 + sum(layer.receptive_field() - 1 for layer in self.layers)

"""Layers shared by the architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from img2img.border import check_border, pad2d

__all__ = ["BorderConv2d"]


class BorderConv2d(nn.Conv2d):
    """A stride-1 ``nn.Conv2d`` that keeps the image size, padding with an OpenCV border mode.

    Its parameters are named ``weight`` and ``bias`` like ``nn.Conv2d``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel side.
        border: A border mode of :mod:`img2img.border` (``"constant"``: zeros).
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
        if self.border != "constant" and self.halo:
            x = pad2d(x, self.halo, self.halo, self.halo, self.halo, self.border)
        return F.conv2d(x, self.weight, self.bias, padding=self.padding, dilation=self.dilation)

    def receptive_field(self) -> int:
        """Side of the receptive field: ``dilation * (kernel_size - 1) + 1``."""
        return 2 * self.halo + 1

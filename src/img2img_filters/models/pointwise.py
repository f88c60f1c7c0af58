"""Per-pixel networks: colour lookup tables and a 1x1 MLP, for operators that see one pixel.

Curves, levels, gamma, colour grading and colormaps change each pixel from its
own colour alone: a function ``R^3 -> R^C`` applied everywhere. Two architectures
learn such functions with a receptive field of one pixel:

* ``lut3d`` (:class:`ColourLUT`): per-channel 1D curves plus a 3D lookup table,
  both interpolated linearly (the table trilinearly, as colour-grading software
  does). Its output is *linear in its parameters*, so
  :func:`img2img_filters.solve.fit_lut` fits it exactly by least squares; a curve with
  256 points is exact at every 8-bit input, so per-channel curves (gamma, levels)
  are learnt to float precision. The interpolation is written with gathers, so
  the model exports to ONNX at any opset.
* ``pixelmlp`` (:class:`PixelMLP`): 1x1 convolutions with activations, trained by
  gradient descent like the other networks.
"""

from __future__ import annotations

import torch
from torch import nn

from img2img_filters.border import check_border
from img2img_filters.models.options import check_int
from img2img_filters.models.registry import register_arch
from img2img_filters.models.structured import ACTIVATIONS

__all__ = ["MAX_CURVE_SIZE", "MAX_LUT_SIZE", "ColourLUT", "PixelMLP", "lut_weights"]

#: The largest ``size`` of the 3D table (65**3 = 274,625 entries per output channel).
MAX_LUT_SIZE = 65
#: The largest ``curve_size`` of a 1D curve.
MAX_CURVE_SIZE = 4096
#: The largest ``hidden`` width and number of ``layers`` of :class:`PixelMLP`.
MAX_HIDDEN = 1024
MAX_LAYERS = 16


def _axis(x: torch.Tensor, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell index and position inside it, per value, on a grid of ``points`` over [0, 1].

    Values outside [0, 1] take the border entries (clamped), as ``grid_sample``'s
    ``padding_mode="border"``.

    Returns:
        ``(index, fraction)``: int64 in ``[0, points - 2]`` and float in [0, 1], shaped like ``x``.
    """
    t = x.clamp(0.0, 1.0) * (points - 1)
    start = t.detach().floor().clamp(max=points - 2)
    return start.long(), t - start


def lut_weights(x: torch.Tensor, curve_size: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which parameters of a :class:`ColourLUT` each pixel reads, and with which weights.

    The table's parameters are numbered curves first (input channel ``c``, point
    ``k``: ``c * curve_size + k``), then the 3D table (``(r * size + g) * size + b``),
    per output channel. The model's output is ``sum_j weights[j] * theta[index[j]]``.

    Args:
        x: Pixels ``(C_in, N)``; the 3D table needs ``C_in == 3`` (``size == 0``: none).
        curve_size: Points of each curve (at least 2).
        size: Points per axis of the 3D table (0: no table).

    Returns:
        ``(index, weights)``, both ``(2 * C_in + 8, N)`` (``2 * C_in`` without the
        table): int64 parameter numbers and their interpolation weights.
    """
    channels = x.shape[0]
    start, fraction = _axis(x, curve_size)
    offset = (torch.arange(channels, device=x.device) * curve_size).unsqueeze(1)
    index = [start + offset, start + offset + 1]
    weights = [1.0 - fraction, fraction]
    if size:
        corner, part = _axis(x, size)
        base = channels * curve_size
        for r in (0, 1):
            for g in (0, 1):
                for b in (0, 1):
                    flat = ((corner[0] + r) * size + corner[1] + g) * size + corner[2] + b
                    index.append((base + flat).unsqueeze(0))
                    weight = (part[0] if r else 1 - part[0]) * (part[1] if g else 1 - part[1])
                    weights.append((weight * (part[2] if b else 1 - part[2])).unsqueeze(0))
    return torch.cat(index), torch.cat(weights)


@register_arch(
    "lut3d",
    "per-pixel colour lookup: per-channel 1D curves plus a trilinear 3D table; for curves, "
    "levels, gamma, grading, colormaps (fit exactly with fit_lut)",
)
class ColourLUT(nn.Module):
    """Per-channel curves plus a 3D colour table, each output the sum of their interpolations.

    For an input pixel ``x = (r, g, b)`` and output channel ``o``::

        out[o] = sum_c curves[o, c](x[c]) + table[o](r, g, b)

    where ``curves[o, c]`` is piecewise linear through ``curve_size`` evenly spaced
    points on [0, 1] and ``table[o]`` is the trilinear interpolation of a
    ``size**3`` grid on the colour cube. Inputs outside [0, 1] take the value at
    the nearest edge. The curves hold per-channel operators exactly (gamma,
    levels, channel curves and mixes of them); the table holds what mixes the
    channels non-linearly (a curve after a colour matrix, colormaps of the
    luminance, grading). The output is linear in the parameters, which makes the
    least-squares fit of :func:`img2img_filters.solve.fit_lut` exact.

    It starts as the identity when ``out == in`` (each curve ``o == c`` the
    diagonal), else as the mean of the input channels; the table starts at zero.

    The defaults are small (every parameter is then reached by a few hundred
    random pixels); :func:`img2img_filters.auto.arch_for_verdict` asks for
    ``curve_size=256`` (exact at every 8-bit input) and ``size=17``.

    Args:
        in_channels: Input channels (3 when ``size > 0``).
        out_channels: Output channels.
        size: Points per axis of the 3D table, 2 to :data:`MAX_LUT_SIZE`; 0: curves only.
        curve_size: Points of each curve, 2 to :data:`MAX_CURVE_SIZE`.
        border: Accepted for a uniform interface with the other architectures; a
            per-pixel model reads no neighbour, so it changes nothing.
    """

    is_linear = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int = 5,
        curve_size: int = 17,
        border: str = "reflect101",
    ) -> None:
        super().__init__()
        check_int("size", size, 0)
        check_int("curve_size", curve_size, 2)
        if size == 1 or size > MAX_LUT_SIZE:
            raise ValueError(f"size must be 0 (no table) or 2 to {MAX_LUT_SIZE}; got {size!r}")
        if curve_size > MAX_CURVE_SIZE:
            raise ValueError(f"curve_size must be 2 to {MAX_CURVE_SIZE}; got {curve_size!r}")
        if size and in_channels != 3:
            raise ValueError(
                f"lut3d: a 3D table needs 3 input channels; got in_channels={in_channels} "
                "(use size=0 for curves only)"
            )
        self.border = check_border(border)
        self.size = size
        self.curve_size = curve_size
        self.curves = nn.Parameter(torch.zeros(out_channels, in_channels, curve_size))
        self.table = nn.Parameter(torch.zeros(out_channels, size, size, size)) if size else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The identity (``out == in``) or the mean of the inputs; the table at zero."""
        out_channels, in_channels, points = self.curves.shape
        ramp = torch.linspace(0.0, 1.0, points)
        if out_channels == in_channels:
            mix = torch.eye(out_channels)
        else:
            mix = torch.full((out_channels, in_channels), 1.0 / in_channels)
        self.curves.copy_(mix[:, :, None] * ramp)
        if self.table is not None:
            self.table.zero_()

    def parameter_vector(self) -> torch.Tensor:
        """All parameters as ``(C_out, P)``, numbered as :func:`lut_weights` reads them."""
        parts = [self.curves.flatten(1)]
        if self.table is not None:
            parts.append(self.table.flatten(1))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def set_parameter_vector(self, theta: torch.Tensor) -> None:
        """Load ``(C_out, P)`` parameters numbered as :func:`lut_weights` reads them."""
        count = self.curves[0].numel()
        self.curves.copy_(theta[:, :count].reshape(self.curves.shape))
        if self.table is not None:
            self.table.copy_(theta[:, count:].reshape(self.table.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``."""
        batch, channels, height, width = x.shape
        pixels = x.transpose(0, 1).reshape(channels, -1)
        index, weights = lut_weights(pixels, self.curve_size, self.size)
        theta = self.parameter_vector()
        out = (theta[:, index] * weights).sum(dim=1)  # (C_out, N)
        return out.reshape(-1, batch, height, width).transpose(0, 1)

    def receptive_field(self) -> int:
        """1: each output pixel is a function of its input pixel alone."""
        return 1


@register_arch(
    "pixelmlp", "a per-pixel MLP (1x1 convolutions and activations); for pointwise operators"
)
class PixelMLP(nn.Module):
    """An MLP applied to each pixel's colour: 1x1 convolutions with activations between.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        hidden: Channels of each hidden layer, 1 to 1024.
        layers: Hidden layers, 1 to 16.
        activation: One of :data:`~img2img_filters.models.structured.ACTIVATIONS`.
        border: Accepted for a uniform interface; a per-pixel model changes nothing with it.
    """

    is_linear = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 32,
        layers: int = 2,
        activation: str = "relu",
        border: str = "reflect101",
    ) -> None:
        super().__init__()
        check_int("hidden", hidden, 1)
        check_int("layers", layers, 1)
        if hidden > MAX_HIDDEN:
            raise ValueError(f"hidden must be 1 to {MAX_HIDDEN}; got {hidden!r}")
        if layers > MAX_LAYERS:
            raise ValueError(f"layers must be 1 to {MAX_LAYERS}; got {layers!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
        self.border = check_border(border)
        modules: list[nn.Module] = []
        channels = in_channels
        for _ in range(layers):
            modules += [nn.Conv2d(channels, hidden, 1), ACTIVATIONS[activation]()]
            channels = hidden
        modules.append(nn.Conv2d(channels, out_channels, 1))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``."""
        return self.layers(x)

    def receptive_field(self) -> int:
        """1: 1x1 convolutions only."""
        return 1

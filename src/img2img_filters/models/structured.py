"""A structured network: a bank of linear features followed by a per-pixel MLP.

Many filters are a pointwise function of a few linear responses of the image:
the gradient magnitude ``sqrt(gx**2 + gy**2)``, the absolute value of a
derivative, a threshold of a blurred image, a clipped sharpening. This
architecture has exactly that shape, so it learns such filters with few
parameters and generalises across image sizes and contents.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from img2img_filters.models.layers import BorderConv2d
from img2img_filters.models.options import check_bool, check_int, check_str
from img2img_filters.models.registry import register_arch

__all__ = ["ACTIVATIONS", "LinearHead", "StructuredNet", "fit_linear_head", "pixel_mlp"]

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


#: A photo whose error is more than this many times the median photo's is left out of the
#: head's fit (a teacher's output that no model of the others explains).
OUTLIER_FACTOR = 4.0
#: The share of the photos the fit keeps at least.
KEPT_SHARE = 0.75


def _least_squares(
    design: torch.Tensor, y: torch.Tensor, kept: torch.Tensor, clip: bool
) -> torch.Tensor:
    """``(F + 1, C_out)``: the fit of ``y`` ``(B, N, C_out)`` on ``design`` ``(B, N, F + 1)``.

    Only the photos ``kept`` count and, with ``clip``, only each channel's pixels whose target
    is inside (0, 1): a clipped output says nothing of the value the head should have.
    """
    rows, targets = design[kept].flatten(0, 1), y[kept].flatten(0, 1)
    if not clip:
        return torch.linalg.lstsq(rows, targets, driver="gelsd").solution
    columns = []
    for c in range(targets.shape[1]):
        inside = (targets[:, c] > 0) & (targets[:, c] < 1)
        if not bool(inside.any()):  # all clipped: any head that clips them will do
            inside = torch.ones_like(inside)
        fit = torch.linalg.lstsq(rows[inside], targets[inside, c : c + 1], driver="gelsd")
        columns.append(fit.solution)
    return torch.cat(columns, dim=1)


def _photo_errors(
    design: torch.Tensor, y: torch.Tensor, solution: torch.Tensor, clip: bool
) -> torch.Tensor:
    """``(B,)``: each photo's RMS error under ``solution`` (its output clipped with ``clip``)."""
    predicted = design @ solution
    if clip:
        predicted = predicted.clamp(0.0, 1.0)
    return (predicted - y).pow(2).mean(dim=(1, 2)).sqrt()


@torch.no_grad()
def fit_linear_head(
    linear: nn.Linear, features: torch.Tensor, targets: torch.Tensor, clip: bool = False
) -> float:
    """Set ``linear`` to the least-squares fit of ``targets`` on ``features``; its RMS error.

    A few targets no head explains (a teacher's garbage on some inputs) must not bend
    the fit, so it is made on the photos that agree: each photo is fitted alone, the fit
    whose median error over all the photos is least picks the photos within
    :data:`OUTLIER_FACTOR` times that median (at least :data:`KEPT_SHARE` of them, the
    best), and the head is fitted on those.

    Args:
        linear: The head, ``features`` in and the targets' channels out.
        features: ``(B, H, W, F)``: what the head reads, channels last.
        targets: ``(B, C_out, H, W)``.
        clip: The head's output is clipped to [0, 1]: fit the pixels whose target is
            inside, and measure the error of the clipped output.

    Returns:
        The RMS residual of the fit over every pixel and channel of the photos it kept
        (float64).
    """
    photos = features.shape[0]
    z = features.reshape(photos, -1, linear.in_features).double()
    design = torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)
    y = targets.permute(0, 2, 3, 1).reshape(photos, -1, linear.out_features).double()
    kept = torch.ones(photos, dtype=torch.bool)
    if photos >= 3:
        alone = torch.eye(photos, dtype=torch.bool)
        errors = torch.stack(
            [_photo_errors(design, y, _least_squares(design, y, alone[b], clip), clip)
             for b in range(photos)]
        )  # fmt: skip
        typical = errors.median(dim=1).values
        best = int(typical.argmin())
        least = max(math.ceil(KEPT_SHARE * photos), 1)
        within = errors[best] <= max(OUTLIER_FACTOR * float(typical[best]), 1e-9)
        kept = within | (errors[best].argsort().argsort() < least)
    solution = _least_squares(design, y, kept, clip)
    linear.weight.copy_(solution[:-1].T.to(linear.weight))
    linear.bias.copy_(solution[-1].to(linear.bias))
    return float(_photo_errors(design, y, solution, clip)[kept].pow(2).mean().sqrt())


class LinearHead:
    """A per-pixel head for a network with fixed features: ``linear`` plus ``mlp``, summed.

    The network (an ``nn.Module`` that mixes this in) has ``self.linear`` (an ``nn.Linear``),
    ``self.mlp`` (a :func:`pixel_mlp`, empty for none) and ``head_inputs(x)`` ``(B, H, W, F)``;
    with ``self.clip`` the head's output is clipped to [0, 1].
    """

    clip = False

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Channels-last head inputs ``(..., F)`` -> outputs ``(..., out)``."""
        out = self.linear(z)
        if len(self.mlp):
            out = out + self.mlp(z)
        return out.clamp(0.0, 1.0) if self.clip else out

    def fit_head(self, x: torch.Tensor, targets: torch.Tensor) -> float:
        """Set the linear head to its least-squares fit on photos; the fit's RMS error.

        See :func:`fit_linear_head` (photos no head explains are left out); the MLP's
        part of the outputs is taken off the targets first.

        Args:
            x: Photos ``(B, in, H, W)``.
            targets: Their targets ``(B, out, H, W)``.
        """
        with torch.no_grad():
            z = self.head_inputs(x)
            rest = self.mlp(z).permute(0, 3, 1, 2) if len(self.mlp) else 0.0
        return fit_linear_head(self.linear, z, targets - rest, clip=self.clip)


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

"""Edge-aware smoothing learnt end to end: a recursive domain-transform filter, then a per-pixel head.

Edge-preserving filters (OpenCV's ``edgePreservingFilter``, the base layer of
``detailEnhance``) average each pixel with its neighbours along the rows and
columns of the photo, the weight falling with the distance travelled *and* with
the colour edges crossed on the way. The domain-transform recursive filter does
this in a few sweeps: along each row, ``s[j] = v[j] + a ** d[j] * (s[j - 1] - v[j])``
forwards then backwards, with ``d[j] = 1 + (sigma_s / sigma_r) * |g[j] - g[j - 1]|``
the step across an edge of the guide ``g``; then along each column; repeated with
the spatial scale shrinking as ``sqrt(3) * 2 ** (N - i - 1) / sqrt(4 ** N - 1)`` and
``a = exp(-sqrt(2) / (sigma_s * that))``.

:class:`DomainTransformNet` learns ``sigma_s``, ``sigma_r`` and the guide (a 1x1
convolution; its channels' absolute differences are summed), smooths the photo
and the guide that way, and hands a per-pixel head each value with its smoothed
version: the smoothed photo is an edge-preserving filter, the photo plus ``k``
times its detail (photo minus smoothed) a detail enhancement. Started at the
identity guide, it is OpenCV's recursive filter for the ``sigma_s`` and
``sigma_r`` given.

Every output depends on its whole row and column, so the model reads the whole
photo (``whole_image``: never tiled). The sweeps are a TorchScript loop, so a
TorchScript export runs at every size; ONNX cannot express them for every size
(``exports_to_onnx`` is false and the export refuses, saying so).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from img2img_filters.limits import MAX_WIDTH
from img2img_filters.models.options import check_int, check_number
from img2img_filters.models.registry import register_arch
from img2img_filters.models.structured import ACTIVATIONS, pixel_mlp

__all__ = ["DomainTransformNet", "recursive_sweep"]

#: The most sweeps (each a row pass and a column pass).
MAX_ITERATIONS = 8
#: Pixels the head runs on at once.
HEAD_CHUNK_PIXELS = 2**18


@torch.jit.script
def recursive_sweep(values: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """A first-order recursive filter along the last axis, forwards then backwards.

    Args:
        values: ``(B, C, H, W)``.
        coefficients: ``(B, 1, H, W)`` in [0, 1]: ``coefficients[..., j]`` is how much
            of column ``j - 1`` flows into column ``j`` (and back); column 0's is unused.

    Returns:
        ``(B, C, H, W)``: ``s[j] = v[j] + c[j] * (s[j - 1] - v[j])`` left to right, then
        ``s[j] = s[j] + c[j + 1] * (s[j + 1] - s[j])`` right to left.
    """
    width = values.shape[-1]
    columns = values.unbind(-1)
    coefficient = coefficients.unbind(-1)
    forward = [columns[0]]
    for j in range(1, width):
        forward.append(columns[j] + coefficient[j] * (forward[j - 1] - columns[j]))
    backward = [forward[width - 1]]
    for j in range(width - 2, -1, -1):
        backward.append(forward[j] + coefficient[j + 1] * (backward[-1] - forward[j]))
    backward.reverse()
    return torch.stack(backward, dim=-1)


@register_arch(
    "domain_transform",
    "a learnt recursive domain-transform filter (edge-aware smoothing along rows and columns) "
    "and a per-pixel head; for edge-preserving smoothing and detail enhancement (whole photo)",
)
class DomainTransformNet(nn.Module):
    """The photo and a learnt guide, smoothed by a learnt domain transform, then a per-pixel head.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        guide: Channels of the guide whose edges stop the smoothing (a 1x1 convolution
            of the input; the identity on the first channels at first).
        guide_hidden: With more than 0, the guide also gets a per-pixel MLP of one hidden
            layer of this many channels (added, starting at zero), so that it can be a
            non-linear function of the colour (e.g. a lightness).
        sigma_s: Spatial scale in pixels at first (learnt).
        sigma_r: Range scale at first (learnt): an edge of this size in the guide's L1
            difference costs as much as ``sigma_s`` pixels of distance.
        iterations: Sweeps, each along the rows then the columns.
        hidden: Channels of each hidden layer of the head's MLP.
        layers: Hidden layers of the head's MLP (0: the head is linear).
        activation: One of :data:`~img2img_filters.models.structured.ACTIVATIONS`.

    Raises:
        ValueError: For a bad option.
    """

    is_linear = False
    #: Every output depends on its whole row and column: inference does not tile it.
    whole_image = True
    #: ONNX cannot express the sweeps for every size; TorchScript can.
    exports_to_onnx = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        guide: int = 3,
        guide_hidden: int = 0,
        sigma_s: float = 30.0,
        sigma_r: float = 0.3,
        iterations: int = 3,
        hidden: int = 32,
        layers: int = 1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_int("guide", guide, 1)
        self.iterations = check_int("iterations", iterations, 1, maximum=MAX_ITERATIONS)
        check_int("hidden", hidden, 1)
        check_int("layers", layers, 0)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
        sigma_s = check_number("sigma_s", sigma_s, positive=True)
        sigma_r = check_number("sigma_r", sigma_r, positive=True)
        if not math.isfinite(sigma_s / sigma_r):
            raise ValueError(
                f"sigma_s / sigma_r must be finite; got sigma_s={sigma_s!r}, sigma_r={sigma_r!r}"
            )
        self.guide = nn.Conv2d(in_channels, guide, 1)
        check_int("guide_hidden", guide_hidden, 0, maximum=MAX_WIDTH)
        self.guide_mlp = (
            nn.Sequential(
                nn.Conv2d(in_channels, guide_hidden, 1),
                ACTIVATIONS[activation](),
                nn.Conv2d(guide_hidden, guide, 1, bias=False),
            )
            if guide_hidden
            else nn.Sequential()
        )
        self.log_sigma_s = nn.Parameter(torch.tensor(math.log(sigma_s)))
        self.log_ratio = nn.Parameter(torch.tensor(math.log(sigma_s / sigma_r)))
        inputs = 2 * (in_channels + guide)  # each value and its smoothed version
        self.linear = nn.Linear(inputs, out_channels)
        self.mlp = pixel_mlp(inputs, hidden, layers, out_channels, activation)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Start as the recursive filter of the input: identity guide, smoothed input out.

        The guide's channel ``i`` is input channel ``i`` (the rest start at zero); output
        ``c`` is the smoothed input channel ``c`` (their mean for outputs beyond the
        inputs); the MLP's output layer starts at zero.
        """
        in_channels = self.guide.in_channels
        self.guide.weight.zero_()
        self.guide.bias.zero_()
        for i in range(min(in_channels, self.guide.out_channels)):
            self.guide.weight[i, i] = 1.0
        self.linear.weight.zero_()
        self.linear.bias.zero_()
        smoothed = in_channels + self.guide.out_channels  # where the smoothed input starts
        for c in range(self.linear.out_features):
            if c < in_channels:
                self.linear.weight[c, smoothed + c] = 1.0
            else:
                self.linear.weight[c, smoothed : smoothed + in_channels] = 1.0 / in_channels
        if len(self.mlp):
            self.mlp[-1].weight.zero_()
        if len(self.guide_mlp):
            self.guide_mlp[-1].weight.zero_()

    def smooth(self, values: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``values`` ``(B, C, H, W)`` smoothed along the rows and columns, stopped by ``guide``'s edges."""
        ratio = self.log_ratio.exp()
        across = (guide[..., :, 1:] - guide[..., :, :-1]).abs().sum(dim=1, keepdim=True)
        down = (guide[..., 1:, :] - guide[..., :-1, :]).abs().sum(dim=1, keepdim=True)
        distance_h = 1.0 + ratio * F.pad(across, (1, 0))  # (B, 1, H, W); column 0 unused
        distance_v = (1.0 + ratio * F.pad(down, (0, 0, 1, 0))).transpose(-1, -2)
        n = self.iterations
        smoothed = values
        for i in range(n):
            scale = math.sqrt(3.0) * 2.0 ** (n - i - 1) / math.sqrt(4.0**n - 1.0)
            rate = math.sqrt(2.0) / (self.log_sigma_s.exp() * scale)  # a = exp(-rate)
            smoothed = recursive_sweep(smoothed, torch.exp(-rate * distance_h))
            along_columns = recursive_sweep(
                smoothed.transpose(-1, -2), torch.exp(-rate * distance_v)
            )
            smoothed = along_columns.transpose(-1, -2)
        return smoothed

    def head_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads ``(B, H, W, 2 * (in + guide))``, channels last.

        The input and the guide, then both smoothed by :meth:`smooth`.
        """
        guide = self.guide(x)
        if len(self.guide_mlp):
            guide = guide + self.guide_mlp(x)
        values = torch.cat([x, guide], dim=1)
        return torch.cat([values, self.smooth(values, guide)], dim=1).permute(0, 2, 3, 1)

    def _head(self, z: torch.Tensor) -> torch.Tensor:
        out = self.linear(z)
        return out + self.mlp(z) if len(self.mlp) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``.

        The head runs on :data:`HEAD_CHUNK_PIXELS` pixels at a time, so that a large photo
        holds its hidden layers for one band of rows only.
        """
        z = self.head_inputs(x)
        rows = max(1, HEAD_CHUNK_PIXELS // max(1, z.shape[0] * z.shape[2]))
        if z.shape[1] <= rows:
            return self._head(z).permute(0, 3, 1, 2)
        bands = [self._head(z[:, top : top + rows]) for top in range(0, z.shape[1], rows)]
        return torch.cat(bands, dim=1).permute(0, 3, 1, 2)

    def memory_per_pixel(self) -> int:
        """Bytes one pixel of a photo takes at most in :meth:`forward` (float32), about.

        The input, the guide and their smoothed versions (the sweeps hold about three
        copies), and the head's inputs; the head's hidden layers count for a band only.
        """
        values = self.guide.in_channels + self.guide.out_channels
        return 4 * (self.guide.in_channels + 4 * values + self.linear.in_features + 8)

    def receptive_field(self) -> int:
        """1: no window; every output reads its whole row and column (``whole_image``)."""
        return 1

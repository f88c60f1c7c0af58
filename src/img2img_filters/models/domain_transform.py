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

With ``transform="normalised"`` each sweep is instead OpenCV's normalised
convolution: the mean of the values whose transformed coordinate (the running
sum of those steps along the row) lies within ``sqrt(3)`` times the sweep's
scale of the pixel's; it is OpenCV's ``NORMCONV_FILTER``, the first stage of
``cv2.stylization`` and ``cv2.pencilSketch``. Its window edges are indices, so
``sigma_s``, ``sigma_r`` and the guide learn no gradient there (auto chooses
them by a search). With ``edges``, the head also reads the summed Sobel
gradient magnitude of the smoothed photo's channels and each smoothed channel
times it: the smoothed photo darkened at its edges, as ``cv2.stylization`` is.

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
from img2img_filters.models.options import check_bool, check_int, check_number, check_str
from img2img_filters.models.registry import register_arch
from img2img_filters.models.structured import ACTIVATIONS, LinearHead, pixel_mlp

__all__ = ["TRANSFORMS", "DomainTransformNet", "normalised_sweep", "recursive_sweep"]

#: The sweeps: a recursive filter or a normalised convolution (box) in the transformed domain.
TRANSFORMS = ("recursive", "normalised")

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


@torch.jit.script
def normalised_sweep(
    values: torch.Tensor, coordinates: torch.Tensor, radius: float
) -> torch.Tensor:
    """A box filter in the transformed domain along the last axis (normalised convolution).

    Args:
        values: ``(B, C, H, W)``.
        coordinates: ``(B, 1, H, W)``, non-decreasing along the last axis: each pixel's
            transformed coordinate.
        radius: The box's half-width in transformed units.

    Returns:
        ``(B, C, H, W)``: at each pixel, the mean of the values of its row whose coordinate
        ``t`` has ``c - radius < t <= c + radius`` (``c`` the pixel's).
    """
    b, c, h, w = values.shape[0], values.shape[1], values.shape[2], values.shape[3]
    rows = coordinates.reshape(b * h, w).contiguous()
    lower = torch.searchsorted(rows, rows - radius, right=True).unsqueeze(1).expand(-1, c, -1)
    upper = torch.searchsorted(rows, rows + radius, right=True).unsqueeze(1).expand(-1, c, -1)
    sums = values.permute(0, 2, 1, 3).reshape(b * h, c, w).cumsum(-1)
    sums = F.pad(sums, [1, 0])  # sums[..., k]: the sum of the first k values
    means = (sums.gather(2, upper) - sums.gather(2, lower)) / (upper - lower).to(values.dtype)
    return means.reshape(b, h, c, w).permute(0, 2, 1, 3)


def sobel_magnitude(values: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, 1, H, W)``: each channel's 3x3 Sobel gradient magnitude, summed.

    The border is mirrored without repeating the edge (OpenCV's default).
    """
    b, c, h, w = values.shape
    dx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([dx, dx.T]).unsqueeze(1).to(values)
    flat = values.reshape(b * c, 1, h, w)
    padded = F.pad(flat, (1, 1, 1, 1), mode="reflect" if min(h, w) > 1 else "replicate")
    gradients = F.conv2d(padded, kernels)
    # floored, so that a flat patch (no gradient) passes a zero gradient back, not 0 * inf
    squared = gradients.pow(2).sum(dim=1).clamp_min(1e-20)
    return squared.sqrt().reshape(b, c, h, w).sum(dim=1, keepdim=True)


@register_arch(
    "domain_transform",
    "a learnt recursive domain-transform filter (edge-aware smoothing along rows and columns) "
    "and a per-pixel head; for edge-preserving smoothing and detail enhancement (whole photo)",
)
class DomainTransformNet(LinearHead, nn.Module):
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
        transform: One of :data:`TRANSFORMS`: ``"recursive"`` (learns its scales and guide
            by gradient) or ``"normalised"`` (a box in the transformed domain; they stay).
        edges: The head also reads the summed Sobel magnitude of the smoothed input's
            channels and each smoothed input channel times it.
        clip: The output is clipped to [0, 1] (as a tool's 8-bit output is).
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
        transform: str = "recursive",
        edges: bool = False,
        clip: bool = False,
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
        self.transform = check_str("transform", transform, TRANSFORMS)
        self.edges = check_bool("edges", edges)
        self.clip = check_bool("clip", clip)
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
        if edges:  # the edge magnitude, and each smoothed input channel times it
            inputs += 1 + in_channels
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
        if self.transform == "normalised":
            return self._box_sweeps(values, distance_h, distance_v)
        for i in range(n):
            scale = math.sqrt(3.0) * 2.0 ** (n - i - 1) / math.sqrt(4.0**n - 1.0)
            rate = math.sqrt(2.0) / (self.log_sigma_s.exp() * scale)  # a = exp(-rate)
            smoothed = recursive_sweep(smoothed, torch.exp(-rate * distance_h))
            along_columns = recursive_sweep(
                smoothed.transpose(-1, -2), torch.exp(-rate * distance_v)
            )
            smoothed = along_columns.transpose(-1, -2)
        return smoothed

    def _box_sweeps(
        self, values: torch.Tensor, distance_h: torch.Tensor, distance_v: torch.Tensor
    ) -> torch.Tensor:
        """The normalised-convolution sweeps of :meth:`smooth` (the scales as numbers)."""
        across = distance_h.detach().cumsum(-1)  # each pixel's transformed coordinate
        down = distance_v.detach().cumsum(-1)  # (B, 1, W, H): the columns as rows
        n = self.iterations
        sigma_s = float(self.log_sigma_s.detach().exp())
        smoothed = values
        for i in range(n):
            scale = sigma_s * math.sqrt(3.0) * 2.0 ** (n - i - 1) / math.sqrt(4.0**n - 1.0)
            radius = math.sqrt(3.0) * scale  # OpenCV's arithmetic, to the last bit
            smoothed = normalised_sweep(smoothed, across, radius)
            smoothed = normalised_sweep(smoothed.transpose(-1, -2), down, radius)
            smoothed = smoothed.transpose(-1, -2)
        return smoothed

    def head_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads ``(B, H, W, F)``, channels last.

        The input and the guide, then both smoothed by :meth:`smooth`; with ``edges``,
        then the summed Sobel magnitude ``m`` of the smoothed input and the smoothed input
        times ``m``.
        """
        guide = self.guide(x)
        if len(self.guide_mlp):
            guide = guide + self.guide_mlp(x)
        values = torch.cat([x, guide], dim=1)
        smoothed = self.smooth(values, guide)
        features = [values, smoothed]
        if self.edges:
            photo = smoothed[:, : x.shape[1]]
            magnitude = sobel_magnitude(photo)
            features += [magnitude, photo * magnitude]
        return torch.cat(features, dim=1).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``.

        The head runs on :data:`HEAD_CHUNK_PIXELS` pixels at a time, so that a large photo
        holds its hidden layers for one band of rows only.
        """
        z = self.head_inputs(x)
        rows = max(1, HEAD_CHUNK_PIXELS // max(1, z.shape[0] * z.shape[2]))
        if z.shape[1] <= rows:
            return self.head(z).permute(0, 3, 1, 2)
        bands = [self.head(z[:, top : top + rows]) for top in range(0, z.shape[1], rows)]
        return torch.cat(bands, dim=1).permute(0, 3, 1, 2)

    def memory_per_pixel(self) -> int:
        """Bytes one pixel of a photo takes at most in :meth:`forward` (float32), about.

        The input, the guide and their smoothed versions (the sweeps hold about three
        copies), and the head's inputs; the head's hidden layers count for a band only.
        The normalised sweeps also hold the running sums and two windows' bounds and
        gathered sums (eight-byte indices).
        """
        values = self.guide.in_channels + self.guide.out_channels
        size = 4 * (self.guide.in_channels + 4 * values + self.linear.in_features + 8)
        if self.transform == "normalised":
            size += 4 * 3 * values + 8 * 2 * (1 + values)
        return size

    def receptive_field(self) -> int:
        """1: no window; every output reads its whole row and column (``whole_image``)."""
        return 1

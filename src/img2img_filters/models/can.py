"""The context-aggregation network (CAN) for fast image processing.

After Chen, Xu and Koltun, "Fast Image Processing with Fully-Convolutional
Networks" (ICCV 2017). A stack of 3x3 convolutions of constant width whose
dilation doubles from layer to layer, so the receptive field grows
exponentially with depth while the cost grows linearly; each convolution is
followed by the paper's adaptive normalisation ``a * x + b * BatchNorm(x)`` and
a LeakyReLU, and a 1x1 convolution maps the last features to the output
channels.
"""

from __future__ import annotations

import torch
from torch import nn

from img2img_filters.models.layers import BorderConv2d
from img2img_filters.models.options import check_int
from img2img_filters.models.registry import register_arch

__all__ = ["MAX_INIT_NOISE", "AdaptiveNorm", "ContextAggregationNet", "can_dilations"]

#: The largest ``init_noise``: a thousand times He's standard deviation keeps weights finite.
MAX_INIT_NOISE = 1000.0


def can_dilations(depth: int, dilation_cap: int | None = None) -> list[int]:
    """The dilation of each 3x3 layer: ``[1, 2, 4, ..., 2**(depth-2), 1]``, capped.

    Args:
        depth: Number of 3x3 layers (>= 1).
        dilation_cap: Largest dilation allowed (``None``: no cap).

    Returns:
        ``depth`` dilations; the first and the last are 1.

    Example:
        >>> can_dilations(5), can_dilations(7, dilation_cap=8)
        ([1, 2, 4, 8, 1], [1, 2, 4, 8, 8, 8, 1])
    """
    check_int("depth", depth, 1)
    if dilation_cap is not None:
        check_int("dilation_cap", dilation_cap, 1)
    dilations = [1] + [2**i for i in range(1, depth - 1)] + ([1] if depth > 1 else [])
    if dilation_cap is not None:
        dilations = [min(d, dilation_cap) for d in dilations]
    return dilations


class AdaptiveNorm(nn.Module):
    """``a * x + b * BatchNorm(x)`` with learnable scalars ``a`` (init 1) and ``b`` (init 0).

    At initialisation it is the identity, so an identity-initialised network
    passes its input through whatever the batch statistics; training decides how
    much normalisation helps.

    Args:
        channels: Channels of ``x``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))
        self.b = nn.Parameter(torch.zeros(()))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        return self.a * x + self.b * self.bn(x)


@register_arch(
    "can",
    "context-aggregation network (Chen et al. 2017): dilated 3x3 convs, adaptive BN, LeakyReLU",
)
class ContextAggregationNet(nn.Module):
    """A context-aggregation network: dilated 3x3 convolutions, adaptive norm, LeakyReLU, 1x1 out.

    Layer ``i`` (``i = 0 .. depth-1``) is a 3x3 :class:`BorderConv2d` of ``width``
    channels with dilation ``can_dilations(depth, dilation_cap)[i]``, followed by
    :class:`AdaptiveNorm` and ``LeakyReLU(0.2)``; a 1x1 convolution without
    activation makes the ``out_channels`` outputs. The receptive field is
    ``1 + 2 * sum(dilations)`` (``2**depth + 1`` without a cap).

    Initialisation (identity plus noise, after Yu and Koltun's context
    aggregation module): the centre tap of every 3x3 layer maps hidden channel
    ``o`` to input channel ``o mod in_channels`` with weight 1, every other tap
    is 0, biases are 0; then Gaussian noise of standard deviation
    ``init_noise * sqrt(2 / fan_in)`` (a fraction of He's) is added to the 3x3
    weights. Without the noise every hidden channel is a copy of an input
    channel, inputs in [0, 1] pass the LeakyReLUs unchanged, and the 1x1 output
    averages the copies: output ``j`` averages the hidden channels that copy
    input channel ``j mod in_channels``, except that a single output averages
    all hidden channels (the mean of the input channels, a gray image). So with
    ``init_noise=0`` the network starts as exactly the identity when
    ``out_channels == in_channels`` and as the channel mean for one output.

    The noise matters: it breaks the symmetry between copies of one channel
    (which gradient descent would otherwise keep tied forever), and it puts some
    pre-activations below zero, where the LeakyReLU bends. From the exact
    identity the network is linear on [0, 1] images and the gradient toward an
    even function of derivatives (gradient magnitude, edges) vanishes: on the
    mini Tiny ImageNet, 120 Adam steps (lr 1e-3, batch 16) left a Sobel
    magnitude at the target's variance with ``init_noise`` 0.01 or 0.1 but
    reached a fifth of it with 0.25, and a 3x3 median also trained better (MSE
    0.0018 against 0.0026 with 0.01). At 0.25 the initial output deviates from the
    identity by about 0.2 RMS on photos.

    The defaults (24 channels, 5 layers with dilations 1, 2, 4, 8, 1) give a
    33-pixel receptive field, about 22k parameters and about 21k multiply-adds
    per pixel: it covers every local filter of the registry (OpenCV kernels are
    at most 31 wide) and fits inside a 64x64 training photo, where larger
    dilations would mostly sample the reflected border, while a training step on
    a batch of 64x64 photos stays a fraction of a second on a laptop CPU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        width: Channels of every hidden layer.
        depth: Number of 3x3 layers.
        border: Padding of every convolution (OpenCV's names; match the target's).
        dilation_cap: Largest dilation (``None``: no cap), to bound the receptive field.
        init_noise: Noise added to the identity initialisation, as a fraction of
            He's standard deviation (0: the exact identity).
    """

    is_linear = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 24,
        depth: int = 5,
        border: str = "reflect101",
        dilation_cap: int | None = None,
        init_noise: float = 0.25,
    ) -> None:
        super().__init__()
        check_int("width", width, 1)
        if isinstance(init_noise, bool) or not isinstance(init_noise, (int, float)):
            raise TypeError(f"init_noise must be a non-negative number; got {init_noise!r}")
        if not 0 <= init_noise <= MAX_INIT_NOISE:
            raise ValueError(
                f"init_noise must be a number from 0 to {MAX_INIT_NOISE}; got {init_noise!r}"
            )
        self.init_noise = float(init_noise)
        self.dilations = can_dilations(depth, dilation_cap)
        layers: list[nn.Module] = []
        channels = in_channels
        for dilation in self.dilations:
            layers += [
                BorderConv2d(channels, width, 3, border, dilation=dilation),
                AdaptiveNorm(width),
                nn.LeakyReLU(0.2),
            ]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, out_channels, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Apply the identity initialisation described in the class docstring."""
        in_channels = self.body[0].in_channels
        for module in self.body:
            if isinstance(module, BorderConv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, self.init_noise * (2.0 / fan_in) ** 0.5)
                for o in range(module.out_channels):
                    module.weight[o, o % module.in_channels, 1, 1] += 1.0
                module.bias.zero_()
            elif isinstance(module, AdaptiveNorm):
                module.a.fill_(1.0)
                module.b.zero_()
                module.bn.reset_parameters()
        head = self.head
        width = head.in_channels
        head.weight.zero_()
        head.bias.zero_()
        if head.out_channels == 1:
            head.weight.fill_(1.0 / width)
        else:
            for j in range(head.out_channels):
                sources = [o for o in range(width) if o % in_channels == j % in_channels]
                if not sources:  # fewer hidden channels than inputs: copy what exists
                    sources = [j % width]
                head.weight[j, sources, 0, 0] = 1.0 / len(sources)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, H, W)`` -> ``(B, out, H, W)``."""
        return self.head(self.body(x))

    def receptive_field(self) -> int:
        """``1 + 2 * sum(dilations)``: 33 for the default depth 5."""
        return 1 + 2 * sum(self.dilations)

"""A :class:`Filter`: a chain of stages built from a spec, with its exact kernel when linear."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F

from img2img_filters.filters.base import Stage, kernel_range
from img2img_filters.filters.convolution import filter2d
from img2img_filters.filters.ops import GRAY_WEIGHTS

__all__ = ["Filter", "compose_kernels"]

INPUT_RANGE = (0.0, 1.0)


class Filter:
    """An image filter to imitate, applied to batches of RGB images.

    A filter is callable on a batch ``(B, 3, H, W)`` float32 RGB in [0, 1], on
    any device, and returns ``(B, C, H, W)``. It knows its spec, whether it is
    linear, its output range (for PSNR), its border mode and, when linear, its
    exact effective kernel from the RGB input (:attr:`kernel`).

    Example:
        >>> f = create_filter("study-sobel")
        >>> f(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
        >>> tuple(f.kernel.shape)
        (1, 3, 5, 5)
    """

    def __init__(self, spec: str, stages: list[Stage]) -> None:
        self.spec = spec
        self.stages = stages

    # -- description -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The spec as given (e.g. ``"study-sobel"``)."""
        return self.spec

    @cached_property
    def canonical(self) -> str:
        """The chain with every parameter written out: rebuilding from it gives the same filter."""
        return "|".join(stage.canonical() for stage in self.stages)

    @property
    def params(self) -> list[dict[str, Any]]:
        """The parameter values of each stage, in order."""
        return [{"name": stage.name, **stage.values} for stage in self.stages]

    @property
    def linear(self) -> bool:
        """Whether the whole chain is a linear operator of the RGB input."""
        return all(stage.linear for stage in self.stages)

    @property
    def backend(self) -> str:
        """``"pytorch"`` when every stage is batched on the device, else ``"opencv"``."""
        return "opencv" if any(s.backend == "opencv" for s in self.stages) else "pytorch"

    @property
    def border(self) -> str:
        """The border mode of the first stage that has one (``reflect101`` for pointwise chains)."""
        for stage in self.stages:
            if stage.border is not None:
                return stage.border
        return "reflect101"

    @property
    def out_channels(self) -> int:
        """Output channels for an RGB input: 1 for gray, 3 with ``channels=rgb``."""
        channels = 3
        for stage in self.stages:
            channels = stage.out_channels(channels)
        return channels

    @cached_property
    def output_range(self) -> tuple[float, float]:
        """``(low, high)``: bounds of the output for any input in [0, 1] (for PSNR).

        The linear stages at the head of the chain count as one kernel, whose
        positive and negative weights give the tightest bound; each later stage
        maps the range it receives. Bounds are exact in real arithmetic; float32
        evaluation may overshoot them by rounding (a few ulps).
        """
        head = 0
        while head < len(self.stages) and self.stages[head].linear:
            head += 1
        low, high = INPUT_RANGE
        if head:
            kernel = _chain_kernel(self.stages[:head]).numpy()
            ranges = [kernel_range(k, low, high) for k in kernel]
            low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        for stage in self.stages[head:]:
            low, high = stage.output_range(low, high)
        return float(low), float(high)

    @property
    def data_range(self) -> float:
        """``high - low`` of :attr:`output_range`: the ``data_range`` of PSNR and SSIM."""
        low, high = self.output_range
        return high - low

    @cached_property
    def kernel(self) -> torch.Tensor | None:
        """The exact effective correlation kernel ``(C, 3, kh, kw)``, float64, or ``None``.

        Grayscale conversion is included: ``f(x)`` equals ``conv2d(pad(x), f.kernel)``
        wherever the kernel's support lies inside the image, and everywhere when
        the chain has one spatial stage.
        """
        if not self.linear:
            return None
        return _chain_kernel(self.stages)

    @property
    def kernel_size(self) -> tuple[int, int] | None:
        """``(kh, kw)`` of :attr:`kernel`, or ``None`` for non-linear filters."""
        return None if self.kernel is None else tuple(self.kernel.shape[-2:])

    @property
    def radius(self) -> int:
        """How far an output pixel looks: the sum of the stages' radii (pixels on each side).

        A receptive field of ``2 * radius + 1`` covers the filter (Canny's hysteresis
        aside, which follows edges arbitrarily far).
        """
        return sum(stage.radius() for stage in self.stages)

    @property
    def min_size(self) -> int:
        """The smallest image side the filter accepts (1: OpenCV's borders extend any image)."""
        return max((stage.min_size() for stage in self.stages), default=1)

    # -- application -----------------------------------------------------------------------
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Apply the filter.

        Args:
            batch: ``(B, 3, H, W)`` float RGB in [0, 1].

        Returns:
            ``(B, C, H, W)`` of the batch's dtype (float32 for OpenCV stages), same device.

        Raises:
            TypeError: If ``batch`` is not a floating-point tensor.
            ValueError: If it is not ``(B, 3, H, W)`` or an image is smaller than
                :attr:`min_size` on a side.
        """
        if not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
            kind = (
                f"{batch.dtype} tensor" if isinstance(batch, torch.Tensor) else type(batch).__name__
            )
            raise TypeError(
                f"filter {self.spec!r}: expected a float torch.Tensor batch in [0, 1]; got {kind}"
            )
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(
                f"filter {self.spec!r}: expected a batch of shape (B, 3, H, W); got {tuple(batch.shape)}"
            )
        if min(batch.shape[-2:]) < self.min_size:
            raise ValueError(
                f"filter {self.spec!r}: image size must be at least {self.min_size}x{self.min_size} "
                f"pixels; got {batch.shape[-2]}x{batch.shape[-1]}"
            )
        if batch.shape[0] == 0:
            return batch.new_zeros((0, self.out_channels, *batch.shape[-2:]))
        x = batch
        for stage in self.stages:
            x = stage(x)
        return x

    def apply_kernel(self, batch: torch.Tensor) -> torch.Tensor:
        """Apply :attr:`kernel` as one convolution of the padded batch (the filter's border).

        Equals ``F.conv2d(pad2d(batch, ..., self.border), self.kernel)``: :func:`filter2d`
        with the 4-D kernel, depthwise convolutions summed over the input channels
        (PyTorch's fast path). With one spatial stage this is the filter itself (up
        to float rounding).

        Args:
            batch: ``(B, 3, H, W)`` float.

        Returns:
            ``(B, C, H, W)``.

        Raises:
            ValueError: If the filter is not linear.
        """
        if self.kernel is None:
            raise ValueError(f"filter {self.spec!r} is not linear: it has no kernel")
        return filter2d(batch, self.kernel, self.border)

    def describe(self) -> str:
        """One line: the canonical spec, linearity, output range and backend."""
        low, high = self.output_range
        kind = "linear" if self.linear else "non-linear"
        return f"{self.canonical} ({kind}, output range [{low:.4g}, {high:.4g}], {self.backend})"

    def __repr__(self) -> str:
        return f"Filter({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)


def _chain_kernel(stages: list[Stage]) -> torch.Tensor:
    """The composed kernel ``(C, 3, kh, kw)`` of linear stages applied to an RGB input.

    Small chains compose kernel by kernel (:func:`compose_kernels`). Past
    :data:`_DIRECT_AREA`, whose direct convolutions would cost the cube of the chain's
    length, every stage is multiplied in once in the Fourier domain at the final size:
    linear in the number of stages.
    """
    kernels = []
    channels = 3
    for stage in stages:
        kernels.append(_stage_kernel(stage, channels))
        channels = stage.out_channels(channels)
    kh = 1 + sum(k.shape[-2] - 1 for k in kernels)
    kw = 1 + sum(k.shape[-1] - 1 for k in kernels)
    kernel = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)
    if kh * kw <= _DIRECT_AREA:
        for stage_kernel in kernels:
            kernel = compose_kernels(kernel, stage_kernel)
        return kernel
    size = (_fast_length(kh), _fast_length(kw))
    spectrum = torch.fft.rfft2(kernel, s=size)
    for stage_kernel in kernels:
        spectrum = torch.einsum("mcxy,omxy->ocxy", spectrum, torch.fft.rfft2(stage_kernel, s=size))
    return torch.fft.irfft2(spectrum, s=size)[..., :kh, :kw].contiguous()


#: The composed kernel area (a 63x63 kernel) above which :func:`_chain_kernel` composes by FFT.
_DIRECT_AREA = 63 * 63


def _fast_length(n: int) -> int:
    """The smallest ``2**a * 3**b * 5**c >= n``: a length the FFT handles fast."""
    best = 2 ** max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            length = power35
            while length < n:
                length *= 2
            best = min(best, length)
            power35 *= 3
        power5 *= 5
    return best


def _stage_kernel(stage: Stage, channels: int) -> torch.Tensor:
    """A linear stage as a full kernel ``(C_out, C_in, kh, kw)`` for ``channels`` inputs."""
    kernel2d = torch.as_tensor(stage.kernel2d(), dtype=torch.float64)
    kh, kw = kernel2d.shape
    if stage.to_gray(channels):
        weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1)
        return weights * kernel2d.view(1, 1, kh, kw)
    eye = torch.eye(channels, dtype=torch.float64).view(channels, channels, 1, 1)
    return eye * kernel2d.view(1, 1, kh, kw)


def compose_kernels(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The kernel of ``second`` applied after ``first`` (both correlations), centred.

    Args:
        first: ``(M, C, ah, aw)``.
        second: ``(O, M, bh, bw)``.

    Returns:
        ``(O, C, ah + bh - 1, aw + bw - 1)``.
    """
    bh, bw = second.shape[-2:]
    # (C, M, ah, aw) as a batch of C images with M channels; full convolution with `second`.
    images = first.transpose(0, 1)
    padded = F.pad(images, (bw - 1, bw - 1, bh - 1, bh - 1))
    composed = F.conv2d(padded, second.flip(-1, -2))
    return composed.transpose(0, 1).contiguous()

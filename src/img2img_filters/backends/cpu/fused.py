"""Chains of few-channel "same" convolutions as fused CPU loops: the fused engine.

A network that is only a chain of small zero-padded convolutions and ReLU-like
activations (the study's 48-parameter network, the ``linear`` stack with zero
borders) spends a CPU training step on a few passes over memory per layer. Here
such a chain is written so that ``torch.compile`` turns each pass into one
vectorised loop with no index arithmetic:

* **A flat layout.** Every channel of a batch is one row of numbers: each photo
  padded with zeros on every side (as wide as the widest convolution's reach),
  the photos one after the other, and zeros before and after. A pixel's
  neighbour at ``(dy, dx)`` is then ``dy * padded_width + dx`` places away,
  whichever photo it is in.
* **A convolution is a sum of shifted slices**: for each tap, the input row
  shifted by the tap's offset, times the tap's weight. Each layer's output is
  computed over a range a little shorter than its input (by the layer's reach at
  each end), so no slice ever leaves the row, and is multiplied by a mask that is
  zero on the padding: the next layer sees zeros there, as ``F.conv2d``'s zero
  padding gives.
* **The loss on the same layout**: the targets are padded the same way, so the
  padding adds zero to an L1 or squared error; the sum is divided by the number
  of real output values, which is the usual mean.

``torch.compile`` (Inductor, a C++ compiler at run time) fuses each layer's
taps, mask and activation into one loop and derives the backward pass the same
way. Results equal the eager network's up to float32 rounding (the order of the
sums differs). The first step for each photo size compiles (seconds; Inductor
keeps the result in its on-disk cache for later runs); smaller batches, like an
epoch's last, run through the loops of the largest one, their missing photos
masked out.

>>> from img2img_filters import create_img2img_model
>>> model = create_img2img_model(3, 1)
>>> [type(layer).__name__ for layer in fusable_chain(model)]
['BorderConv2d', 'ReLU', 'BorderConv2d', 'ReLU', 'BorderConv2d']
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from img2img_filters.backends.cpu.limits import MAX_CHANNEL_PAIRS
from img2img_filters.models.layers import BorderConv2d

__all__ = [
    "FlatLayout",
    "FusedChainLoss",
    "FusedTrainer",
    "fusable_chain",
    "fused_loss",
    "loss_arguments",
]

_log = logging.getLogger(__name__)

#: Activations applied value by value that keep zero at zero (so padding stays zero).
ZERO_PRESERVING = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Identity)
#: Losses that add zero where output and target are both zero, by their ``reduction="sum"`` form.
SUM_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"l1": F.l1_loss, "mse": F.mse_loss}


def _defined_by(model: nn.Module, name: str) -> type | None:
    """The class in ``model``'s hierarchy that defines attribute ``name``."""
    for cls in type(model).__mro__:
        if name in vars(cls):
            return cls
    return None


def _plain(layer: nn.Module, kinds: tuple[type, ...]) -> bool:
    """Whether ``layer`` is one of ``kinds`` and computes what that class's ``forward`` does."""
    return any(isinstance(layer, kind) and type(layer).forward is kind.forward for kind in kinds)


def _fusable_conv(layer: nn.Module) -> bool:
    """A stride-1, groups-1 ``Conv2d`` with zero "same" padding, odd kernels, few channels."""
    if not _plain(layer, (nn.Conv2d, BorderConv2d)):
        return False
    if getattr(layer, "border", "constant") != "constant":
        return False
    if layer.padding_mode != "zeros" or layer.groups != 1 or tuple(layer.stride) != (1, 1):
        return False
    if layer.in_channels * layer.out_channels > MAX_CHANNEL_PAIRS:
        return False
    if layer.weight.dtype != torch.float32 or isinstance(layer.padding, str):
        return False
    for side, dilation, padding in zip(
        layer.kernel_size, layer.dilation, layer.padding, strict=True
    ):
        if side % 2 == 0 or padding != dilation * (side // 2):
            return False
    return True


def fusable_chain(model: nn.Module) -> list[nn.Module] | None:
    """The layers of ``model`` in the order its ``forward`` applies them, when all are fusable.

    A model qualifies when its forward is a plain chain: an ``nn.Sequential``, or a
    class whose ``layer_chain()`` method is defined beside its ``forward`` (the
    ``study`` and ``linear`` networks), of convolutions :func:`_fusable_conv` takes
    and activations in :data:`ZERO_PRESERVING`, with at least one convolution.

    Returns:
        The layers, or ``None`` when the model is anything else.
    """
    owner = _defined_by(model, "layer_chain")
    if _plain(model, (nn.Sequential,)):
        layers = list(model)
    elif owner is not None and owner is _defined_by(model, "forward"):
        layers = list(model.layer_chain())
    else:
        return None
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
    if not convs or not all(
        _fusable_conv(layer) or _plain(layer, ZERO_PRESERVING) for layer in layers
    ):
        return None
    return layers


class FlatLayout:
    """Where each pixel of a batch lies in the flat layout (see the module's docstring).

    A layout for ``batch`` photos also holds fewer: the first photos are used, the
    others are zeros and masked out (:meth:`mask`), so the last, smaller batch of
    an epoch runs through the same compiled loops.

    Args:
        batch: Photos ``B`` at most.
        height: Photo height ``H``.
        width: Photo width ``W``.
        pad: ``(rows, columns)`` of zeros around each photo.
        margin: Zeros before the first photo and after the last (for the inputs).
    """

    def __init__(
        self, batch: int, height: int, width: int, pad: tuple[int, int], margin: int
    ) -> None:
        self.batch, self.height, self.width = batch, height, width
        self.pad, self.margin = pad, margin
        self.padded = (height + 2 * pad[0], width + 2 * pad[1])
        self.length = batch * self.padded[0] * self.padded[1]  # the photos, without the margins
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}
        self._masks: dict[int, torch.Tensor] = {}

    def _interior(self, flat: torch.Tensor, margin: int) -> torch.Tensor:
        """``(C, B, H, W)`` view of the photos' pixels inside a flat ``(C, ...)`` tensor."""
        rows, columns = self.padded
        (ph, pw) = self.pad
        photos = flat[:, margin : margin + self.length].view(-1, self.batch, rows, columns)
        return photos[:, :, ph : ph + self.height, pw : pw + self.width]

    def _check(self, count: int) -> None:
        if not 0 < count <= self.batch:
            raise ValueError(f"this layout holds 1 to {self.batch} photos; got {count}")

    def mask(self, count: int) -> torch.Tensor:
        """``(1, margin + length + margin)``: one on the pixels of the first ``count`` photos."""
        mask = self._masks.get(count)
        if mask is None:
            self._check(count)
            mask = torch.zeros(1, 2 * self.margin + self.length, dtype=torch.float32)
            self._interior(mask, self.margin)[:, :count].fill_(1.0)
            self._masks[count] = mask
        return mask

    def pack(self, images: torch.Tensor, name: str, margin: int) -> torch.Tensor:
        """``(b, C, H, W)`` -> ``(C, margin + length + margin)``, zeros around each photo.

        The result is a buffer of this layout, reused by the next call with the same
        ``name`` and channel count (its zeros are written once); photos after the
        first ``b`` are set to zero.
        """
        count, channels = images.shape[:2]
        self._check(count)
        key = (name, channels)
        flat = self._buffers.get(key)
        if flat is None or flat.shape[1] != 2 * margin + self.length:
            flat = self._buffers[key] = torch.zeros(
                channels, 2 * margin + self.length, dtype=torch.float32
            )
        interior = self._interior(flat, margin)
        interior[:, :count].copy_(images.transpose(0, 1))
        if count < self.batch:
            interior[:, count:].zero_()
        return flat


def _taps(layer: nn.Conv2d, padded_width: int) -> list[tuple[int, int, int]]:
    """``(row, column, offset)`` of each kernel tap; offset relative to the output pixel."""
    (kh, kw), (dh, dw), (ph, pw) = layer.kernel_size, layer.dilation, layer.padding
    return [
        (i, j, (i * dh - ph) * padded_width + (j * dw - pw)) for i in range(kh) for j in range(kw)
    ]


def _reach(layer: nn.Conv2d, padded_width: int) -> int:
    """How far the farthest tap of a "same" convolution lies from its output pixel."""
    return layer.padding[0] * padded_width + layer.padding[1]


class FusedChainLoss(nn.Module):
    """A chain's forward pass and its loss on the flat layout, written for ``torch.compile``.

    Shares its layers (and so the parameters) with the model it came from.

    Args:
        layers: From :func:`fusable_chain`.
        layout: The batch's :class:`FlatLayout` (its margin: the sum of the layers' reaches).
        loss: ``"l1"`` or ``"mse"``.
    """

    def __init__(self, layers: list[nn.Module], layout: FlatLayout, loss: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.loss = loss
        width = layout.padded[1]
        convs = [layer if isinstance(layer, nn.Conv2d) else None for layer in layers]
        self.taps = [_taps(conv, width) if conv is not None else [] for conv in convs]
        self.reaches = [_reach(conv, width) if conv is not None else 0 for conv in convs]

    def outputs(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(C_in, margin + length + margin)`` -> ``(C_out, length)``, zero on the padding."""
        h = inputs
        for layer, taps, reach in zip(self.layers, self.taps, self.reaches, strict=True):
            if not taps:
                h = layer(h)
                continue
            size = h.shape[1] - 2 * reach
            weight, bias = layer.weight, layer.bias
            rows = []
            for o in range(weight.shape[0]):
                total = bias[o] if bias is not None else None
                for c in range(weight.shape[1]):
                    for i, j, offset in taps:
                        term = h[c, reach + offset : reach + offset + size] * weight[o, c, i, j]
                        total = term if total is None else total + term
                rows.append(total)
            start = (mask.shape[1] - size) // 2  # outputs are centred in the input's range
            h = torch.stack(rows) * mask[:, start : start + size]
        return h

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, count: torch.Tensor
    ) -> torch.Tensor:
        """The mean loss over the real output values.

        Args:
            inputs: Packed with the layout's margin, ``(C_in, margin + length + margin)``.
            targets: Packed without margins, ``(C_out, length)``.
            mask: The layout's :meth:`FlatLayout.mask` for the photos in the batch.
            count: The number of real output values (a 0-d float32 tensor, so that
                batches of any size share one compiled graph).
        """
        outputs = self.outputs(inputs, mask)
        return SUM_LOSSES[self.loss](outputs, targets, reduction="sum") / count


def fused_loss(
    layers: list[nn.Module], shape: tuple[int, ...], loss: str
) -> tuple[FlatLayout, FusedChainLoss]:
    """The layout and the (uncompiled) :class:`FusedChainLoss` for batches of up to ``shape``.

    Args:
        layers: From :func:`fusable_chain`.
        shape: The inputs' ``(B, C, H, W)``; batches of fewer photos fit too.
        loss: A key of :data:`SUM_LOSSES`.

    Returns:
        ``(layout, module)``: :func:`loss_arguments` packs a batch for ``module``,
        whose result is then the batch's mean loss.
    """
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
    pad = (max(c.padding[0] for c in convs), max(c.padding[1] for c in convs))
    batch, _, height, width = shape
    padded_width = width + 2 * pad[1]
    margin = sum(_reach(c, padded_width) for c in convs)
    layout = FlatLayout(batch, height, width, pad, margin)
    return layout, FusedChainLoss(layers, layout, loss)


def loss_arguments(
    layout: FlatLayout, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """``(inputs, targets, mask, count)`` for :class:`FusedChainLoss` from a ``(b, C, H, W)`` batch."""
    count = inputs.shape[0]
    values = count * targets.shape[1] * layout.height * layout.width
    return (
        layout.pack(inputs, "inputs", layout.margin),
        layout.pack(targets, "targets", 0),
        layout.mask(count),
        torch.tensor(float(values), dtype=torch.float32),
    )


class FusedTrainer:
    """Forward pass and loss of a fusable chain, compiled once per photo size.

    ``trainer(inputs, targets)`` returns the same mean loss as
    ``loss(model(inputs), targets)``, differentiable in the model's parameters.
    Batches of fewer photos than the largest seen so far (an epoch's last) reuse
    its compiled loops. If compiling fails (no C++ compiler, say), it warns once
    and from then on returns ``fallback(inputs, targets)``.

    Args:
        layers: From :func:`fusable_chain`.
        loss: A key of :data:`SUM_LOSSES`.
        fallback: The eager forward pass and loss (``None``: a compiler failure raises).
    """

    def __init__(
        self,
        layers: list[nn.Module],
        loss: str,
        fallback: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self.layers, self.loss, self.fallback = layers, loss, fallback
        self._compiled: dict[tuple[int, ...], tuple[FlatLayout, Callable[..., torch.Tensor]]] = {}
        self.failed: str | None = None

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` inputs, ``(B, C_out, H, W)`` targets -> the scalar mean loss."""
        if self.failed is not None and self.fallback is not None:
            return self.fallback(inputs, targets)
        batch, *size = inputs.shape
        entry = self._compiled.get(tuple(size))
        new = entry is None or entry[0].batch < batch
        if new:
            layout, module = fused_loss(self.layers, tuple(inputs.shape), self.loss)
            entry = self._compiled[tuple(size)] = (layout, torch.compile(module, dynamic=False))
        layout, step = entry
        try:
            return step(*loss_arguments(layout, inputs, targets))
        except Exception as error:  # the first call of a layout compiles: a failure there
            if not new or self.fallback is None:  # trains uncompiled; any other is raised
                raise
            first_line = (str(error).strip().splitlines() or [""])[0]
            self.failed = f"{type(error).__name__}: {first_line}"
            _log.warning(
                "compile=True could not compile the network (%s); training without compiling "
                "(torch.compile needs a working C++ compiler on the CPU)",
                self.failed,
            )
            return self.fallback(inputs, targets)

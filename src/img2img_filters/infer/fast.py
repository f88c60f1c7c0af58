"""The folded fast path: a linear model as one kernel, applied with OpenCV.

A linear model computes ``y[o] = sum_c K[o, c] * x[c] + bias[o]`` (correlation,
kernel centred) with one kernel ``K`` of shape ``(C_out, C_in, kh, kw)``
(:func:`img2img_filters.solve.fold_linear`). For each output channel:

* when the kernel's dependence on the input channel has rank one,
  ``K[o, c] = w[c] * k`` (every filter of a gray image: ``w`` holds the gray
  weights), the weighted gray image ``sum_c w[c] x[c]`` is made once
  (``cv2.transform``) and filtered once: with ``cv2.sepFilter2D`` when ``k`` is
  separable itself (rank one by SVD, reconstruction error below
  :data:`SEPARABLE_TOLERANCE` relative), else with ``cv2.filter2D``, both through
  :func:`img2img_filters.filters.convolution.filter2d`;
* otherwise every input channel is filtered with its own kernel and the results
  summed.

The input's integer scale (1/255, 1/65535) is folded into ``w``. Borders use the
model's OpenCV border flag; OpenCV's filters have no ``BORDER_WRAP``, so
:func:`~img2img_filters.filters.convolution.filter2d` pads that border explicitly
with ``cv2.copyMakeBorder`` first.

This equals the network exactly, borders included, when the model is a single
convolution (:func:`folds_exactly`). A deeper linear stack pads between its
layers, which one convolution cannot reproduce near the borders: folded, it
equals the network only at least ``receptive_field // 2`` pixels from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from torch import nn

from img2img_filters.border import CV2_BORDER_FLAGS
from img2img_filters.filters.convolution import filter2d
from img2img_filters.infer.convert import input_scale
from img2img_filters.infer.tiling import model_borders
from img2img_filters.solve import fold_linear

__all__ = [
    "RANK_TOLERANCE",
    "SEPARABLE_TOLERANCE",
    "FoldedFilter",
    "folds_exactly",
]

#: Largest ``s[1] / s[0]`` (singular values) for which a matrix counts as rank one.
RANK_TOLERANCE = 1e-7

#: Largest relative Frobenius error of a separable reconstruction ``ky kx^T`` of ``k``.
SEPARABLE_TOLERANCE = 1e-7


def _convolutions(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def folds_exactly(model: nn.Module) -> bool:
    """Whether folding ``model`` gives the network's output at the borders too.

    True for a linear model (``is_linear``) whose only layer is one stride-1
    convolution that keeps the size and pads with one border mode: a depth-1
    ``"linear"`` model.

    Args:
        model: Any network.

    Returns:
        Whether the folded fast path is exact for ``model``.
    """
    if not getattr(model, "is_linear", False):
        return False
    convolutions = _convolutions(model)
    if len(convolutions) != 1:
        return False
    conv = convolutions[0]
    kh, kw = conv.kernel_size
    if tuple(conv.stride) != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
        return False
    halo = (conv.dilation[0] * (kh // 2), conv.dilation[1] * (kw // 2))
    padded = getattr(conv, "halo", None)
    if padded is not None:  # BorderConv2d pads ``halo`` on each side itself
        return (padded, padded) == halo
    return tuple(conv.padding) == halo if not isinstance(conv.padding, str) else False


@dataclass(frozen=True)
class _Plan:
    """How one output channel is computed from ``C_in`` input channels."""

    bias: float
    weights: np.ndarray | None  # (C_in,) channel weights (rank one) or None
    kernel: np.ndarray | None  # (kh, kw) spatial kernel (rank one)
    separable: tuple[np.ndarray, np.ndarray] | None  # (ky (kh,), kx (kw,)) of ``kernel``
    kernels: np.ndarray | None  # (C_in, kh, kw) (full rank)

    @property
    def method(self) -> str:
        if self.weights is None:
            return "filter2D per input channel"
        return "gray + sepFilter2D" if self.separable is not None else "gray + filter2D"


def _rank_one(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(u, v)`` with ``matrix = outer(u, v)`` when ``matrix`` has rank one, else ``None``."""
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    if s[0] == 0:
        return np.zeros(matrix.shape[0]), np.zeros(matrix.shape[1])
    if len(s) > 1 and s[1] > RANK_TOLERANCE * s[0]:
        return None
    root = np.sqrt(s[0])
    return u[:, 0] * root, vt[0] * root


def _plan(kernel: np.ndarray, bias: float) -> _Plan:
    """Plan one output channel from its kernel ``(C_in, kh, kw)`` float64."""
    channels, kh, kw = kernel.shape
    factors = _rank_one(kernel.reshape(channels, kh * kw))
    if factors is None:
        return _Plan(bias, None, None, None, kernel.astype(np.float32))
    weights, flat = factors
    spatial = flat.reshape(kh, kw)
    separable = None
    split = _rank_one(spatial)
    if split is not None:
        ky, kx = split
        norm = np.linalg.norm(spatial)
        error = np.linalg.norm(np.outer(ky, kx) - spatial)
        if norm == 0 or error <= SEPARABLE_TOLERANCE * norm:
            separable = (ky.astype(np.float32), kx.astype(np.float32))
    return _Plan(bias, weights, spatial.astype(np.float32), separable, None)


class FoldedFilter:
    """A linear filter ``(C_out, C_in, kh, kw)`` + bias applied to images with OpenCV.

    Args:
        kernel: ``(C_out, C_in, kh, kw)`` correlation kernel (odd sides), float.
        bias: ``(C_out,)``.
        border: The border mode (OpenCV's names, :data:`img2img_filters.border.BORDER_MODES`).
        exact: Whether this equals the model it came from at the borders too.

    Example:
        >>> import numpy as np
        >>> box = np.full((1, 3, 3, 3), 1 / 27)
        >>> FoldedFilter(box, np.zeros(1), "reflect101")(np.ones((4, 5, 3))).shape
        (4, 5, 1)
    """

    def __init__(
        self, kernel: np.ndarray, bias: np.ndarray, border: str, *, exact: bool = True
    ) -> None:
        kernel = np.asarray(kernel, dtype=np.float64)
        bias = np.asarray(bias, dtype=np.float64)
        if kernel.ndim != 4 or kernel.shape[-1] % 2 == 0 or kernel.shape[-2] % 2 == 0:
            raise ValueError(
                f"kernel must be (C_out, C_in, kh, kw) with odd kh and kw; got {kernel.shape}"
            )
        if bias.shape != (kernel.shape[0],):
            raise ValueError(f"bias must have shape ({kernel.shape[0]},); got {bias.shape}")
        if border not in CV2_BORDER_FLAGS:
            raise ValueError(f"border must be one of {sorted(CV2_BORDER_FLAGS)}; got {border!r}")
        self.kernel = kernel
        self.bias = bias
        self.border = border
        self.exact = exact
        self.in_channels = kernel.shape[1]
        self.out_channels = kernel.shape[0]
        self.halo = (kernel.shape[2] // 2, kernel.shape[3] // 2)
        # Plans for an RGB input and for a gray one (its channel repeated: kernels summed).
        self._plans = {
            self.in_channels: [_plan(kernel[o], float(bias[o])) for o in range(kernel.shape[0])]
        }
        if self.in_channels == 3:
            summed = kernel.sum(axis=1, keepdims=True)
            self._plans[1] = [_plan(summed[o], float(bias[o])) for o in range(kernel.shape[0])]

    @classmethod
    def from_model(cls, model: nn.Module) -> FoldedFilter:
        """Fold a linear model (see :func:`img2img_filters.solve.fold_linear`).

        Args:
            model: A linear model: ``is_linear`` true, convolutions only.

        Returns:
            The folded filter; ``exact`` says whether the borders match the network.

        Raises:
            ValueError: If the model is not linear, or pads with several border modes.
        """
        if not getattr(model, "is_linear", False):
            raise ValueError(
                f"fast=True needs a linear model; {type(model).__name__} is not linear "
                "(use fast=None or fast=False)"
            )
        borders = model_borders(model) or {"constant"}
        if len(borders) > 1:
            raise ValueError(f"cannot fold a model that pads with several borders: {borders}")
        kernel, bias = fold_linear(model)
        return cls(kernel.numpy(), bias.numpy(), borders.pop(), exact=folds_exactly(model))

    @property
    def methods(self) -> list[str]:
        """How each output channel of an RGB input is computed."""
        return [plan.method for plan in self._plans[self.in_channels]]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Filter an image.

        Args:
            image: ``(H, W, C)`` (``C`` = 1, 3 or 4; the alpha channel is dropped),
                uint8, uint16 or float, scaled to [0, 1] as in :mod:`img2img_filters.infer.convert`.

        Returns:
            ``(H, W, C_out)`` float32.
        """
        if image.shape[-1] == 4:
            image = image[..., :3]
        channels = image.shape[-1]
        plans = self._plans.get(channels)
        if plans is None:
            raise ValueError(
                f"image has {channels} channels; this filter takes {self.in_channels} (or 1)"
            )
        scale = 1.0 / input_scale(image.dtype)
        if image.dtype not in (np.uint8, np.uint16, np.float32):
            image = image.astype(np.float32)  # OpenCV filters other floats in float32 too
        floats: np.ndarray | None = None
        planes: list[np.ndarray] | None = None
        grays: dict[bytes, np.ndarray] = {}
        results = []
        for plan in plans:
            if plan.weights is not None:
                weights = plan.weights * scale
                key = weights.tobytes()
                if key not in grays:
                    if channels == 1:
                        gray = np.multiply(image[..., 0], np.float32(weights[0]), dtype=np.float32)
                    else:
                        if floats is None:
                            floats = np.ascontiguousarray(image, dtype=np.float32)
                        gray = cv2.transform(floats, weights.astype(np.float32)[None])
                    grays[key] = gray
                result = self._filter(grays[key], plan.kernel, plan.separable)
            else:
                if planes is None:
                    planes = cv2.split(np.ascontiguousarray(image))
                result = self._filter(planes[0], plan.kernels[0] * np.float32(scale), None)
                for plane, kernel in zip(planes[1:], plan.kernels[1:], strict=True):
                    result += self._filter(plane, kernel * np.float32(scale), None)
            if plan.bias:
                result += np.float32(plan.bias)
            results.append(result)
        if len(results) == 1:
            return results[0][..., None]
        return np.stack(results, axis=-1)

    def _filter(
        self,
        plane: np.ndarray,
        kernel: np.ndarray,
        separable: tuple[np.ndarray, np.ndarray] | None,
    ) -> np.ndarray:
        """Correlate one ``(H, W)`` plane (any depth OpenCV filters) into float32."""
        return filter2d(plane, separable if separable is not None else kernel, self.border)

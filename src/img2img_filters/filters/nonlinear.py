"""Non-linear filters: gradient magnitude, median, bilateral, morphology, Canny, pointwise maps.

Where a batched PyTorch version equals OpenCV (magnitude up to float32
rounding; morphology, threshold, abs and clip exactly, since they only pick,
compare or negate values) it runs on the batch's device; median, bilateral and
Canny call OpenCV image by image on the CPU and return to the batch's device.
Each docstring says which.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from img2img_filters.border import CV2_BORDER_FLAGS
from img2img_filters.filters.base import Param, Stage, register_filter
from img2img_filters.filters.convolution import filter2d
from img2img_filters.filters.linear import ODD_KSIZE, _check_odd_ksize, _deriv_kernel
from img2img_filters.filters.ops import morphology, per_image_opencv

__all__ = ["MORPH_SHAPES", "THRESHOLD_TYPES"]

#: Structuring element shapes, by their spec names.
MORPH_SHAPES: dict[str, int] = {
    "rect": cv2.MORPH_RECT,
    "ellipse": cv2.MORPH_ELLIPSE,
    "cross": cv2.MORPH_CROSS,
}


def _uint8_range(low: float, high: float) -> tuple[float, float]:
    """The range of ``round(255 x) / 255`` clipped to [0, 1] for ``x`` in ``[low, high]``."""
    lo = min(max(math.floor(255.0 * low) / 255.0, 0.0), 1.0)
    hi = min(max(math.ceil(255.0 * high) / 255.0, 0.0), 1.0)
    return lo, hi


@register_filter
class Magnitude(Stage):
    """Sobel gradient magnitude, equal to ``cv2.magnitude(cv2.Sobel(dx=1), cv2.Sobel(dy=1))``.

    Both derivatives are float32 ``cv2.Sobel`` with the same ``ksize`` and border;
    PyTorch, batched on the batch's device.
    """

    name = "magnitude"
    description = "gradient magnitude sqrt(Sobel_x^2 + Sobel_y^2) (cv2.Sobel + cv2.magnitude)"
    params = (Param("ksize", int, 3, "Sobel aperture size", (1, 3, 5, 7)),)

    def _kernels(self) -> tuple[np.ndarray, np.ndarray]:
        ksize = self.values["ksize"]
        return _deriv_kernel(1, 0, ksize), _deriv_kernel(0, 1, ksize)

    def radius(self) -> int:
        return max(self.values["ksize"], 3) // 2

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        kx, ky = self._kernels()
        border = self.values["border"]
        gx = filter2d(x, kx, border)
        gy = filter2d(x, ky, border)
        return torch.sqrt(gx * gx + gy * gy)

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        # Each derivative kernel sums to zero, so it spans half its absolute sum
        # times the input's spread; the magnitude is at most sqrt(2) times that.
        kx, ky = self._kernels()
        spread = high - low
        gx = float(np.abs(kx).sum()) / 2.0 * spread
        gy = float(np.abs(ky).sum()) / 2.0 * spread
        return 0.0, math.hypot(gx, gy)


@register_filter
class Median(Stage):
    """Median blur, equal to ``cv2.medianBlur`` on the uint8 image; OpenCV, per image.

    The batch becomes uint8 as ``round(255 x)``; an RGB input becomes gray with
    ``cv2.cvtColor`` on uint8, as OpenCV does for an 8-bit photo (``channels=rgb``
    filters the three channels). The output is the uint8 median divided by 255.
    OpenCV's median always replicates the border.
    """

    name = "median"
    description = "median blur on the uint8 image (cv2.medianBlur; border replicate)"
    params = (Param("ksize", int, 3, "aperture size", (3, 5)),)
    borders = ("replicate",)
    backend = "opencv"

    def radius(self) -> int:
        return self.values["ksize"] // 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ksize = self.values["ksize"]
        gray = self.to_gray(x.shape[1])

        def run(image: np.ndarray) -> np.ndarray:
            if gray:
                image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            return cv2.medianBlur(image, ksize)

        return per_image_opencv(x, run, as_uint8=True)

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        return _uint8_range(low, high)


@register_filter
class Bilateral(Stage):
    """Bilateral filter, equal to ``cv2.bilateralFilter`` on the float32 image; OpenCV, per image.

    The gray image is :func:`~img2img_filters.filters.ops.rgb_to_gray` (OpenCV's
    conversion); ``channels=rgb`` filters each channel on its own.
    ``sigma_color`` is in intensity units of the [0, 1] image.
    """

    name = "bilateral"
    description = "edge-preserving bilateral filter on float32 (cv2.bilateralFilter)"
    params = (
        Param("d", int, 5, "diameter of the neighbourhood", allowed="odd, 1-15"),
        Param("sigma_color", float, 0.1, "range sigma, in [0, 1] intensity units", allowed="> 0"),
        Param("sigma_space", float, 2.0, "spatial sigma, in pixels", allowed="> 0"),
    )
    borders = ("reflect101", "reflect", "replicate", "constant", "wrap")
    backend = "opencv"

    def validate(self) -> None:
        d = self.values["d"]
        if d < 1 or d > 15 or d % 2 == 0:
            self.fail("d", "an odd integer from 1 to 15", d)
        for key in ("sigma_color", "sigma_space"):
            if self.values[key] <= 0:
                self.fail(key, "a number > 0", self.values[key])

    def radius(self) -> int:
        return self.values["d"] // 2

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        v = self.values
        flag = CV2_BORDER_FLAGS[v["border"]]

        def run(image: np.ndarray) -> np.ndarray:
            if image.ndim == 3:  # channels=rgb: each channel on its own
                return np.stack([run(image[..., c]) for c in range(image.shape[-1])], axis=-1)
            return cv2.bilateralFilter(
                image, v["d"], v["sigma_color"], v["sigma_space"], borderType=flag
            )

        return per_image_opencv(x, run)


class _Morphology(Stage):
    """Shared parameters of dilate, erode, open and close; PyTorch, batched, exact.

    ``border=constant`` pads with zeros (``borderValue=0``), as everywhere in
    img2img; OpenCV's own default for morphology ignores the outside instead.
    OpenCV has no ``BORDER_WRAP`` for morphology.
    """

    params = (
        Param("ksize", int, 3, "structuring element size", allowed=ODD_KSIZE),
        Param("shape", str, "rect", "structuring element shape", tuple(MORPH_SHAPES)),
    )
    borders = ("reflect101", "reflect", "replicate", "constant")
    steps: tuple[str, ...] = ()

    def validate(self) -> None:
        _check_odd_ksize(self)

    def mask(self) -> np.ndarray:
        """The structuring element ``(ksize, ksize)`` of 0/1 (``cv2.getStructuringElement``)."""
        ksize = self.values["ksize"]
        return cv2.getStructuringElement(MORPH_SHAPES[self.values["shape"]], (ksize, ksize))

    def radius(self) -> int:
        return len(self.steps) * (self.values["ksize"] // 2)

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask()
        for op in self.steps:
            x = morphology(x, mask, self.values["border"], op)
        return x


@register_filter
class Dilate(_Morphology):
    """Dilation, equal to ``cv2.dilate`` with the same border; PyTorch, batched, exact."""

    name = "dilate"
    description = "dilation: maximum over the structuring element (cv2.dilate)"
    steps = ("max",)


@register_filter
class Erode(_Morphology):
    """Erosion, equal to ``cv2.erode`` with the same border; PyTorch, batched, exact."""

    name = "erode"
    description = "erosion: minimum over the structuring element (cv2.erode)"
    steps = ("min",)


@register_filter
class Open(_Morphology):
    """Opening, equal to ``cv2.morphologyEx(MORPH_OPEN)``; PyTorch, batched, exact."""

    name = "open"
    description = "opening: erode then dilate (cv2.morphologyEx MORPH_OPEN)"
    steps = ("min", "max")


@register_filter
class Close(_Morphology):
    """Closing, equal to ``cv2.morphologyEx(MORPH_CLOSE)``; PyTorch, batched, exact."""

    name = "close"
    description = "closing: dilate then erode (cv2.morphologyEx MORPH_CLOSE)"
    steps = ("max", "min")


@register_filter
class Canny(Stage):
    """Canny edges, equal to ``cv2.Canny`` on the uint8 image, output 0/1; OpenCV, per image.

    The batch becomes uint8 as ``round(255 x)``; an RGB input becomes gray with
    ``cv2.cvtColor`` on uint8 (``channels=rgb``: one edge map per channel).
    Thresholds are in OpenCV's units: gradients of the 0-255 image. Canny's
    Sobel replicates the border.
    """

    name = "canny"
    description = "Canny edge map on the uint8 image, 0/1 output (cv2.Canny)"
    params = (
        Param(
            "low", float, 100.0, "lower hysteresis threshold (0-255 gradient units)", allowed=">= 0"
        ),
        Param("high", float, 200.0, "upper hysteresis threshold", allowed=">= low"),
        Param("aperture", int, 3, "Sobel aperture size", (3, 5, 7)),
        Param("l2gradient", bool, False, "use the exact L2 gradient magnitude"),
    )
    borders = ("replicate",)
    backend = "opencv"

    def validate(self) -> None:
        low, high = self.values["low"], self.values["high"]
        if low < 0:
            self.fail("low", "a number >= 0", low)
        if high < low:
            self.fail("high", f"a number >= low ({low})", high)

    def radius(self) -> int:
        # the Sobel aperture, then non-maximum suppression; hysteresis may reach further
        return self.values["aperture"] // 2 + 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = self.values
        gray = self.to_gray(x.shape[1])

        def run(image: np.ndarray) -> np.ndarray:
            if gray:
                image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            if image.ndim == 3:
                return np.stack([run(image[..., c]) for c in range(image.shape[-1])], axis=-1)
            return cv2.Canny(  # 0 or 255; divided by 255 on the way back: exactly 0 or 1
                image, v["low"], v["high"], apertureSize=v["aperture"], L2gradient=v["l2gradient"]
            )

        return per_image_opencv(x, run, as_uint8=True)

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        return 0.0, 1.0


#: Threshold types, by their spec names (OpenCV's ``THRESH_*``).
THRESHOLD_TYPES: dict[str, int] = {
    "binary": cv2.THRESH_BINARY,
    "binary_inv": cv2.THRESH_BINARY_INV,
    "trunc": cv2.THRESH_TRUNC,
    "tozero": cv2.THRESH_TOZERO,
    "tozero_inv": cv2.THRESH_TOZERO_INV,
}


@register_filter
class Threshold(Stage):
    """Threshold, equal to ``cv2.threshold(x, thresh, maxval, type)`` on float32; PyTorch, exact.

    ``thresh`` and ``maxval`` are compared and written as float32, as OpenCV does.
    """

    name = "threshold"
    description = "fixed threshold (cv2.threshold): binary, binary_inv, trunc, tozero, tozero_inv"
    spatial = False
    params = (
        Param("thresh", float, 0.5, "threshold: values above it count as above"),
        Param("maxval", float, 1.0, "value given by binary types"),
        Param("type", str, "binary", "threshold type", tuple(THRESHOLD_TYPES)),
    )

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        v = self.values
        thresh = torch.tensor(v["thresh"], dtype=x.dtype, device=x.device)
        maxval = torch.tensor(v["maxval"], dtype=x.dtype, device=x.device)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        above = x > thresh
        kind = v["type"]
        if kind == "binary":
            return torch.where(above, maxval, zero)
        if kind == "binary_inv":
            return torch.where(above, zero, maxval)
        if kind == "trunc":
            return torch.where(above, thresh, x)
        if kind == "tozero":
            return torch.where(above, x, zero)
        return torch.where(above, zero, x)

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        v = self.values
        if v["type"] in ("binary", "binary_inv"):
            return min(0.0, v["maxval"]), max(0.0, v["maxval"])
        if v["type"] == "trunc":
            return min(low, v["thresh"]), min(high, v["thresh"])
        return min(low, 0.0), max(high, 0.0)


@register_filter
class Abs(Stage):
    """Absolute value, equal to ``cv2.absdiff(x, 0)`` on float32; PyTorch, exact."""

    name = "abs"
    description = "absolute value |x| (cv2.absdiff with 0), e.g. after a derivative"
    spatial = False

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        if low >= 0:
            return low, high
        if high <= 0:
            return -high, -low
        return 0.0, max(-low, high)


@register_filter
class Clip(Stage):
    """Clipping to ``[min, max]``, equal to ``cv2.min(cv2.max(x, min), max)`` on float32; PyTorch, exact."""

    name = "clip"
    description = "clip values to [min, max] (cv2.max then cv2.min)"
    spatial = False
    params = (
        Param("min", float, 0.0, "lower bound"),
        Param("max", float, 1.0, "upper bound", allowed=">= min"),
    )

    def validate(self) -> None:
        if self.values["max"] < self.values["min"]:
            self.fail("max", f"a number >= min ({self.values['min']})", self.values["max"])

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.values["min"], self.values["max"])

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        lo, hi = self.values["min"], self.values["max"]
        return min(max(low, lo), hi), max(min(high, hi), lo)

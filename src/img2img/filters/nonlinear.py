"""Non-linear filters: gradient magnitude, median, bilateral, morphology, Canny, pointwise maps.

Where a batched PyTorch version equals OpenCV exactly (magnitude up to float32
rounding; morphology, threshold, abs and clip exactly) it runs on the batch's
device; median, bilateral and Canny call OpenCV image by image on the CPU.
Each docstring says which.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from img2img.border import CV2_BORDER_FLAGS
from img2img.filters.base import Param, Stage, register_filter
from img2img.filters.linear import _deriv_kernel
from img2img.filters.ops import correlate, morphology, per_image_opencv

_SHAPES = {"rect": cv2.MORPH_RECT, "ellipse": cv2.MORPH_ELLIPSE, "cross": cv2.MORPH_CROSS}


@register_filter
class Magnitude(Stage):
    """Sobel gradient magnitude ``cv2.magnitude(Sobel dx=1, Sobel dy=1)``; PyTorch, batched."""

    name = "magnitude"
    description = "gradient magnitude sqrt(Sobel_x^2 + Sobel_y^2) (cv2.Sobel + cv2.magnitude)"
    params = (Param("ksize", int, 3, "Sobel aperture size", (1, 3, 5, 7)),)

    def _kernels(self) -> tuple[np.ndarray, np.ndarray]:
        ksize = self.values["ksize"]
        return _deriv_kernel(1, 0, ksize), _deriv_kernel(0, 1, ksize)

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        kx, ky = self._kernels()
        border = self.values["border"]
        gx = correlate(x, kx, border)
        gy = correlate(x, ky, border)
        return torch.sqrt(gx * gx + gy * gy)

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        kx, _ = self._kernels()
        return 0.0, math.sqrt(2.0) * float(np.abs(kx).sum()) / 2.0 * (high - low)


@register_filter
class Median(Stage):
    """Median blur, ``cv2.medianBlur`` on the uint8 image (``round(255 x)``); OpenCV per image.

    OpenCV's median always replicates the border. RGB input becomes gray with
    ``cv2.cvtColor`` on uint8, as OpenCV does for an 8-bit photo.
    """

    name = "median"
    description = "median blur on the uint8 image (cv2.medianBlur; border replicate)"
    params = (Param("ksize", int, 3, "aperture size", (3, 5)),)
    borders = ("replicate",)
    backend = "opencv"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ksize = self.values["ksize"]
        gray = x.shape[1] == 3 and not self.per_channel

        def run(image: np.ndarray) -> np.ndarray:
            if gray:
                image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            return cv2.medianBlur(image, ksize)

        return per_image_opencv(x, run, as_uint8=True)

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        return max(low, 0.0), min(high, 1.0)


@register_filter
class Bilateral(Stage):
    """Bilateral filter ``cv2.bilateralFilter`` on the float32 image; OpenCV per image.

    ``sigma_color`` is in intensity units of the [0, 1] image.
    """

    name = "bilateral"
    description = "edge-preserving bilateral filter on float32 (cv2.bilateralFilter)"
    params = (
        Param("d", int, 5, "diameter of the neighbourhood (odd, 1-15)"),
        Param("sigma_color", float, 0.1, "range sigma, in [0, 1] intensity units"),
        Param("sigma_space", float, 2.0, "spatial sigma, in pixels"),
    )
    borders = ("reflect101", "reflect", "replicate", "constant", "wrap")
    backend = "opencv"

    def validate(self) -> None:
        d = self.values["d"]
        if d < 1 or d > 15 or d % 2 == 0:
            self.fail("d", "an odd integer from 1 to 15", d)
        for key in ("sigma_color", "sigma_space"):
            if self.values[key] <= 0:
                self.fail(key, "positive", self.values[key])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = self.values
        flag = CV2_BORDER_FLAGS[v["border"]]
        gray = x.shape[1] == 3 and not self.per_channel

        def run(image: np.ndarray) -> np.ndarray:
            if gray:
                image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            if image.ndim == 3:  # channels=rgb: each channel on its own
                return np.stack([run_one(image[..., c]) for c in range(image.shape[-1])], axis=-1)
            return run_one(image)

        def run_one(image: np.ndarray) -> np.ndarray:
            return cv2.bilateralFilter(
                image, v["d"], v["sigma_color"], v["sigma_space"], borderType=flag
            )

        return per_image_opencv(x, run)


class _Morphology(Stage):
    """Shared parameters of dilate, erode, open and close; PyTorch, batched, exact."""

    params = (
        Param("ksize", int, 3, "structuring element size, odd"),
        Param("shape", str, "rect", "structuring element shape", tuple(_SHAPES)),
    )
    # OpenCV's BORDER_CONSTANT for morphology means "ignore the outside", and it has no WRAP.
    borders = ("reflect101", "reflect", "replicate")
    steps: tuple[str, ...] = ()

    def validate(self) -> None:
        ksize = self.values["ksize"]
        if ksize < 1 or ksize % 2 == 0 or ksize > 31:
            self.fail("ksize", "an odd integer from 1 to 31", ksize)

    def mask(self) -> np.ndarray:
        """The structuring element ``(ksize, ksize)`` of 0/1 (``cv2.getStructuringElement``)."""
        ksize = self.values["ksize"]
        return cv2.getStructuringElement(_SHAPES[self.values["shape"]], (ksize, ksize))

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
    """Canny edges, ``cv2.Canny`` on the uint8 image, output 0/1; OpenCV per image.

    Thresholds are in uint8 gradient units, as in OpenCV.
    """

    name = "canny"
    description = "Canny edge map on the uint8 image, 0/1 output (cv2.Canny)"
    params = (
        Param("low", float, 100.0, "lower hysteresis threshold"),
        Param("high", float, 200.0, "upper hysteresis threshold"),
        Param("aperture", int, 3, "Sobel aperture size", (3, 5, 7)),
        Param("l2gradient", bool, False, "use the exact L2 gradient magnitude"),
    )
    borders = ("replicate",)
    backend = "opencv"

    def validate(self) -> None:
        low, high = self.values["low"], self.values["high"]
        if low < 0:
            self.fail("low", "non-negative", low)
        if high < low:
            self.fail("high", f"at least low={low}", high)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = self.values
        gray = x.shape[1] == 3 and not self.per_channel

        def run(image: np.ndarray) -> np.ndarray:
            if gray:
                image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            if image.ndim == 3:
                return np.stack([run(image[..., c]) for c in range(image.shape[-1])], axis=-1)
            return cv2.Canny(
                image, v["low"], v["high"], apertureSize=v["aperture"], L2gradient=v["l2gradient"]
            )

        return per_image_opencv(x, run, as_uint8=True)

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        return 0.0, 1.0


_THRESHOLD_TYPES = ("binary", "binary_inv", "trunc", "tozero", "tozero_inv")


@register_filter
class Threshold(Stage):
    """Threshold, equal to ``cv2.threshold(x, thresh, maxval, type)`` on float32; PyTorch, exact."""

    name = "threshold"
    description = "fixed threshold (cv2.threshold): binary, binary_inv, trunc, tozero, tozero_inv"
    spatial = False
    params = (
        Param("thresh", float, 0.5, "threshold"),
        Param("maxval", float, 1.0, "value given by binary types"),
        Param("type", str, "binary", "threshold type", _THRESHOLD_TYPES),
    )

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        v = self.values
        above = x > v["thresh"]
        kind = v["type"]
        if kind == "binary":
            return torch.where(above, v["maxval"], 0.0).to(x.dtype)
        if kind == "binary_inv":
            return torch.where(above, 0.0, v["maxval"]).to(x.dtype)
        if kind == "trunc":
            return torch.where(above, torch.full_like(x, v["thresh"]), x)
        if kind == "tozero":
            return torch.where(above, x, torch.zeros_like(x))
        return torch.where(above, torch.zeros_like(x), x)

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
    """Clipping to ``[min, max]``, equal to ``np.clip`` / ``cv2.min(cv2.max(x, min), max)``; exact."""

    name = "clip"
    description = "clip values to [min, max]"
    spatial = False
    params = (
        Param("min", float, 0.0, "lower bound"),
        Param("max", float, 1.0, "upper bound"),
    )

    def validate(self) -> None:
        if self.values["max"] < self.values["min"]:
            self.fail("max", f"at least min={self.values['min']}", self.values["max"])

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.values["min"], self.values["max"])

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        lo, hi = self.values["min"], self.values["max"]
        return min(max(low, lo), hi), max(min(high, hi), lo)

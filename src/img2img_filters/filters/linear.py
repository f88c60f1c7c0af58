"""Linear filters, computed in PyTorch from OpenCV's own kernel generators.

Every stage here is a correlation with a kernel built by ``cv2.getDerivKernels``,
``cv2.getGaussianKernel`` or written as OpenCV documents it, applied on the
batch's device by :func:`img2img_filters.filters.convolution.filter2d`. Parity with the OpenCV
function each names is exact up to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from img2img_filters.filters.base import Param, Stage, register_filter, register_preset
from img2img_filters.filters.kernels import (
    MAX_KSIZE,
    _centre,
    _deriv_kernel,
    _gaussian_kernel,
    load_kernel_file,
    parse_kernel_rows,
    random_kernel,
)

__all__ = ["MAX_KSIZE", "load_kernel_file", "parse_kernel_rows", "random_kernel"]

ODD_KSIZE = f"odd, 1-{MAX_KSIZE}"


def _check_odd_ksize(stage: Stage, key: str = "ksize") -> None:
    """Fail unless ``stage.values[key]`` is an odd integer from 1 to :data:`MAX_KSIZE`."""
    ksize = stage.values[key]
    if ksize < 1 or ksize % 2 == 0 or ksize > MAX_KSIZE:
        stage.fail(key, f"an odd integer from 1 to {MAX_KSIZE}", ksize)


def _check_non_negative(stage: Stage, *keys: str) -> None:
    """Fail unless every ``stage.values[key]`` is at least 0."""
    for key in keys:
        if stage.values[key] < 0:
            stage.fail(key, "a number >= 0", stage.values[key])


@register_filter
class Gray(Stage):
    """RGB to grayscale, equal to ``cv2.cvtColor(x, COLOR_RGB2GRAY)`` on float32; PyTorch.

    OpenCV's weights and order of operations (see
    :func:`~img2img_filters.filters.ops.rgb_to_gray`); a one-channel input passes unchanged.
    """

    name = "gray"
    description = "grayscale: 0.299 R + 0.587 G + 0.114 B (cv2.cvtColor RGB2GRAY)"
    linear = True
    spatial = False
    takes_channels = False

    def kernel2d(self) -> np.ndarray:
        return np.ones((1, 1))

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        return low, high

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register_filter
class Sobel(Stage):
    """Sobel derivative, equal to ``cv2.Sobel(gray, CV_32F, dx, dy, ksize, scale)``; PyTorch."""

    name = "sobel"
    description = "Sobel derivative of order (dx, dy) (cv2.Sobel)"
    linear = True
    params = (
        Param("dx", int, 1, "order of the x derivative", allowed="0 to ksize-1 (2 for ksize 1)"),
        Param("dy", int, 0, "order of the y derivative", allowed="0 to ksize-1; dx+dy >= 1"),
        Param("ksize", int, 3, "aperture size (1: no smoothing)", (1, 3, 5, 7)),
        Param("scale", float, 1.0, "factor applied to the result"),
    )

    def validate(self) -> None:
        dx, dy, ksize = self.values["dx"], self.values["dy"], self.values["ksize"]
        for key in ("dx", "dy"):
            if self.values[key] < 0:
                self.fail(key, "a non-negative integer", self.values[key])
        if dx + dy == 0:
            self.fail("dx+dy", "at least 1 (dx=0, dy=0 is no derivative)", dx + dy)
        limit = max(ksize, 3)
        for key in ("dx", "dy"):
            if self.values[key] >= limit:
                self.fail(key, f"smaller than {limit} for ksize={ksize}", self.values[key])

    def kernel2d(self) -> np.ndarray:
        v = self.values
        return _deriv_kernel(v["dx"], v["dy"], v["ksize"]) * v["scale"]


@register_filter
class Scharr(Stage):
    """Scharr derivative, equal to ``cv2.Scharr(gray, CV_32F, dx, dy, scale)``; PyTorch."""

    name = "scharr"
    description = "Scharr first derivative in x or y (cv2.Scharr)"
    linear = True
    params = (
        Param("dx", int, 1, "1 for the x derivative", (0, 1)),
        Param("dy", int, 0, "1 for the y derivative", (0, 1)),
        Param("scale", float, 1.0, "factor applied to the result"),
    )

    def validate(self) -> None:
        order = self.values["dx"] + self.values["dy"]
        if order != 1:
            self.fail("dx+dy", "exactly 1 (Scharr is a first derivative)", order)

    def kernel2d(self) -> np.ndarray:
        return _deriv_kernel(self.values["dx"], self.values["dy"], -1) * self.values["scale"]


@register_filter
class Laplacian(Stage):
    """Laplacian, equal to ``cv2.Laplacian(gray, CV_32F, ksize, scale)``; PyTorch."""

    name = "laplacian"
    description = "Laplacian d2/dx2 + d2/dy2 (cv2.Laplacian)"
    linear = True
    params = (
        Param("ksize", int, 1, "aperture size (1: the 4-neighbour kernel)", (1, 3, 5, 7)),
        Param("scale", float, 1.0, "factor applied to the result"),
    )

    def kernel2d(self) -> np.ndarray:
        ksize = self.values["ksize"]
        if ksize == 1:
            kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
        elif ksize == 3:
            kernel = np.array([[2, 0, 2], [0, -8, 0], [2, 0, 2]], dtype=np.float64)
        else:
            kernel = _deriv_kernel(2, 0, ksize) + _deriv_kernel(0, 2, ksize)
        return kernel * self.values["scale"]


@register_filter
class Gaussian(Stage):
    """Gaussian blur, equal to ``cv2.GaussianBlur(gray, (ksize, ksize), sigma, sigmaY)``; PyTorch."""

    name = "gaussian"
    description = "Gaussian blur (cv2.GaussianBlur); sigma=0 derives it from ksize"
    linear = True
    params = (
        Param("ksize", int, 3, "kernel size", allowed=ODD_KSIZE),
        Param("sigma", float, 0.0, "standard deviation in x (0: from ksize)", allowed=">= 0"),
        Param("sigma_y", float, 0.0, "standard deviation in y (0: same as sigma)", allowed=">= 0"),
    )

    def validate(self) -> None:
        _check_odd_ksize(self)
        _check_non_negative(self, "sigma", "sigma_y")

    def kernel2d(self) -> np.ndarray:
        v = self.values
        return _gaussian_kernel(v["ksize"], v["sigma"], v["sigma_y"])


@register_filter
class Box(Stage):
    """Box filter, equal to ``cv2.boxFilter(gray, -1, (ksize, ksize), normalize)``; PyTorch.

    ``border=wrap`` works for ``ksize`` up to 5 only: OpenCV refuses
    ``BORDER_WRAP`` for larger box filters.
    """

    name = "box"
    description = "box (mean) filter (cv2.boxFilter); border=wrap for ksize <= 5"
    linear = True
    borders = ("reflect101", "reflect", "replicate", "constant", "wrap")
    params = (
        Param("ksize", int, 3, "kernel size", allowed=ODD_KSIZE),
        Param("normalize", bool, True, "divide by the kernel area"),
    )

    #: The largest ``ksize`` for which ``cv2.boxFilter`` accepts ``BORDER_WRAP``.
    MAX_WRAP_KSIZE = 5

    def validate(self) -> None:
        _check_odd_ksize(self)
        if self.values["border"] == "wrap" and self.values["ksize"] > self.MAX_WRAP_KSIZE:
            self.fail(
                "ksize",
                f"an odd integer from 1 to {self.MAX_WRAP_KSIZE} with border=wrap "
                "(cv2.boxFilter refuses BORDER_WRAP for larger kernels)",
                self.values["ksize"],
            )

    def kernel2d(self) -> np.ndarray:
        ksize = self.values["ksize"]
        kernel = np.ones((ksize, ksize), dtype=np.float64)
        return kernel / kernel.size if self.values["normalize"] else kernel


@register_filter
class Sharpen(Stage):
    """Sharpening, equal to ``cv2.filter2D`` with ``delta + amount * [[0,-1,0],[-1,4,-1],[0,-1,0]]``.

    Computed in PyTorch.
    """

    name = "sharpen"
    description = "sharpen: identity + amount x (negative 4-neighbour Laplacian) (cv2.filter2D)"
    linear = True
    params = (
        Param("amount", float, 1.0, "strength (1: the classic 5-centre kernel)", allowed=">= 0"),
    )

    def validate(self) -> None:
        _check_non_negative(self, "amount")

    def kernel2d(self) -> np.ndarray:
        delta = np.zeros((3, 3))
        delta[1, 1] = 1.0
        edges = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float64)
        return delta + self.values["amount"] * edges


@register_filter
class Unsharp(Stage):
    """Unsharp mask, ``cv2.addWeighted(x, 1 + amount, cv2.GaussianBlur(x, k, sigma), -amount, 0)``.

    Computed in PyTorch.
    """

    name = "unsharp"
    description = "unsharp mask: (1 + amount) x - amount GaussianBlur(x) (cv2.addWeighted)"
    linear = True
    params = (
        Param("amount", float, 1.0, "strength", allowed=">= 0"),
        Param(
            "sigma", float, 1.0, "standard deviation of the blur (0: from ksize)", allowed=">= 0"
        ),
        Param("ksize", int, 5, "blur kernel size", allowed=ODD_KSIZE),
    )

    def validate(self) -> None:
        _check_odd_ksize(self)
        _check_non_negative(self, "amount", "sigma")

    def kernel2d(self) -> np.ndarray:
        v = self.values
        blur = _gaussian_kernel(v["ksize"], v["sigma"], None)
        delta = np.zeros_like(blur)
        delta[v["ksize"] // 2, v["ksize"] // 2] = 1.0
        return (1.0 + v["amount"]) * delta - v["amount"] * blur


@register_filter
class Emboss(Stage):
    """Emboss, equal to ``cv2.filter2D`` with ``[[-2,-1,0],[-1,1,1],[0,1,2]]``; PyTorch."""

    name = "emboss"
    description = "emboss relief, lit from the bottom right (cv2.filter2D)"
    linear = True

    def kernel2d(self) -> np.ndarray:
        return np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)


@register_filter
class Random(Stage):
    """A random kernel drawn from ``seed``, equal to ``cv2.filter2D(gray, CV_32F, kernel)``; PyTorch.

    The kernel is :func:`random_kernel`: the same seed gives the same kernel on
    every machine (NumPy's ``default_rng`` is portable).
    """

    name = "random"
    description = "random kernel drawn from seed (cv2.filter2D); uniform [0,1) or zero-mean normal"
    linear = True
    params = (
        Param("ksize", int, 3, "kernel size", allowed=ODD_KSIZE),
        Param("seed", int, 0, "random seed (numpy default_rng)", allowed="integer >= 0"),
        Param(
            "distribution",
            str,
            "uniform",
            "uniform: entries in [0, 1); normal: zero mean, absolute sum 1",
            ("uniform", "normal"),
        ),
    )

    def validate(self) -> None:
        _check_odd_ksize(self)
        if self.values["seed"] < 0:
            self.fail("seed", "an integer >= 0", self.values["seed"])
        if self.values["distribution"] == "normal" and self.values["ksize"] == 1:
            # One entry minus its mean is 0: the normalised kernel would be 0 / 0 (NaN).
            self.fail("ksize", "at least 3 with distribution=normal", self.values["ksize"])

    def kernel2d(self) -> np.ndarray:
        v = self.values
        return random_kernel(v["ksize"], v["seed"], v["distribution"])


@register_filter
class Kernel(Stage):
    """A user's kernel, equal to ``cv2.filter2D(gray, CV_32F, kernel)``; PyTorch.

    The kernel comes from a ``.npy`` file, a text file of rows, or inline rows,
    and is rounded to float32 as ``cv2.filter2D`` uses it. Even sides follow
    OpenCV's default anchor ``(kw // 2, kh // 2)``. The canonical spec writes the
    kernel inline, so that it rebuilds the filter without the file.
    """

    name = "kernel"
    description = (
        "your own kernel from a .npy/.txt file or inline rows '1 0 -1;2 0 -2' (cv2.filter2D)"
    )
    linear = True
    params = (
        Param("path", str, None, "a .npy file or a text file of rows", allowed="a file path"),
        Param(
            "rows",
            str,
            None,
            "inline rows: numbers separated by spaces, rows by ';'",
            allowed="e.g. '1 0 -1;2 0 -2;1 0 -1'",
        ),
    )

    def validate(self) -> None:
        path, rows = self.values["path"], self.values["rows"]
        if (path is None) == (rows is None):
            self.fail("path/rows", "exactly one of path= or rows=", {"path": path, "rows": rows})
        raw = (
            load_kernel_file(path, self.spec)
            if path is not None
            else parse_kernel_rows(rows, self.spec)
        )
        self.raw_kernel = raw.astype(np.float32).astype(np.float64)

    def kernel2d(self) -> np.ndarray:
        return _centre(self.raw_kernel)

    def canonical(self) -> str:
        rows = ";".join(" ".join(repr(float(v)) for v in row) for row in self.raw_kernel)
        return (
            f"kernel:rows={rows},border={self.values['border']},channels={self.values['channels']}"
        )


# -- the study's presets -------------------------------------------------------------------------


def _study_sobel(spec: str, border: str) -> list[Stage]:
    return [
        Gray(spec),
        Gaussian(spec, ksize=3, sigma=0.0, border=border),
        Sobel(spec, dx=1, dy=1, ksize=3, border=border),
    ]


def _study_random(spec: str, seed: int, border: str) -> list[Stage]:
    return [Gray(spec), Random(spec, ksize=3, seed=seed, distribution="uniform", border=border)]


_PRESET_BORDER = Param("border", str, "reflect101", "border mode (OpenCV's names)", Sobel.borders)

register_preset(
    "study-sobel",
    "the study's Sobel target: gray | GaussianBlur 3x3 sigma 0 | Sobel dx=1 dy=1 ksize=3",
    (_PRESET_BORDER,),
    _study_sobel,
    linear=True,
)
register_preset(
    "study-random",
    "the study's random target: a 3x3 uniform [0,1) kernel drawn from seed on the gray image",
    (
        Param("seed", int, 0, "random seed (numpy default_rng)", allowed="integer >= 0"),
        _PRESET_BORDER,
    ),
    _study_random,
    linear=True,
)

"""The third-party operators of ``benchmarks/operators.py``: ImageMagick, Pillow, scikit-image, OpenCV.

Each is a teacher img2img did not write: a ``cmd:`` spec (ImageMagick's
``convert``, run once per photo) or a Python callable ``(H, W, 3) uint8 RGB ->
(H, W, 3) uint8``. Float outputs (scikit-image's ``unsharp_mask`` and
``equalize_adapthist``, in [0, 1]) are rounded to uint8, as a tool saving an
8-bit photo would, so that every target has 8 bits and "exact after rounding"
means the same for all. OpenCV's photo module works on BGR: the callables swap
the channels on the way in and out.

``kind`` is the class of operator each is known to be (what its target in the
table is): ``linear`` (rounded), ``pointwise``, ``local`` (non-linear),
``edge-aware`` (wide, edge-preserving smoothing) or ``global``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from skimage import exposure, filters

__all__ = [
    "OPERATORS",
    "SMALL_OPERATORS",
    "Operator",
    "missing_tools",
    "opencv_normalised_convolution_defined",
]


@dataclass(frozen=True)
class Operator:
    """One third-party operator.

    Attributes:
        name: Its name in the table.
        tool: The tool (``ImageMagick``, ``Pillow``, ``scikit-image``, ``OpenCV``).
        call: What it does, as the tool spells it.
        kind: What it is known to be (see the module docstring).
        teacher: A ``cmd:`` spec or a callable.
        program: The program a ``cmd:`` spec needs (``None`` for callables).
        defined: For a tool whose output is not its operator on some photos: whether it is
            on this one (the table then also certifies the photos where it is).
    """

    name: str
    tool: str
    call: str
    kind: str
    teacher: str | Callable[[np.ndarray], np.ndarray]
    program: str | None = None
    defined: Callable[[np.ndarray], bool] | None = None


def _convert(arguments: str) -> str:
    # png:color-type=2: always RGB (ImageMagick writes gray PNGs for gray-looking results)
    return f"cmd:convert {{in}} {arguments} -define png:color-type=2 {{out}}"


def _pil(function: Callable[[Image.Image], Image.Image]) -> Callable[[np.ndarray], np.ndarray]:
    def apply(photo: np.ndarray) -> np.ndarray:
        return np.asarray(function(Image.fromarray(photo, "RGB")).convert("RGB"))

    return apply


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] to uint8, rounded."""
    return np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)


def _bgr(function: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def apply(photo: np.ndarray) -> np.ndarray:
        output = function(np.ascontiguousarray(photo[..., ::-1]))
        return np.ascontiguousarray(output[..., ::-1])

    return apply


def pil_gaussian(photo: np.ndarray) -> np.ndarray:
    """Pillow ``ImageFilter.GaussianBlur(2)``."""
    return _pil(lambda image: image.filter(ImageFilter.GaussianBlur(2)))(photo)


def pil_contour(photo: np.ndarray) -> np.ndarray:
    """Pillow ``ImageFilter.CONTOUR``."""
    return _pil(lambda image: image.filter(ImageFilter.CONTOUR))(photo)


def pil_emboss(photo: np.ndarray) -> np.ndarray:
    """Pillow ``ImageFilter.EMBOSS``."""
    return _pil(lambda image: image.filter(ImageFilter.EMBOSS))(photo)


def pil_color(photo: np.ndarray) -> np.ndarray:
    """Pillow ``ImageEnhance.Color(image).enhance(1.6)``."""
    return _pil(lambda image: ImageEnhance.Color(image).enhance(1.6))(photo)


def pil_contrast(photo: np.ndarray) -> np.ndarray:
    """Pillow ``ImageEnhance.Contrast(image).enhance(1.5)`` (about the photo's mean gray)."""
    return _pil(lambda image: ImageEnhance.Contrast(image).enhance(1.5))(photo)


def sk_unsharp(photo: np.ndarray) -> np.ndarray:
    """scikit-image ``filters.unsharp_mask(radius=2, amount=1)``, channel by channel, to uint8.

    Each channel goes in alone, contiguous, as floats in [0, 1], so the output is in
    [0, 1], clipped (scikit-image 0.26 with ``channel_axis=-1`` returns values far
    outside that range).
    """
    image = photo.astype(np.float64) / 255.0
    channels = [
        filters.unsharp_mask(np.ascontiguousarray(image[..., c]), radius=2, amount=1.0)
        for c in range(image.shape[2])
    ]
    return _to_uint8(np.stack(channels, axis=-1))


def sk_gamma(photo: np.ndarray) -> np.ndarray:
    """scikit-image ``exposure.adjust_gamma(gamma=0.7)`` (uint8 in, uint8 out)."""
    return exposure.adjust_gamma(photo, 0.7)


def sk_clahe(photo: np.ndarray) -> np.ndarray:
    """scikit-image ``exposure.equalize_adapthist()`` (CLAHE), to uint8."""
    return _to_uint8(exposure.equalize_adapthist(photo))


def cv_edge_preserving(photo: np.ndarray) -> np.ndarray:
    """OpenCV ``cv2.edgePreservingFilter`` (recursive filter, defaults)."""
    return _bgr(cv2.edgePreservingFilter)(photo)


def cv_detail(photo: np.ndarray) -> np.ndarray:
    """OpenCV ``cv2.detailEnhance`` (defaults)."""
    return _bgr(cv2.detailEnhance)(photo)


def cv_stylization(photo: np.ndarray) -> np.ndarray:
    """OpenCV ``cv2.stylization`` (defaults)."""
    return _bgr(cv2.stylization)(photo)


def opencv_normalised_convolution_defined(
    photo: np.ndarray, sigma_s: float = 60.0, sigma_r: float = 0.45
) -> bool:
    """Whether OpenCV's normalised convolution (``stylization``'s first stage) is defined on ``photo``.

    Its first sweep averages each pixel over a window of ``sqrt(3)`` times the sweep's
    scale in the transformed domain (the running sum of ``1 + sigma_s / sigma_r`` times
    the colour change along a row or column). When a row's (or a column's) whole
    transformed length is within that window of its first pixel, OpenCV finds no end
    for that pixel's window and reads its sums from outside them: the output is then
    undefined (it differs from the filter over the whole photo on most such photos, and
    may change from run to run). This says whether every row and column of the photo is
    longer than the window.
    """
    image = photo.astype(np.float32) / 255.0
    steps = sigma_s / sigma_r
    across = 1.0 + steps * np.abs(np.diff(image, axis=1)).sum(axis=2)  # (H, W - 1)
    down = 1.0 + steps * np.abs(np.diff(image, axis=0)).sum(axis=2)  # (H - 1, W)
    sweeps = 3
    scale = sigma_s * np.sqrt(3.0) * 2.0 ** (sweeps - 1) / np.sqrt(4.0**sweeps - 1.0)
    window = np.sqrt(3.0) * scale
    return bool(across.sum(axis=1).min() > window and down.sum(axis=0).min() > window)


_IM = "ImageMagick"
#: The operators of the full benchmark.
OPERATORS = [
    Operator("im-blur", _IM, "-blur 0x1.5", "linear", _convert("-blur 0x1.5"), "convert"),
    Operator("im-sharpen", _IM, "-sharpen 0x1", "local", _convert("-sharpen 0x1"), "convert"),
    # Global, not pointwise: ImageMagick normalises the toned photo (a contrast stretch by the
    # photo's own histogram), so a change far away moves every output (up to 65 of 255 levels
    # for an 8x16 patch set to white and black in a 64x64 photo).
    Operator("im-sepia", _IM, "-sepia-tone 80%", "global", _convert("-sepia-tone 80%"), "convert"),
    Operator(
        "im-level",
        _IM,
        "-level 10%,90%,0.8",
        "pointwise",
        _convert("-level 10%,90%,0.8"),
        "convert",
    ),
    Operator("im-edge", _IM, "-edge 1", "local", _convert("-edge 1"), "convert"),
    Operator("im-charcoal", _IM, "-charcoal 1", "global", _convert("-charcoal 1"), "convert"),
    Operator("pil-gaussian", "Pillow", "ImageFilter.GaussianBlur(2)", "linear", pil_gaussian),
    Operator("pil-contour", "Pillow", "ImageFilter.CONTOUR", "local", pil_contour),
    Operator("pil-emboss", "Pillow", "ImageFilter.EMBOSS", "local", pil_emboss),
    Operator("pil-color", "Pillow", "ImageEnhance.Color(1.6)", "pointwise", pil_color),
    Operator("pil-contrast", "Pillow", "ImageEnhance.Contrast(1.5)", "global", pil_contrast),
    Operator("sk-unsharp", "scikit-image", "filters.unsharp_mask(2, 1)", "local", sk_unsharp),
    Operator("sk-gamma", "scikit-image", "exposure.adjust_gamma(0.7)", "pointwise", sk_gamma),
    Operator("sk-clahe", "scikit-image", "exposure.equalize_adapthist()", "global", sk_clahe),
    Operator(
        "cv-edge-preserving",
        "OpenCV",
        "cv2.edgePreservingFilter",
        "edge-aware",
        cv_edge_preserving,
    ),
    Operator("cv-detail", "OpenCV", "cv2.detailEnhance", "edge-aware", cv_detail),
    # OpenCV's output is not its operator on photos with a row or column shorter than its
    # first window (see opencv_normalised_convolution_defined): 5 to 6% of Tiny ImageNet's.
    Operator(
        "cv-stylization",
        "OpenCV",
        "cv2.stylization",
        "edge-aware",
        cv_stylization,
        defined=opencv_normalised_convolution_defined,
    ),
]
#: ``--small``: a linear, a pointwise and a local operator, all in-process callables.
SMALL_OPERATORS = ["pil-gaussian", "sk-gamma", "pil-contour"]


def missing_tools(operators: list[Operator]) -> list[str]:
    """The programs that ``cmd:`` operators need and that are not on the ``PATH``."""
    needed = {op.program for op in operators if op.program is not None}
    return sorted(program for program in needed if shutil.which(program) is None)

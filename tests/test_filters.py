"""Tests of img2img_filters.filters: parity with OpenCV on real photos, kernels, ranges, the spec language.

Tolerances, once for all:

* Float filters must match OpenCV within 1e-5, absolute. The cases marked
  ``large`` (Sobel ksize 5 and 7, Laplacian ksize 5 and 7, the magnitude with
  ksize 5 and 7, an unnormalised box, a 13x13 random kernel) produce outputs
  of 16 to several hundred on photos. There one float32 ulp is 2e-6 to 3e-5,
  and two correct float32 implementations that sum the same products in a
  different order (OpenCV: separable passes, SIMD lanes, DFT for large
  kernels) differ by several ulps, so no float32 implementation can promise
  1e-5 absolute; those cases get ``1e-5 * max(1, max |OpenCV output|)``, and
  the test checks that their outputs really are that large.
* Binary and uint8 filters (median, Canny) and the ones that only pick, compare
  or negate values (morphology, threshold, abs, clip) must match exactly. They
  are given the same one-channel float input OpenCV is given: the gray image
  from ``rgb_to_gray``, which :func:`test_gray_matches_cvtcolor` shows to equal
  ``cv2.cvtColor`` bit for bit on OpenCV's vectorised path and within one float32
  ulp elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from img2img_filters.border import CV2_BORDER_FLAGS
from img2img_filters.filters import (
    GRAY_WEIGHTS,
    Filter,
    create_filter,
    format_filter_table,
    list_filters,
    parse_spec,
    rgb_to_gray,
)
from img2img_filters.filters.linear import random_kernel

TOL = 1e-5  # see the module docstring
N_PHOTOS = 8  # real photos per parity batch: enough variety, fast


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- images ------------------------------------------------------------------------------------


@dataclass
class Image:
    """One photo in the forms references need: float RGB, uint8 RGB and both grays."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    u8: np.ndarray  # (H, W, 3) uint8
    gray_cv: np.ndarray  # (H, W) float32, cv2.cvtColor
    gray: np.ndarray  # (H, W) float32, img2img's rgb_to_gray (the filters' own input)


def _images(photos: np.ndarray) -> tuple[torch.Tensor, list[Image]]:
    """uint8 ``(N, H, W, 3)`` -> the batch ``(N, 3, H, W)`` in [0, 1] and per-image references."""
    batch = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255.0
    grays = rgb_to_gray(batch)[:, 0].numpy()
    images = []
    for photo, gray in zip(photos, grays, strict=True):
        rgb = photo.astype(np.float32) / 255.0
        images.append(Image(rgb, photo, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), gray))
    return batch, images


@pytest.fixture(scope="module")
def mini(mini_photos: np.ndarray) -> tuple[torch.Tensor, list[Image]]:
    """Eight real 64x64 photos from the mini Tiny ImageNet."""
    return _images(mini_photos[:N_PHOTOS])


@pytest.fixture(scope="module")
def large(large_photo: np.ndarray) -> tuple[torch.Tensor, list[Image]]:
    """One real non-square 200x300 photo."""
    return _images(large_photo[None])


def _hwc(output: torch.Tensor) -> np.ndarray:
    """A filter output ``(B, C, H, W)`` as NumPy ``(B, H, W, C)``."""
    return output.detach().permute(0, 2, 3, 1).cpu().numpy()


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Reference outputs ``(H, W)`` or ``(H, W, C)`` as ``(B, H, W, C)``."""
    return np.stack([a[..., None] if a.ndim == 2 else a for a in arrays]).astype(np.float32)


# -- OpenCV references -------------------------------------------------------------------------

Reference = Callable[[Image, int], np.ndarray]


def _g(fn: Callable[[np.ndarray, int], np.ndarray]) -> Reference:
    """A reference on OpenCV's own gray image (float filters)."""
    return lambda im, flag: fn(im.gray_cv, flag)


def _same_gray(fn: Callable[[np.ndarray, int], np.ndarray]) -> Reference:
    """A reference on the very gray image the filter starts from (exact filters)."""
    return lambda im, flag: fn(im.gray, flag)


def _u8(fn: Callable[[np.ndarray], np.ndarray]) -> Reference:
    """A reference on OpenCV's uint8 gray image, output divided by 255."""
    return lambda im, flag: fn(cv2.cvtColor(im.u8, cv2.COLOR_RGB2GRAY)).astype(np.float32) / 255.0


def _f2d(kernel: np.ndarray) -> Reference:
    return _g(lambda g, b: cv2.filter2D(g, cv2.CV_32F, kernel.astype(np.float32), borderType=b))


SHARPEN = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float64)
EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
DELTA3 = np.pad(np.ones((1, 1)), 1)
SHAPES = {"rect": cv2.MORPH_RECT, "ellipse": cv2.MORPH_ELLIPSE, "cross": cv2.MORPH_CROSS}
THRESH = {
    "binary": cv2.THRESH_BINARY,
    "binary_inv": cv2.THRESH_BINARY_INV,
    "trunc": cv2.THRESH_TRUNC,
    "tozero": cv2.THRESH_TOZERO,
    "tozero_inv": cv2.THRESH_TOZERO_INV,
}


def _sobel(dx: int, dy: int, ksize: int, scale: float = 1.0) -> Reference:
    return _g(lambda g, b: cv2.Sobel(g, cv2.CV_32F, dx, dy, ksize=ksize, scale=scale, borderType=b))


def _gaussian(ksize: int, sigma: float, sigma_y: float) -> Reference:
    return _g(lambda g, b: cv2.GaussianBlur(g, (ksize, ksize), sigma, sigmaY=sigma_y, borderType=b))


def _unsharp(amount: float, sigma: float, ksize: int) -> Reference:
    def ref(g: np.ndarray, b: int) -> np.ndarray:
        blur = cv2.GaussianBlur(g, (ksize, ksize), sigma, borderType=b)
        return cv2.addWeighted(g, 1.0 + amount, blur, -amount, 0.0)

    return _g(ref)


def _magnitude(ksize: int) -> Reference:
    def ref(g: np.ndarray, b: int) -> np.ndarray:
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=ksize, borderType=b)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=ksize, borderType=b)
        return cv2.magnitude(gx, gy)

    return _g(ref)


def _morph(op: int, ksize: int, shape: str) -> Reference:
    element = cv2.getStructuringElement(SHAPES[shape], (ksize, ksize))
    return _same_gray(lambda g, b: cv2.morphologyEx(g, op, element, borderType=b, borderValue=0))


def _threshold(thresh: float, maxval: float, kind: str) -> Reference:
    return _same_gray(lambda g, b: cv2.threshold(g, thresh, maxval, THRESH[kind])[1])


def _study_sobel(im: Image, b: int) -> np.ndarray:
    blurred = cv2.GaussianBlur(im.gray_cv, (3, 3), 0, borderType=b)
    return cv2.Sobel(blurred, cv2.CV_32F, 1, 1, ksize=3, borderType=b)


def _drawn_kernel(ksize: int, seed: int, distribution: str) -> np.ndarray:
    """The ``random`` filter's documented kernel, drawn here with NumPy alone.

    ``numpy.random.default_rng(seed)``: ``random((k, k))`` for ``uniform``; for
    ``normal``, ``standard_normal((k, k))`` minus its mean, over its absolute sum;
    rounded to float32.
    """
    rng = np.random.default_rng(seed)
    if distribution == "uniform":
        return rng.random((ksize, ksize)).astype(np.float32)
    drawn = rng.standard_normal((ksize, ksize))
    centred = drawn - drawn.mean()
    return (centred / np.abs(centred).sum()).astype(np.float32)


def _study_random(seed: int) -> Reference:
    kernel = np.random.default_rng(seed).random((3, 3)).astype(np.float32)
    return _g(lambda g, b: cv2.filter2D(g, cv2.CV_32F, kernel, borderType=b))


@dataclass
class Case:
    """One filter and parameter set, with the OpenCV call it names."""

    spec: str
    reference: Reference
    exact: bool = False
    borders: tuple[str, ...] | None = None  # default: every border the filter accepts
    large: bool = False  # outputs beyond 16: relative tolerance (module docstring)

    def __str__(self) -> str:
        return self.spec


CASES: list[Case] = [
    Case("gray", lambda im, b: im.gray_cv),
    *(
        Case(f"sobel:dx={dx},dy={dy},ksize={k}", _sobel(dx, dy, k), large=large)
        for dx, dy, k, large in [
            (1, 0, 3, False),
            (0, 1, 3, False),
            (1, 1, 3, False),
            (2, 0, 3, False),
            (1, 0, 1, False),
            (0, 2, 1, False),
            (1, 0, 5, True),
            (2, 1, 5, False),
            (1, 1, 7, True),
            (3, 0, 7, True),
        ]
    ),
    Case("sobel:dx=0,dy=1,ksize=3,scale=0.25", _sobel(0, 1, 3, 0.25)),
    Case("scharr:dx=1,dy=0", _g(lambda g, b: cv2.Scharr(g, cv2.CV_32F, 1, 0, borderType=b))),
    Case(
        "scharr:dx=0,dy=1,scale=0.5",
        _g(lambda g, b: cv2.Scharr(g, cv2.CV_32F, 0, 1, scale=0.5, borderType=b)),
    ),
    *(
        Case(
            f"laplacian:ksize={k}",
            _g(lambda g, b, k=k: cv2.Laplacian(g, cv2.CV_32F, ksize=k, borderType=b)),
            large=k >= 5,
        )
        for k in (1, 3, 5, 7)
    ),
    Case(
        "laplacian:ksize=3,scale=0.5",
        _g(lambda g, b: cv2.Laplacian(g, cv2.CV_32F, ksize=3, scale=0.5, borderType=b)),
    ),
    *(
        Case(f"gaussian:ksize={k},sigma={s},sigma_y={sy}", _gaussian(k, s, sy))
        for k, s, sy in [(3, 0.0, 0.0), (5, 0.0, 0.0), (5, 1.5, 0.0), (7, 1.0, 2.0), (15, 3.0, 0.0)]
    ),
    *(
        Case(
            f"box:ksize={k},normalize={str(n).lower()}",
            _g(lambda g, b, k=k, n=n: cv2.boxFilter(g, -1, (k, k), normalize=n, borderType=b)),
            large=not n,
        )
        for k, n in [(3, True), (5, False)]
    ),
    # cv2.boxFilter refuses BORDER_WRAP above ksize 5, and so does the filter
    Case(
        "box:ksize=7",
        _g(lambda g, b: cv2.boxFilter(g, -1, (7, 7), borderType=b)),
        borders=("reflect101", "reflect", "replicate", "constant"),
    ),
    *(Case(f"sharpen:amount={a}", _f2d(DELTA3 + a * SHARPEN)) for a in (1.0, 0.5)),
    *(
        Case(f"unsharp:amount={a},sigma={s},ksize={k}", _unsharp(a, s, k))
        for a, s, k in [(1.0, 1.0, 5), (0.5, 2.0, 7)]
    ),
    Case("emboss", _f2d(EMBOSS)),
    *(
        Case(
            f"random:ksize={k},seed={seed},distribution={d}",
            _f2d(_drawn_kernel(k, seed, d)),
            large=k > 5,
        )
        for k, seed, d in [
            (3, 0, "uniform"),
            (5, 3, "uniform"),
            (5, 1, "normal"),
            (13, 2, "uniform"),
        ]
    ),
    Case("kernel:rows=1 0 -1;2 0 -2;1 0 -1", _f2d(np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]))),
    Case("kernel:rows=1 2;3 -4", _f2d(np.array([[1, 2], [3, -4]]))),  # even sides: OpenCV's anchor
    Case(
        "kernel:rows=0.5 -1 0.25 2;1 0 -3 0.125",
        _f2d(np.array([[0.5, -1, 0.25, 2], [1, 0, -3, 0.125]])),
    ),
    Case("study-sobel", _study_sobel),
    *(Case(f"study-random:seed={seed}", _study_random(seed)) for seed in (0, 3)),
    *(Case(f"magnitude:ksize={k}", _magnitude(k), large=k >= 5) for k in (1, 3, 5, 7)),
    Case("bilateral", _g(lambda g, b: cv2.bilateralFilter(g, 5, 0.1, 2.0, borderType=b))),
    Case(
        "bilateral:d=9,sigma_color=0.3,sigma_space=4",
        _g(lambda g, b: cv2.bilateralFilter(g, 9, 0.3, 4.0, borderType=b)),
    ),
    *(
        Case(f"{name}:ksize={k},shape={shape}", _morph(op, k, shape), exact=True)
        for name, op in [
            ("dilate", cv2.MORPH_DILATE),
            ("erode", cv2.MORPH_ERODE),
            ("open", cv2.MORPH_OPEN),
            ("close", cv2.MORPH_CLOSE),
        ]
        for k, shape in [(3, "rect"), (5, "ellipse"), (7, "cross")]
    ),
    Case("dilate:ksize=1", _morph(cv2.MORPH_DILATE, 1, "rect"), exact=True),
    *(
        Case(f"median:ksize={k}", _u8(lambda u, k=k: cv2.medianBlur(u, k)), exact=True)
        for k in (3, 5)
    ),
    Case("canny", _u8(lambda u: cv2.Canny(u, 100, 200)), exact=True),
    Case(
        "canny:low=50,high=150,aperture=5,l2gradient=true",
        _u8(lambda u: cv2.Canny(u, 50, 150, apertureSize=5, L2gradient=True)),
        exact=True,
    ),
    Case(
        "canny:low=2000,high=6000,aperture=7",
        _u8(lambda u: cv2.Canny(u, 2000, 6000, apertureSize=7)),
        exact=True,
    ),
    *(
        Case(f"threshold:thresh={t},maxval={m},type={kind}", _threshold(t, m, kind), exact=True)
        for t, m, kind in [
            (0.5, 1.0, "binary"),
            (0.3, 0.8, "binary_inv"),
            (0.6, 1.0, "trunc"),
            (0.4, 1.0, "tozero"),
            (0.45, 1.0, "tozero_inv"),
            (0.1, 1.0, "binary"),
        ]
    ),
    Case("abs", _same_gray(lambda g, b: cv2.absdiff(g, np.zeros_like(g))), exact=True),
    Case(
        "clip:min=0.25,max=0.6", _same_gray(lambda g, b: cv2.min(cv2.max(g, 0.25), 0.6)), exact=True
    ),
    # Pointwise stages after a derivative: the input has negative values.
    Case(
        "sobel:dx=1,dy=0|abs",
        _g(lambda g, b: cv2.absdiff(cv2.Sobel(g, cv2.CV_32F, 1, 0, borderType=b), 0.0)),
    ),
    Case(
        "laplacian|clip:min=-0.2,max=0.3",
        _g(lambda g, b: np.clip(cv2.Laplacian(g, cv2.CV_32F, borderType=b), -0.2, 0.3)),
    ),
    Case("gray|gaussian:ksize=3|sobel:dx=1,dy=1", _study_sobel),
    Case(
        "gaussian:ksize=5,sigma=1|magnitude",
        lambda im, b: _magnitude(3)(
            Image(im.rgb, im.u8, cv2.GaussianBlur(im.gray_cv, (5, 5), 1.0, borderType=b), im.gray),
            b,
        ),
    ),
]


def _borders(case: Case) -> tuple[str, ...]:
    """The border modes a case runs with: every one its filter accepts (or the case's own list)."""
    if case.borders is not None:
        return case.borders
    stages = create_filter(case.spec).stages
    spatial = [stage for stage in stages if stage.spatial]
    if not spatial:
        return ("reflect101",)
    accepted = set(spatial[0].borders)
    for stage in spatial[1:]:
        accepted &= set(stage.borders)
    return tuple(b for b in spatial[0].borders if b in accepted)


def _with_border(spec: str, border: str) -> str:
    """``spec`` with ``border=`` set on every spatial stage."""
    stages = []
    for name, values, _text in parse_spec(spec):
        stage = create_filter(
            name + (":" + ",".join(f"{k}={v}" for k, v in values.items()) if values else "")
        )
        if any(s.spatial for s in stage.stages):
            values = {**values, "border": border}
        stages.append(
            name + (":" + ",".join(f"{k}={v}" for k, v in values.items()) if values else "")
        )
    return "|".join(stages)


PARITY = [
    pytest.param(case, border, id=f"{case.spec}|{border}")
    for case in CASES
    for border in _borders(case)
]


#: Outputs at least this large in magnitude may use the relative tolerance (module docstring).
LARGE = 16.0


def _check(
    spec: str, ours: np.ndarray, expected: np.ndarray, exact: bool, large: bool = False
) -> None:
    """Exact equality, 1e-5 absolute, or (``large``) 1e-5 relative to the largest output."""
    assert ours.shape == expected.shape, spec
    if exact:
        np.testing.assert_array_equal(ours, expected, err_msg=spec)
        return
    peak = float(np.abs(expected).max())
    if large:
        assert peak >= LARGE, f"{spec}: outputs reach only {peak:.3g}; use the absolute tolerance"
    tolerance = TOL * max(1.0, peak) if large else TOL
    diff = float(np.abs(ours.astype(np.float64) - expected).max())
    assert diff <= tolerance, f"{spec}: max |diff| {diff:.3g} > {tolerance:.3g}"


@pytest.mark.parametrize(("case", "border"), PARITY)
def test_matches_opencv(case: Case, border: str, mini, large) -> None:
    """Each filter equals the OpenCV call it names on real photos, square and not, for each border."""
    spec = _with_border(case.spec, border)
    f = create_filter(spec)
    assert f.border == border or not any(s.spatial for s in f.stages)
    for batch, images in (mini, large):
        ours = _hwc(f(batch))
        expected = _stack([case.reference(im, CV2_BORDER_FLAGS[border]) for im in images])
        _check(spec, ours, expected, case.exact, case.large)


# cv2.filter2D takes BORDER_WRAP only for kernels it convolves by DFT (11x11 and up), and
# cv2.dilate does not look at the border of a 1x1 element: the filters offer the borders
# that every kernel size accepts.
_OPENCV_ACCEPTS_SOME_WRAP = ("random:ksize=13", "dilate:ksize=1")


def _refused_borders(case: Case) -> list[str]:
    """The borders a case's filter refuses where OpenCV's function takes a border argument.

    None for a pointwise filter, or one whose OpenCV function has no border argument
    (median, Canny: the filter accepts only ``replicate``), or one that accepts all.
    """
    if case.borders is not None or not any(s.spatial for s in create_filter(case.spec).stages):
        return []
    accepted = _borders(case)
    if accepted == ("replicate",):
        return []
    return sorted(set(CV2_BORDER_FLAGS) - set(accepted))


REFUSED = [
    pytest.param(case, refused, id=case.spec)
    for case in CASES
    if (refused := _refused_borders(case))
]


@pytest.mark.parametrize(("case", "refused"), REFUSED)
def test_refused_borders_are_refused_by_opencv(case: Case, refused: list[str], mini) -> None:
    """Stage.borders is truthful both ways: a border the filter refuses, OpenCV refuses too."""
    image = mini[1][0]
    for border in refused:
        with pytest.raises(ValueError, match="parameter 'border' must be one of"):
            create_filter(_with_border(case.spec, border))
        if case.spec.startswith(_OPENCV_ACCEPTS_SOME_WRAP):
            continue
        with pytest.raises(cv2.error):
            case.reference(image, CV2_BORDER_FLAGS[border])


def test_every_filter_has_a_parity_case() -> None:
    tested = {name for case in CASES for name, _, _ in parse_spec(case.spec)}
    assert {entry.name for entry in list_filters()} <= tested


def test_gray_matches_cvtcolor(mini, large) -> None:
    """rgb_to_gray reproduces cv2.cvtColor's float32 arithmetic.

    On OpenCV's vectorised path (the IPP build of the opencv-python wheels; every
    pixel of an image whose width is a multiple of 8, such as the 64x64 photos)
    the two agree bit for bit, on photos and on random colours. OpenCV finishes
    each row's last few pixels with different code, and other builds use other
    orders of operations, so elsewhere the promise is one float32 ulp.
    """
    rng = np.random.default_rng(0)
    colours = rng.random((256, 512, 3), dtype=np.float32)
    u8_colours = rng.integers(0, 256, (512, 512, 3)).astype(np.float32) / np.float32(255.0)
    odd = rng.random((37, 53, 3), dtype=np.float32)
    images = [im.rgb for im in mini[1] + large[1]] + [colours, u8_colours, odd]
    for rgb in images:
        ours = rgb_to_gray(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].numpy()
        expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        ulp = np.spacing(np.maximum(np.abs(ours), np.abs(expected)))
        assert (np.abs(ours - expected) <= ulp).all()
    if not cv2.ipp.useIPP():
        pytest.skip("bit-exactness is checked against OpenCV's IPP path, which this build lacks")
    for rgb in [im.rgb for im in mini[1]] + [colours, u8_colours]:
        ours = rgb_to_gray(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].numpy()
        np.testing.assert_array_equal(ours, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    # ... so on these photos the exact filters equal OpenCV from cv2.cvtColor too.
    batch, ims = mini
    element = np.ones((3, 3), np.uint8)
    dilated = _hwc(create_filter("dilate")(batch))[..., 0]
    binary = _hwc(create_filter("threshold:thresh=0.5")(batch))[..., 0]
    for i, im in enumerate(ims):
        np.testing.assert_array_equal(
            dilated[i], cv2.dilate(im.gray_cv, element, borderType=cv2.BORDER_DEFAULT)
        )
        np.testing.assert_array_equal(
            binary[i], cv2.threshold(im.gray_cv, 0.5, 1.0, cv2.THRESH_BINARY)[1]
        )


def test_gray_weights_are_opencvs() -> None:
    assert tuple(float(np.float32(w)) for w in (0.299, 0.587, 0.114)) == GRAY_WEIGHTS
    f = create_filter("gray")
    np.testing.assert_array_equal(f.kernel.view(3).numpy(), np.array(GRAY_WEIGHTS))


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 2), (5, 4)])
def test_images_smaller_than_the_kernel_match_opencv(size: tuple[int, int]) -> None:
    """OpenCV extends any border as often as the kernel needs, and so do the filters."""
    rng = np.random.default_rng(size[0] * 10 + size[1])
    photo = rng.integers(0, 256, (1, *size, 3), dtype=np.uint8)
    batch, images = _images(photo)
    for case in [
        c
        for c in CASES
        if c.spec
        in (
            "sobel:dx=1,dy=1,ksize=7",
            "gaussian:ksize=15,sigma=3.0,sigma_y=0.0",
            "random:ksize=13,seed=2,distribution=uniform",
            "dilate:ksize=7,shape=cross",
            "median:ksize=5",
            "box:ksize=7",
        )
    ]:
        for border in _borders(case):
            spec = _with_border(case.spec, border)
            ours = _hwc(create_filter(spec)(batch))
            expected = _stack([case.reference(images[0], CV2_BORDER_FLAGS[border])])
            # a tiny image may not reach large outputs; the absolute tolerance applies then
            _check(spec, ours, expected, case.exact, case.large and np.abs(expected).max() >= LARGE)


# -- channels=rgb -------------------------------------------------------------------------------

RGB_CASES = [
    (
        "sobel:dx=1,dy=0,ksize=3,channels=rgb",
        lambda x, u: cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3),
        False,
    ),
    (
        "gaussian:ksize=5,sigma=1.2,channels=rgb",
        lambda x, u: cv2.GaussianBlur(x, (5, 5), 1.2),
        False,
    ),
    (
        "box:ksize=5,border=wrap,channels=rgb",
        lambda x, u: cv2.boxFilter(x, -1, (5, 5), borderType=cv2.BORDER_WRAP),
        False,
    ),
    (
        "emboss:channels=rgb",
        lambda x, u: cv2.filter2D(x, cv2.CV_32F, EMBOSS.astype(np.float32)),
        False,
    ),
    (
        "magnitude:channels=rgb",
        lambda x, u: cv2.magnitude(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1)),
        False,
    ),
    (
        "median:ksize=5,channels=rgb",
        lambda x, u: cv2.medianBlur(u, 5).astype(np.float32) / 255.0,
        True,
    ),
    (
        "dilate:ksize=5,shape=ellipse,channels=rgb",
        lambda x, u: cv2.dilate(
            x, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)), borderType=cv2.BORDER_DEFAULT
        ),
        True,
    ),
    (
        "threshold:thresh=0.5,channels=rgb",
        lambda x, u: cv2.threshold(x, 0.5, 1.0, cv2.THRESH_BINARY)[1],
        True,
    ),
    (
        "canny:channels=rgb",
        lambda x, u: (
            np.stack([cv2.Canny(u[..., c].copy(), 100, 200) for c in range(3)], -1) / 255.0
        ),
        True,
    ),
    (
        "bilateral:channels=rgb",
        lambda x, u: np.stack(
            [cv2.bilateralFilter(x[..., c].copy(), 5, 0.1, 2.0) for c in range(3)], -1
        ),
        False,
    ),
]


@pytest.mark.parametrize(("spec", "reference", "exact"), RGB_CASES, ids=[c[0] for c in RGB_CASES])
def test_channels_rgb_filters_each_channel(spec: str, reference, exact: bool, mini, large) -> None:
    f = create_filter(spec)
    assert f.out_channels == 3
    for batch, images in (mini, large):
        out = f(batch)
        assert out.shape == (batch.shape[0], 3, *batch.shape[-2:])
        expected = _stack([reference(im.rgb, im.u8) for im in images])
        _check(spec, _hwc(out), expected, exact)


def test_channels_default_to_gray() -> None:
    x = torch.rand(2, 3, 16, 12)
    assert create_filter("sobel").out_channels == 1
    assert create_filter("sobel")(x).shape == (2, 1, 16, 12)
    assert create_filter("sobel:channels=rgb|gaussian").out_channels == 1  # gray after the Sobel
    assert create_filter("gray|sobel:channels=rgb").out_channels == 1
    torch.testing.assert_close(
        create_filter("gray|sobel")(x), create_filter("sobel")(x), rtol=0, atol=0
    )


# -- kernels of linear filters --------------------------------------------------------------------

LINEAR = [
    pytest.param(case, border, id=f"{case.spec}|{border}")
    for case in CASES
    if create_filter(case.spec).linear
    for border in _borders(case)
] + [
    pytest.param(Case(spec, _g(lambda g, b: g)), border, id=f"{spec}|{border}")
    for spec in (
        "sobel:dx=1,dy=0,channels=rgb",
        "gaussian:ksize=5,sigma=1,channels=rgb|sobel:dx=0,dy=1",
        "random:ksize=3,seed=5|random:ksize=5,seed=6,distribution=normal",
        "kernel:rows=1 2;3 -4|emboss",
        "box:ksize=3,channels=rgb|gray",
    )
    for border in ("reflect101", "constant")
]


def _spatial_stages(f: Filter) -> int:
    return sum(1 for stage in f.stages if stage.spatial)


def _independent_conv(f: Filter, images: np.ndarray, border: str) -> np.ndarray:
    """f.kernel applied with cv2.copyMakeBorder and F.conv2d: nothing of img2img but the kernel."""
    kernel = f.kernel
    kh, kw = kernel.shape[-2:]
    padded = np.stack(
        [
            cv2.copyMakeBorder(
                im, kh // 2, kh // 2, kw // 2, kw // 2, CV2_BORDER_FLAGS[border], value=0
            )
            for im in images
        ]
    )
    tensor = torch.from_numpy(padded).permute(0, 3, 1, 2)
    return _hwc(F.conv2d(tensor, kernel.float()))


@pytest.mark.parametrize(("case", "border"), LINEAR)
def test_kernel_reproduces_the_filter(case: Case, border: str, mini, large) -> None:
    """A plain convolution with f.kernel gives f's output.

    With one spatial stage the equality holds at every pixel. A chain of spatial
    stages is compared on interior pixels only (a margin of the composed kernel's
    radius): each stage extends the border of its own input, and reflecting an
    intermediate result is not reflecting the photo and then filtering it, unless
    the earlier kernels are symmetric (and never with zeros or replication).
    """
    f = create_filter(_with_border(case.spec, border))
    kernel = f.kernel
    assert kernel is not None and kernel.dtype == torch.float64
    assert kernel.shape[:2] == (f.out_channels, 3) and f.kernel_size == tuple(kernel.shape[-2:])
    kh, kw = f.kernel_size
    assert kh % 2 == 1 and kw % 2 == 1
    for batch, images in (mini, large):
        out = _hwc(f(batch))
        via_apply = _hwc(f.apply_kernel(batch))
        # the independent convolution on the two photos whose outputs reach furthest (a plain
        # float conv2d is slow on the CPU), so that a large case meets its relative tolerance
        reach = np.abs(out).reshape(len(out), -1).max(axis=1)
        chosen = np.sort(np.argsort(-reach, kind="stable")[:2])
        via_conv = _independent_conv(f, np.stack([images[i].rgb for i in chosen]), f.border)
        if _spatial_stages(f) > 1:
            rh, rw = kh // 2, kw // 2
            out, via_apply, via_conv = (
                a[:, rh : -rh or None, rw : -rw or None] for a in (out, via_apply, via_conv)
            )
        _check(f.spec + " (apply_kernel)", via_apply, out.astype(np.float64), False, case.large)
        _check(f.spec + " (conv2d)", via_conv, out[chosen].astype(np.float64), False, case.large)


def test_study_sobel_kernel() -> None:
    """The study's Sobel target is one 5x5 kernel: gray weights x Gaussian 3x3 (*) Sobel 3x3."""
    f = create_filter("study-sobel")
    gauss = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    sobel = np.outer([-1, 0, 1], [-1, 0, 1])
    composed = cv2.filter2D(np.pad(gauss, 2), cv2.CV_64F, sobel, borderType=cv2.BORDER_CONSTANT)[
        1:-1, 1:-1
    ]
    expected = np.stack([w * composed for w in GRAY_WEIGHTS])[None]
    np.testing.assert_allclose(f.kernel.numpy(), expected, rtol=0, atol=1e-15)
    assert f.linear and f.kernel_size == (5, 5) and f.out_channels == 1


@pytest.mark.parametrize(
    ("spec", "radius"),
    [
        ("gray", 0),
        ("sobel:ksize=5", 2),
        ("sobel:ksize=1,dx=1", 1),
        ("study-sobel", 2),
        ("kernel:rows=1 2;3 4", 1),
        ("magnitude:ksize=1", 1),
        ("median:ksize=5", 2),
        ("bilateral:d=9", 4),
        ("open:ksize=5", 4),
        ("dilate:ksize=7|threshold", 3),
        ("canny:aperture=5", 3),
        ("gaussian:ksize=7|abs|erode", 4),
    ],
)
def test_radius(spec: str, radius: int) -> None:
    f = create_filter(spec)
    assert f.radius == radius
    if f.linear:
        assert f.kernel_size == (2 * radius + 1, 2 * radius + 1) or spec.startswith(
            ("kernel", "sobel:ksize=1")
        )


def test_radius_bounds_what_an_output_pixel_sees() -> None:
    """Changing the input beyond the radius leaves the centre pixel alone (Canny aside)."""
    for spec in [
        "sobel:ksize=7",
        "study-sobel",
        "magnitude:ksize=5",
        "median:ksize=5",
        "bilateral:d=7",
        "open:ksize=3,shape=ellipse",
        "close:ksize=5",
        "gaussian:ksize=5|dilate:ksize=3",
    ]:
        f = create_filter(spec)
        x = torch.rand(1, 3, 31, 31)
        size = 2 * f.radius + 1
        y = torch.rand(1, 3, 31, 31)
        y[..., 15 - f.radius : 15 + f.radius + 1, 15 - f.radius : 15 + f.radius + 1] = x[
            ..., 15 - f.radius : 15 + f.radius + 1, 15 - f.radius : 15 + f.radius + 1
        ]
        assert size <= 31
        torch.testing.assert_close(f(x)[..., 15, 15], f(y)[..., 15, 15], rtol=0, atol=0)


def test_nonlinear_filters_have_no_kernel() -> None:
    f = create_filter("magnitude")
    assert not f.linear and f.kernel is None and f.kernel_size is None
    with pytest.raises(ValueError, match="not linear"):
        f.apply_kernel(torch.rand(1, 3, 8, 8))


# -- output ranges -------------------------------------------------------------------------------


def _adversarial(height: int = 40, width: int = 36) -> torch.Tensor:
    """Inputs in [0, 1] that push filters to their extremes: checkerboards, stripes, impulses, edges."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    patterns = [torch.zeros(height, width), torch.ones(height, width)]
    for period in (1, 2, 3):
        patterns += [
            ((yy // period + xx // period) % 2).float(),
            ((xx // period) % 2).float(),
            ((yy // period) % 2).float(),
        ]
    impulse = torch.zeros(height, width)
    impulse[height // 2, width // 2] = 1.0
    patterns += [impulse, 1.0 - impulse, (xx >= width // 2).float(), (yy + xx >= height).float()]
    gray = torch.stack(patterns)[:, None].expand(-1, 3, -1, -1)
    colour = torch.stack([torch.stack([p, 1 - p, p]) for p in patterns[2:8]])
    return torch.cat([gray, colour]).contiguous()


def _sign_pattern(f: Filter, channel: int, sign: float) -> torch.Tensor:
    """The input that drives a linear filter's output to its bound at the image centre."""
    kernel = f.kernel[channel]
    kh, kw = kernel.shape[-2:]
    x = torch.zeros(1, 3, 3 * kh, 3 * kw)
    x[0, :, kh : 2 * kh, kw : 2 * kw] = (sign * kernel > 0).float()
    return x


RANGE_SPECS = sorted(
    {case.spec for case in CASES}
    | {
        "sobel:dx=1,dy=0,channels=rgb",
        "threshold:thresh=0.2,maxval=-2,type=binary_inv",
        "threshold:type=trunc,thresh=0.3",
        "sobel|threshold:thresh=0.1,type=tozero_inv",
        "laplacian|abs|clip:max=0.5",
        "random:distribution=normal,ksize=7|abs",
        "sobel:dx=2,dy=0,ksize=5|magnitude:ksize=5",
        "scharr|median",
        "unsharp:amount=3|canny",
    }
)


@pytest.mark.parametrize("spec", RANGE_SPECS)
def test_output_range_bounds_the_output(spec: str, mini, large) -> None:
    """Outputs on real photos and on adversarial patterns lie within output_range.

    The bound is exact in real arithmetic; float32 evaluation may overshoot it
    by rounding, hence a margin of a few float32 ulps of the bound.
    """
    f = create_filter(spec)
    low, high = f.output_range
    assert low <= high and f.data_range == pytest.approx(high - low)
    margin = 4 * np.spacing(np.float32(max(1.0, abs(low), abs(high))))
    for batch in (mini[0], large[0], _adversarial()):
        out = f(batch)
        assert float(out.min()) >= low - margin, (spec, float(out.min()), low)
        assert float(out.max()) <= high + margin, (spec, float(out.max()), high)


@pytest.mark.parametrize("spec", sorted({c.spec for c in CASES if create_filter(c.spec).linear}))
def test_linear_output_range_is_reached(spec: str) -> None:
    """For a linear filter the bound is tight: the kernel's sign pattern reaches both ends."""
    f = create_filter(spec)
    low, high = f.output_range
    reached_high = max(float(f(_sign_pattern(f, c, 1.0)).max()) for c in range(f.out_channels))
    reached_low = min(float(f(_sign_pattern(f, c, -1.0)).min()) for c in range(f.out_channels))
    tolerance = 1e-5 * max(1.0, abs(low), abs(high))
    assert reached_high == pytest.approx(high, abs=tolerance)
    assert reached_low == pytest.approx(low, abs=tolerance)


def test_output_ranges_of_known_filters() -> None:
    assert create_filter("gray").output_range == pytest.approx((0.0, 1.0))
    assert create_filter("sobel").output_range == pytest.approx((-4.0, 4.0))
    assert create_filter("study-sobel").output_range == pytest.approx((-1.125, 1.125))
    assert create_filter("box:ksize=5,normalize=false").output_range == pytest.approx((0.0, 25.0))
    assert create_filter("canny").output_range == (0.0, 1.0)
    assert create_filter("magnitude").output_range == pytest.approx((0.0, math.hypot(4, 4)))
    assert create_filter("sobel|abs").output_range == pytest.approx((0.0, 4.0))
    assert create_filter("threshold:maxval=3").output_range == (0.0, 3.0)
    assert create_filter("study-sobel").data_range == pytest.approx(2.25)


# -- the spec language ----------------------------------------------------------------------------


def test_parse_spec() -> None:
    assert parse_spec("gray|gaussian:ksize=3|sobel:dx=1,dy=1") == [
        ("gray", {}, "gray"),
        ("gaussian", {"ksize": "3"}, "gaussian:ksize=3"),
        ("sobel", {"dx": "1", "dy": "1"}, "sobel:dx=1,dy=1"),
    ]
    assert parse_spec("  Sobel : dx = 1 , ksize=5 ") == [
        ("sobel", {"dx": "1", "ksize": "5"}, "Sobel : dx = 1 , ksize=5")
    ]
    assert parse_spec("Canny:L2gradient=True") == [
        ("canny", {"l2gradient": "True"}, "Canny:L2gradient=True")
    ]
    assert create_filter("canny:L2gradient=true") == create_filter("canny:l2gradient=1")
    assert parse_spec("kernel:path=C:/k.npy") == [
        ("kernel", {"path": "C:/k.npy"}, "kernel:path=C:/k.npy")
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "sobel",
        "sobel:dx=1,dy=0,ksize=5",
        "gray|gaussian:ksize=3|sobel:dx=1,dy=1",
        "random:ksize=5,seed=3",
        "study-sobel",
        "study-random:seed=7",
        "kernel:rows=1 2;3 -4",
        "unsharp:amount=0.3,sigma=0.7",
        "canny:low=10.5,high=20|dilate:shape=cross",
        "threshold:thresh=0.1,type=TRUNC",
        "box:border=zeros",
        "sobel:channels=rgb|gaussian",
        "bilateral:border=wrap",
    ],
)
def test_canonical_round_trip(spec: str) -> None:
    f = create_filter(spec)
    again = create_filter(f.canonical)
    assert again == f and hash(again) == hash(f) and again.canonical == f.canonical
    assert create_filter(again.canonical).canonical == f.canonical
    x = torch.rand(2, 3, 20, 17)
    torch.testing.assert_close(again(x), f(x), rtol=0, atol=0)
    assert f.name == spec.strip() and f.spec == spec.strip()
    assert create_filter(f) is f


def test_canonical_spells_out_every_parameter() -> None:
    f = create_filter("sobel:ksize=5")
    assert f.canonical == "sobel:dx=1,dy=0,ksize=5,scale=1.0,border=reflect101,channels=gray"
    assert create_filter("study-sobel").canonical.startswith("gray|gaussian:ksize=3,sigma=0.0")
    assert create_filter("sobel") != create_filter("sobel:dx=0,dy=1")
    assert create_filter("sobel") == create_filter("sobel:dx=1")
    assert f.params[0] == {
        "name": "sobel",
        "dx": 1,
        "dy": 0,
        "ksize": 5,
        "scale": 1.0,
        "border": "reflect101",
        "channels": "gray",
    }


def test_chains_apply_left_to_right() -> None:
    x = torch.rand(2, 3, 24, 20)
    chain = create_filter("gaussian:ksize=5|sobel:dx=1,dy=0")
    sobel_stage = create_filter("sobel:dx=1,dy=0").stages[0]
    manual = sobel_stage(create_filter("gaussian:ksize=5")(x))  # a one-channel input stays as it is
    torch.testing.assert_close(chain(x), manual, rtol=0, atol=0)
    assert create_filter("sobel|abs")(x).min() >= 0
    assert not create_filter("sobel|abs").linear and create_filter("gray|sobel").linear


def test_filter_properties() -> None:
    f = create_filter("sobel:dx=1,dy=0,ksize=5,border=replicate")
    assert (f.linear, f.border, f.out_channels, f.backend, f.kernel_size) == (
        True,
        "replicate",
        1,
        "pytorch",
        (5, 5),
    )
    assert (
        create_filter("median").backend == "opencv"
        and create_filter("median").border == "replicate"
    )
    assert create_filter("gray").border == "reflect101"  # pointwise: OpenCV's default
    assert (
        "linear" in f.describe() and repr(f) == "Filter('sobel:dx=1,dy=0,ksize=5,border=replicate')"
    )


BAD_SPECS = [
    ("", "empty"),
    ("   ", "empty"),
    ("sobel||gaussian", "empty stage"),
    (":ksize=3", "no filter name"),
    ("blur", r"unknown filter 'blur'; known filters: \[.*'sobel'"),
    ("gray|blur", "unknown filter 'blur'"),
    ("sobel:size=3", r"unknown parameter 'size'; 'sobel' takes \[.*'ksize'"),
    ("sobel:ksize", "expected key=value"),
    ("sobel:dx=1,dx=0", "'dx' given twice"),
    ("sobel:dx=one", r"parameter 'dx' must be .*got 'one'"),
    ("sobel:dx=1.5", r"parameter 'dx' must be .*got '1.5'"),
    ("sobel:ksize=4", r"parameter 'ksize' must be one of \[1, 3, 5, 7\]; got '4'"),
    ("sobel:ksize=9", r"parameter 'ksize' must be one of \[1, 3, 5, 7\]; got '9'"),
    ("sobel:dx=0,dy=0", r"parameter 'dx\+dy' must be at least 1 .*got 0"),
    ("sobel:dx=3,ksize=3", r"parameter 'dx' must be smaller than 3 for ksize=3; got 3"),
    ("sobel:dx=-1,dy=1", r"parameter 'dx' must be a non-negative integer; got -1"),
    (
        "sobel:border=wrap",
        r"parameter 'border' must be one of \['reflect101', 'reflect', 'replicate', 'constant'\]; got 'wrap'",
    ),
    ("sobel:border=mirror", r"parameter 'border' must be one of .*got 'mirror'"),
    ("scharr:dx=1,dy=1", r"parameter 'dx\+dy' must be exactly 1 .*got 2"),
    ("laplacian:ksize=2", r"parameter 'ksize' must be one of \[1, 3, 5, 7\]; got '2'"),
    ("gaussian:ksize=4", r"parameter 'ksize' must be an odd integer from 1 to 31; got 4"),
    ("gaussian:ksize=33", r"parameter 'ksize' must be an odd integer from 1 to 31; got 33"),
    ("gaussian:ksize=0", r"parameter 'ksize' must be an odd integer from 1 to 31; got 0"),
    ("gaussian:sigma=-1", r"parameter 'sigma' must be a number >= 0; got -1.0"),
    ("gaussian:sigma_y=-0.5", r"parameter 'sigma_y' must be a number >= 0; got -0.5"),
    ("gaussian:sigma=nan", r"parameter 'sigma' must be .*got 'nan'"),
    (
        "box:ksize=7,border=wrap",
        r"parameter 'ksize' must be an odd integer from 1 to 5 with border=wrap .*got 7",
    ),
    ("box:normalize=maybe", r"parameter 'normalize' must be true\|false .*got 'maybe'"),
    ("unsharp:sigma=-1", r"parameter 'sigma' must be a number >= 0; got -1.0"),
    ("sharpen:amount=-1", r"parameter 'amount' must be a number >= 0; got -1.0"),
    ("random:ksize=6", r"parameter 'ksize' must be an odd integer from 1 to 31; got 6"),
    (
        "random:distribution=cauchy",
        r"parameter 'distribution' must be one of \['uniform', 'normal'\]; got 'cauchy'",
    ),
    ("random:seed=-3", r"parameter 'seed' must be an integer >= 0; got -3"),
    ("study-random:seed=x", r"parameter 'seed' must be .*got 'x'"),
    ("study-sobel:ksize=5", r"unknown parameter 'ksize'; 'study-sobel' takes \['border'\]"),
    ("study-sobel:border=wrap", r"parameter 'border' must be one of .*got 'wrap'"),
    ("magnitude:ksize=9", r"parameter 'ksize' must be one of \[1, 3, 5, 7\]; got '9'"),
    ("median:ksize=7", r"parameter 'ksize' must be one of \[3, 5\]; got '7'"),
    ("median:border=reflect", r"parameter 'border' must be one of \['replicate'\]; got 'reflect'"),
    ("bilateral:d=4", r"parameter 'd' must be an odd integer from 1 to 15; got 4"),
    ("bilateral:sigma_color=0", r"parameter 'sigma_color' must be a number > 0; got 0.0"),
    ("dilate:ksize=2", r"parameter 'ksize' must be an odd integer from 1 to 31; got 2"),
    (
        "erode:shape=disk",
        r"parameter 'shape' must be one of \['rect', 'ellipse', 'cross'\]; got 'disk'",
    ),
    ("open:border=wrap", r"parameter 'border' must be one of .*got 'wrap'"),
    ("canny:low=-1", r"parameter 'low' must be a number >= 0; got -1.0"),
    ("canny:low=200,high=100", r"parameter 'high' must be a number >= low \(200.0\); got 100.0"),
    ("canny:aperture=9", r"parameter 'aperture' must be one of \[3, 5, 7\]; got '9'"),
    ("threshold:type=otsu", r"parameter 'type' must be one of \['binary', .*got 'otsu'"),
    ("clip:min=1,max=0", r"parameter 'max' must be a number >= min \(1.0\); got 0.0"),
    ("gray:channels=rgb", r"unknown parameter 'channels'; 'gray' takes no parameters"),
    ("abs:border=reflect", r"unknown parameter 'border'; 'abs' takes \['channels'\]"),
    ("sobel:channels=bgr", r"parameter 'channels' must be one of \['gray', 'rgb'\]; got 'bgr'"),
    ("kernel", r"parameter 'path/rows' must be exactly one of path= or rows="),
    ("kernel:rows=1 2;3", r"parameter 'rows' must give a 2-D array .*rows differ in length"),
    ("kernel:rows=1 a", r"parameter 'rows' must be numbers separated by spaces, rows by ';'"),
    ("kernel:rows=;", r"parameter 'rows' must give a 2-D array .*it is empty"),
    ("kernel:rows=1 inf", r"parameter 'rows' must give a 2-D array .*inf or nan"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[s or "<empty>" for s, _ in BAD_SPECS])
def test_bad_specs_raise_value_error(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        create_filter(spec)
    if spec.strip():
        assert repr(spec.strip()) in str(error.value) or repr(spec.split("|")[-1]) in str(
            error.value
        )


def test_errors_in_a_chain_name_the_stage_and_the_chain() -> None:
    with pytest.raises(
        ValueError,
        match=r"filter 'sobel:dx=0,dy=0': .* \(in the filter chain 'gray\|sobel:dx=0,dy=0'\)",
    ):
        create_filter("gray|sobel:dx=0,dy=0")


def test_spec_type_errors() -> None:
    with pytest.raises(TypeError, match="spec string"):
        create_filter(3)  # type: ignore[arg-type]


def test_bad_batches() -> None:
    f = create_filter("sobel")
    with pytest.raises(TypeError, match=r"expected a float torch\.Tensor"):
        f(np.zeros((1, 3, 8, 8), np.float32))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"torch\.uint8 tensor"):
        f(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\); got \(3, 8, 8\)"):
        f(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\); got \(1, 1, 8, 8\)"):
        f(torch.zeros(1, 1, 8, 8))
    with pytest.raises(
        ValueError, match=r"filter 'sobel': image size must be at least 1x1 pixels; got 0x8"
    ):
        f(torch.zeros(1, 3, 0, 8))
    assert f(torch.zeros(0, 3, 8, 8)).shape == (0, 1, 8, 8)
    assert create_filter("median:channels=rgb")(torch.zeros(0, 3, 8, 8)).shape == (0, 3, 8, 8)


# -- kernel files ---------------------------------------------------------------------------------


def _filter2d_reference(kernel: np.ndarray, images: list[Image]) -> np.ndarray:
    return _stack(
        [cv2.filter2D(im.gray_cv, cv2.CV_32F, kernel.astype(np.float32)) for im in images]
    )


def test_kernel_files(tmp_path: Path, mini) -> None:
    batch, images = mini
    kernel = np.random.default_rng(4).normal(size=(3, 5))
    np.save(tmp_path / "k.npy", kernel)
    np.save(tmp_path / "k32.npy", kernel.astype(np.float32))
    np.save(tmp_path / "int.npy", np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.int16))
    (tmp_path / "k.txt").write_text(
        "# a 3x5 kernel\n"
        + "\n".join(", ".join(repr(float(v)) for v in row) for row in kernel)
        + "\n\n"
    )
    expected = _filter2d_reference(kernel, images)
    for name in ("k.npy", "k32.npy", "k.txt"):
        f = create_filter(f"kernel:path={tmp_path / name}")
        _check(name, _hwc(f(batch)), expected, exact=False)
        assert f.kernel_size == (3, 5)
        # the canonical spec carries the kernel inline: the file is no longer needed
        assert "rows=" in f.canonical and "path" not in f.canonical
        torch.testing.assert_close(create_filter(f.canonical)(batch), f(batch), rtol=0, atol=0)
    laplacian = create_filter(f"kernel:path={tmp_path / 'int.npy'}")
    torch.testing.assert_close(laplacian(batch), create_filter("laplacian")(batch), rtol=0, atol=0)


def test_kernel_rows_even_sides_use_opencvs_anchor(mini) -> None:
    batch, images = mini
    kernel = np.arange(1.0, 13.0).reshape(4, 3) - 6
    spec = "kernel:rows=" + ";".join(" ".join(str(v) for v in row) for row in kernel)
    f = create_filter(spec)
    assert f.kernel_size == (5, 3)
    _check(spec, _hwc(f(batch)), _filter2d_reference(kernel, images), exact=False)


BAD_FILES = {
    "one_d.npy": (
        lambda p: np.save(p, np.ones(3)),
        r"2-D array of numbers; .*shape \(3,\) is not 2-D",
    ),
    "three_d.npy": (lambda p: np.save(p, np.ones((3, 3, 3))), "is not 2-D"),
    "text.npy": (lambda p: np.save(p, np.array([["a", "b"]])), "is not numeric"),
    "objects.npy": (
        lambda p: np.save(p, np.array([[1, None]], dtype=object), allow_pickle=True),
        "2-D array of numbers",
    ),
    "empty.npy": (lambda p: np.save(p, np.zeros((0, 3))), "it is empty"),
    "huge.npy": (lambda p: np.save(p, np.ones((33, 3))), "exceeds 31 on a side"),
    "nan.npy": (lambda p: np.save(p, np.array([[1.0, np.nan]])), "inf or nan"),
    "garbage.npy": (lambda p: p.write_bytes(b"not a numpy file"), "2-D array of numbers"),
    "words.txt": (lambda p: p.write_text("1 2 3\nfour five six\n"), "2-D array of numbers"),
    "ragged.txt": (lambda p: p.write_text("1 2 3\n4 5\n"), "rows differ in length"),
    "blank.txt": (lambda p: p.write_text("\n# nothing\n"), "it is empty"),
    "binary.txt": (lambda p: p.write_bytes(b"\xff\xfe\x00\x81"), "2-D array of numbers"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_kernel_files(name: str, tmp_path: Path) -> None:
    write, message = BAD_FILES[name]
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError, match=message) as error:
        create_filter(f"kernel:path={path}")
    assert "parameter 'path'" in str(error.value) and str(path) in str(error.value)


def test_missing_kernel_file(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"parameter 'path': kernel file .*nope.npy' not found"
    ):
        create_filter(f"kernel:path={tmp_path / 'nope.npy'}")
    with pytest.raises(ValueError, match="exactly one of path= or rows="):
        create_filter(f"kernel:path={tmp_path / 'nope.npy'},rows=1")


# -- the study's presets --------------------------------------------------------------------------


def test_study_random_is_reproducible(mini) -> None:
    batch, _ = mini
    first, again, other = (create_filter(f"study-random:seed={s}") for s in (3, 3, 4))
    torch.testing.assert_close(first.kernel, again.kernel, rtol=0, atol=0)
    torch.testing.assert_close(first(batch), again(batch), rtol=0, atol=0)
    assert not torch.equal(first.kernel, other.kernel)
    expected = np.random.default_rng(3).random((3, 3)).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(first.stages[-1].kernel2d(), expected)
    assert ((expected >= 0) & (expected < 1)).all()
    # the kernel on the gray image, weights included
    np.testing.assert_array_equal(
        first.kernel[0].numpy(), np.stack([w * expected for w in GRAY_WEIGHTS])
    )
    assert create_filter("study-random") == create_filter("study-random:seed=0")


@pytest.mark.parametrize(
    ("ksize", "seed", "distribution"), [(3, 0, "uniform"), (5, 3, "uniform"), (5, 1, "normal")]
)
def test_random_kernel_is_numpys_documented_draw(ksize: int, seed: int, distribution: str) -> None:
    expected = _drawn_kernel(ksize, seed, distribution).astype(np.float64)
    np.testing.assert_array_equal(random_kernel(ksize, seed, distribution), expected)


def test_random_normal_kernel_is_zero_mean_and_normalised() -> None:
    kernel = random_kernel(5, 1, "normal")
    assert abs(kernel.sum()) < 1e-6 and abs(np.abs(kernel).sum() - 1) < 1e-6
    assert create_filter("random:distribution=normal,ksize=5,seed=1").output_range == pytest.approx(
        (-0.5, 0.5), abs=1e-6
    )


# -- registry, table, devices ---------------------------------------------------------------------


def test_list_filters() -> None:
    entries = list_filters()
    names = [entry.name for entry in entries]
    assert names == sorted(names)
    expected = {
        "gray",
        "sobel",
        "scharr",
        "laplacian",
        "gaussian",
        "box",
        "sharpen",
        "unsharp",
        "emboss",
        "random",
        "kernel",
        "study-sobel",
        "study-random",
        "magnitude",
        "median",
        "bilateral",
        "dilate",
        "erode",
        "open",
        "close",
        "canny",
        "threshold",
        "abs",
        "clip",
    }
    assert set(names) == expected
    for entry in entries:
        assert entry.description and entry.backend in ("pytorch", "opencv")
        assert (
            entry.linear
            == create_filter(entry.name if entry.name != "kernel" else "kernel:rows=1").linear
        )
        for param in entry.params:
            assert param.name and param.help and param.kind in (int, float, bool, str)
            if param.default is not None:
                param.parse(param.default, entry.name)  # every default is valid


def test_docstrings_name_the_backend() -> None:
    """Each filter's docstring says whether it runs in PyTorch or calls OpenCV per image."""
    for entry in list_filters():
        if entry.name.startswith("study-"):
            continue
        spec = entry.name if entry.name != "kernel" else "kernel:rows=1"
        stage = create_filter(spec).stages[-1]
        doc = type(stage).__doc__ or ""
        assert ("PyTorch" in doc) if entry.backend == "pytorch" else ("OpenCV, per image" in doc), (
            entry.name
        )


def test_format_filter_table() -> None:
    table = format_filter_table()
    for entry in list_filters():
        assert f"\n{entry.name}  (" in "\n" + table
        for param in entry.params:
            assert param.name in table and param.help in table
    assert (
        "odd, 1-31" in table
        and "1|3|5|7" in table
        and "reflect101|reflect|replicate|constant|wrap" in table
    )


DEVICE_SPECS = [
    "study-sobel",
    "study-random",
    "magnitude",
    "dilate:shape=ellipse",
    "threshold",
    "unsharp",
    "box:border=wrap",
    "clip",
    "gaussian:channels=rgb",
    "median",
    "canny",
    "bilateral",
]


@pytest.mark.parametrize("spec", DEVICE_SPECS)
def test_output_stays_on_the_input_device(spec: str) -> None:
    f = create_filter(spec)
    x = torch.rand(2, 3, 12, 10, device=torch.device("cpu"))
    out = f(x)
    assert out.device == x.device and out.dtype == torch.float32
    if f.backend == "pytorch":
        # The meta device holds no data: a hidden .cpu(), .numpy() or CPU-only tensor would fail here.
        meta = f(torch.empty(2, 3, 12, 10, device="meta"))
        assert meta.device.type == "meta" and meta.shape == out.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("spec", DEVICE_SPECS)
def test_cuda_matches_cpu(spec: str, mini) -> None:
    f = create_filter(spec)
    batch = mini[0]
    out = f(batch.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), f(batch), rtol=0, atol=1e-5)


def test_float64_batches(mini) -> None:
    batch = mini[0].double()
    f = create_filter("sobel:ksize=5")
    out = f(batch)
    assert out.dtype == torch.float64
    expected = _hwc(f(mini[0])).astype(np.float64)
    _check("sobel:ksize=5 (float64)", _hwc(out), expected, exact=False, large=True)

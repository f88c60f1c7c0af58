"""filter2d: ``cv2.filter2D`` is the oracle; the places that apply kernels give what they gave.

``cv2.filter2D`` (``cv2.sepFilter2D`` for separable factors) is compared bit for
bit wherever :func:`filter2d` runs OpenCV itself (NumPy images, float32 CPU batches
with kernels below ``SEPARABLE_FROM``), and within float32 rounding where it runs
``F.conv2d``. ``cv2.filter2D`` takes no ``BORDER_WRAP`` for direct kernels, so the
wrap oracle is ``cv2.filter2D`` of the image padded by ``np.pad(mode="wrap")``.

The second half keeps the former implementations of the call sites (the separate
correlation of :mod:`img2img_filters.filters.ops`, ``Filter.apply_kernel``'s own
convolution, the fast path's OpenCV calls) as they were, and checks that the call
sites now built on :func:`filter2d` return the same bits.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from img2img_filters import filters
from img2img_filters.border import CV2_BORDER_FLAGS, pad2d
from img2img_filters.filters import convolution, create_filter, filter2d, ops
from img2img_filters.infer.fast import FoldedFilter

OPENCV_BORDERS = ("reflect101", "reflect", "replicate", "constant")
BORDERS = (*OPENCV_BORDERS, "wrap")

#: Kernel shapes: odd, even, rectangular, one row, one column, one element.
SHAPES = ((3, 3), (5, 5), (4, 4), (2, 2), (3, 5), (4, 3), (1, 7), (6, 1), (1, 1), (7, 7))


def _image(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype in (np.uint8, np.uint16):
        return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    return rng.random(shape, dtype=np.float32)


def _kernel(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    """A float32-exact kernel with negative weights (float64, as the filters build them)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32).astype(np.float64)


def _oracle(image: np.ndarray, kernel: np.ndarray, border: str, anchor=(-1, -1)) -> np.ndarray:
    """``cv2.filter2D`` into float32; ``wrap`` through an ``np.pad`` wrap and a crop."""
    weights = kernel.astype(np.float32)
    if border != "wrap":
        flag = CV2_BORDER_FLAGS[border]
        return cv2.filter2D(image, cv2.CV_32F, weights, anchor=anchor, borderType=flag)
    kh, kw = kernel.shape
    ax, ay = (kw // 2, kh // 2) if anchor == (-1, -1) else anchor
    pads = [(ay, kh - 1 - ay), (ax, kw - 1 - ax)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pads, mode="wrap")
    out = cv2.filter2D(padded, cv2.CV_32F, weights, anchor=(ax, ay), borderType=0)
    out = out.reshape(padded.shape)  # a one-channel (H, W, 1) comes back as (H, W)
    return out[ay : ay + image.shape[0], ax : ax + image.shape[1]]


def _chw(images: np.ndarray) -> torch.Tensor:
    """``(B, H, W, C)`` float32 as a ``(B, C, H, W)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


# -- NumPy images: cv2.filter2D itself --------------------------------------------------------


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_arrays_equal_cv2_filter2d(border, shape, dtype, channels) -> None:
    size = (17, 22) if channels is None else (17, 22, channels)
    image = _image(size, dtype)
    kernel = _kernel(shape)
    out = filter2d(image, kernel, border)
    assert out.dtype == np.float32 and out.shape == image.shape
    expected = _oracle(image, kernel, border).reshape(image.shape)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("anchor", [(0, 0), (4, 2), (1, 0), (0, 2)])
def test_arrays_follow_the_anchor(border, anchor) -> None:
    image = _image((15, 12), np.float32)
    kernel = _kernel((3, 5))
    out = filter2d(image, kernel, border, anchor=anchor)
    np.testing.assert_array_equal(out, _oracle(image, kernel, border, anchor))
    assert not np.array_equal(out, filter2d(image, kernel, border))  # the anchor matters


@pytest.mark.parametrize("border", ["reflect101", "constant"])
def test_large_kernels_on_arrays_are_opencvs_dft(border) -> None:
    image = _image((40, 37), np.float32)
    kernel = _kernel((15, 13))
    np.testing.assert_array_equal(filter2d(image, kernel, border), _oracle(image, kernel, border))


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_separable_factors_equal_cv2_sep_filter2d(border, dtype) -> None:
    image = _image((19, 16), dtype)
    ky, kx = _kernel((1, 5))[0], _kernel((1, 3), seed=2)[0]
    out = filter2d(image, (ky, kx), border)
    ky32, kx32 = ky.astype(np.float32), kx.astype(np.float32)
    if border == "wrap":
        padded = np.pad(image, [(2, 2), (1, 1)], mode="wrap")
        expected = cv2.sepFilter2D(padded, cv2.CV_32F, kx32, ky32, borderType=0)[2:-2, 1:-1]
    else:
        flag = CV2_BORDER_FLAGS[border]
        expected = cv2.sepFilter2D(image, cv2.CV_32F, kx32, ky32, borderType=flag)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, filter2d(image, np.outer(ky, kx), border), atol=1e-3)


def test_a_full_kernel_on_an_array_sums_its_input_channels() -> None:
    image = _image((13, 11, 3), np.float32)
    kernel = np.stack(
        [np.stack([_kernel((3, 3), seed=o * 3 + c) for c in range(3)]) for o in (0, 1)]
    )
    out = filter2d(image, kernel, "reflect")
    assert out.shape == (13, 11, 2)
    for o in range(2):
        expected = _oracle(np.ascontiguousarray(image[..., 0]), kernel[o, 0], "reflect")
        for c in (1, 2):
            expected += _oracle(np.ascontiguousarray(image[..., c]), kernel[o, c], "reflect")
        np.testing.assert_array_equal(out[..., o], expected)


# -- tensors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("border", OPENCV_BORDERS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels", [1, 3])
def test_float32_cpu_batches_equal_cv2_filter2d(border, shape, channels) -> None:
    images = _image((2, 14, 19, channels), np.float32)
    kernel = _kernel(shape)
    out = filter2d(_chw(images), kernel, border)
    assert out.dtype == torch.float32 and out.shape == (2, channels, 14, 19)
    for b, image in enumerate(images):
        for c in range(channels):  # a batch is filtered plane by plane
            expected = _oracle(np.ascontiguousarray(image[..., c]), kernel, border)
            np.testing.assert_array_equal(out[b, c].numpy(), expected)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("anchor", [(0, 0), (2, 1), (3, 2)])
@pytest.mark.parametrize("autograd", [False, True])
def test_tensors_follow_the_anchor(border, anchor, autograd) -> None:
    """On OpenCV's path bit for bit; through ``F.conv2d`` (``wrap``, autograd) within rounding."""
    image = _image((16, 13), np.float32)
    kernel = _kernel((3, 4))
    batch = torch.from_numpy(image)[None, None].requires_grad_(autograd)
    out = filter2d(batch, kernel, border, anchor=anchor)[0, 0].detach().numpy()
    expected = _oracle(image, kernel, border, anchor)
    if border == "wrap" or autograd:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("shape", [(3, 3), (4, 6), (13, 13), (11, 15)])
def test_convolution_path_matches_opencv_within_rounding(border, shape) -> None:
    """``wrap``, float64, kernels of side 11 or more: ``F.conv2d``, equal up to rounding."""
    images = _image((2, 12, 17, 3), np.float32)
    kernel = _kernel(shape)
    for batch in (_chw(images), _chw(images).double()):
        out = filter2d(batch, kernel, border)
        assert out.dtype == batch.dtype
        for b, image in enumerate(images):
            expected = _oracle(image, kernel, border)
            got = out[b].permute(1, 2, 0).float().numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("border", OPENCV_BORDERS)
def test_large_rank_one_kernels_run_separably(border) -> None:
    column = np.r_[np.arange(1, 15) / 16, 1.0]  # dyadic, largest 1: the factors are exact
    kernel = np.outer(column, np.arange(-6, 7) / 8)
    assert convolution._separable(kernel) is not None
    image = _image((30, 33), np.float32)
    out = filter2d(torch.from_numpy(image)[None, None], kernel, border)[0, 0].numpy()
    np.testing.assert_allclose(out, _oracle(image, kernel, border), rtol=1e-5, atol=1e-6)


def test_a_full_kernel_on_a_batch_sums_its_input_channels() -> None:
    images = _image((2, 10, 9, 3), np.float32)
    kernel = torch.from_numpy(np.stack([np.stack([_kernel((5, 3), seed=c) for c in range(3)])]))
    out = filter2d(_chw(images), kernel, "replicate")
    assert out.shape == (2, 1, 10, 9)
    for b, image in enumerate(images):
        planes = [np.ascontiguousarray(image[..., c]) for c in range(3)]
        expected = sum(_oracle(p, kernel[0, c].numpy(), "replicate") for c, p in enumerate(planes))
        np.testing.assert_allclose(out[b, 0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_the_convolution() -> None:
    batch = torch.rand(1, 1, 8, 8, requires_grad=True)
    filter2d(batch, np.ones((3, 3)), "reflect101").sum().backward()
    assert batch.grad is not None and torch.isfinite(batch.grad).all()
    assert batch.grad.abs().sum() > 0


def test_a_kernel_larger_than_the_image() -> None:
    image = _image((3, 2), np.float32)
    kernel = _kernel((7, 5))
    for border in OPENCV_BORDERS:
        expected = _oracle(image, kernel, border)
        np.testing.assert_array_equal(filter2d(image, kernel, border), expected)
        got = filter2d(torch.from_numpy(image)[None, None], kernel, border)[0, 0].numpy()
        np.testing.assert_array_equal(got, expected)


def test_filter2d_is_exported_where_filters_are() -> None:
    assert ops.filter2d is convolution.filter2d
    assert filters.filter2d is convolution.filter2d
    assert "filter2d" in filters.__all__ and "filter2d" in ops.__all__


@pytest.mark.parametrize(
    ("images", "kernel", "kwargs", "error", "words"),
    [
        (torch.zeros(1, 1, 4, 4, dtype=torch.int32), np.ones((3, 3)), {}, TypeError, "float"),
        (torch.zeros(4, 4), np.ones((3, 3)), {}, ValueError, "(B, C, H, W)"),
        (np.zeros((4, 4)), np.ones((3, 3)), {}, TypeError, "float64"),
        (np.zeros((2, 4, 4, 1), np.float32), np.ones((3, 3)), {}, ValueError, "(H, W, C)"),
        ([[0.0]], np.ones((3, 3)), {}, TypeError, "list"),
        (torch.zeros(1, 1, 4, 4), np.ones((3, 3, 3)), {}, ValueError, "(3, 3, 3)"),
        (torch.zeros(1, 1, 4, 4), np.ones((0, 3)), {}, ValueError, "(0, 3)"),
        (torch.zeros(1, 2, 4, 4), np.ones((1, 3, 3, 3)), {}, ValueError, "C_in"),
        (np.zeros((4, 4), np.float32), np.ones((3, 3)), {"anchor": (3, 0)}, ValueError, "anchor"),
        (np.zeros((4, 4), np.float32), np.ones((3, 3)), {"anchor": (1,)}, ValueError, "anchor"),
        (np.zeros((4, 4), np.float32), np.ones((3, 3)), {"border": "mirror"}, ValueError, "mirror"),
    ],
)
def test_bad_input_names_what_was_expected(images, kernel, kwargs, error, words) -> None:
    with pytest.raises(error, match=r"filter2d|border") as caught:
        filter2d(images, kernel, **kwargs)
    assert words in str(caught.value)


# -- the call sites give what they gave -------------------------------------------------------


def _former_correlate(x: torch.Tensor, kernel: np.ndarray, border: str) -> torch.Tensor:
    """``filters.ops.correlate`` as it was, with its OpenCV and separable paths."""

    def weights(array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        return tensor.to(dtype=x.dtype).to(x.device)

    kh, kw = kernel.shape
    batch, channels, height, width = x.shape
    n = batch * channels
    opencv = x.dtype == torch.float32 and not (torch.is_grad_enabled() and x.requires_grad)
    if max(kh, kw) < 11 and border != "wrap" and opencv:
        planes = x.detach().contiguous().numpy().reshape(-1, height, width)
        out = np.empty_like(planes)
        flag = CV2_BORDER_FLAGS[border]
        for plane, result in zip(planes, out, strict=True):
            cv2.filter2D(plane, -1, kernel.astype(np.float32), dst=result, borderType=flag)
        return torch.from_numpy(out).view(x.shape)
    padded = pad2d(x, kw // 2, kw // 2, kh // 2, kh // 2, border)
    padded = padded.reshape(1, n, height + kh - 1, width + kw - 1)
    rank_one = convolution._separable(kernel) if max(kh, kw) >= 11 else None
    if rank_one is not None:
        column, row = rank_one
        rw = weights(row).view(1, 1, 1, kw).expand(n, 1, 1, kw)
        col = weights(column).view(1, 1, kh, 1).expand(n, 1, kh, 1)
        out = F.conv2d(F.conv2d(padded, rw, groups=n), col, groups=n)
    else:
        out = F.conv2d(padded, weights(kernel).view(1, 1, kh, kw).expand(n, 1, kh, kw), groups=n)
    return out.view(batch, channels, height, width)


def _former_apply_kernel(f, batch: torch.Tensor) -> torch.Tensor:
    """``Filter.apply_kernel`` as it was: its own padding and depthwise convolutions."""
    out_channels, in_channels, kh, kw = f.kernel.shape
    batch_size, _, height, width = batch.shape
    padded = pad2d(batch, kw // 2, kw // 2, kh // 2, kh // 2, f.border)
    padded = padded.reshape(1, batch_size * in_channels, height + kh - 1, width + kw - 1)
    kernel = f.kernel.to(batch.dtype).to(batch.device)
    outputs = []
    for c in range(out_channels):
        weight = kernel[c].unsqueeze(1).repeat(batch_size, 1, 1, 1)
        out = F.conv2d(padded, weight, groups=batch_size * in_channels)
        outputs.append(out.view(batch_size, in_channels, height, width).sum(dim=1))
    return torch.stack(outputs, dim=1)


def _former_fast_filter(self, plane, kernel, separable):
    """``FoldedFilter._filter`` as it was: OpenCV called directly, ``wrap`` padded first."""
    ry, rx = self.halo
    if self.border == "wrap":
        plane = cv2.copyMakeBorder(plane, ry, ry, rx, rx, cv2.BORDER_WRAP)
        flag = cv2.BORDER_CONSTANT
    else:
        flag = CV2_BORDER_FLAGS[self.border]
    if separable is not None:
        result = cv2.sepFilter2D(plane, cv2.CV_32F, separable[1], separable[0], borderType=flag)
    else:
        result = cv2.filter2D(plane, cv2.CV_32F, kernel, borderType=flag)
    if self.border == "wrap":
        result = result[ry : result.shape[0] - ry, rx : result.shape[1] - rx]
    return result


#: Linear specs covering the OpenCV path, the separable path, the depthwise path and wrap.
LINEAR_SPECS = (
    "sobel:dx=1,dy=0,ksize=5",
    "gaussian:ksize=15,sigma=3,channels=rgb",
    "random:ksize=13,seed=3,border=reflect",
    "box:ksize=5,border=wrap,channels=rgb",
    "kernel:rows=1 2;3 -4,border=replicate",
    "emboss:border=constant",
    "study-sobel",
    "magnitude:ksize=3",
)


@pytest.mark.parametrize("spec", LINEAR_SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_filters_give_the_same_bits_as_before(spec, dtype) -> None:
    batch = torch.rand(2, 3, 21, 18, generator=torch.Generator().manual_seed(5), dtype=dtype)
    f = create_filter(spec)
    x = batch
    for stage in f.stages:
        if stage.to_gray(x.shape[1]):
            x = ops.rgb_to_gray(x)
        if stage.name == "magnitude":
            kx, ky = stage._kernels()
            gx = _former_correlate(x, kx, stage.border)
            gy = _former_correlate(x, ky, stage.border)
            x = torch.sqrt(gx * gx + gy * gy)
        elif stage.spatial:
            x = _former_correlate(x, stage.kernel2d(), stage.border)
    assert torch.equal(f(batch), x)


@pytest.mark.parametrize(
    "spec", ["study-sobel", "box:ksize=5,border=wrap|gaussian:ksize=13,sigma=2"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_apply_kernel_gives_the_same_bits_as_before(spec, dtype) -> None:
    batch = torch.rand(3, 3, 16, 20, generator=torch.Generator().manual_seed(6), dtype=dtype)
    f = create_filter(spec)
    assert torch.equal(f.apply_kernel(batch), _former_apply_kernel(f, batch))


@pytest.mark.parametrize("border", BORDERS)
def test_correlate_gives_the_same_bits_as_before(border) -> None:
    batch = torch.rand(2, 2, 13, 15, generator=torch.Generator().manual_seed(7))
    for kernel in (_kernel((5, 3)), _kernel((13, 13)), np.outer(_kernel((1, 11))[0], [1, 2, 1.0])):
        assert torch.equal(
            ops.correlate(batch, kernel, border), _former_correlate(batch, kernel, border)
        )
    with pytest.raises(ValueError, match="odd"):
        ops.correlate(batch, np.ones((2, 3)), border)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_the_fast_path_gives_the_same_bits_as_before(border, dtype) -> None:
    rng = np.random.default_rng(8)
    gray = np.asarray([0.299, 0.587, 0.114])
    separable = np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0])
    kernel = np.stack(
        [
            gray[:, None, None] * separable,  # gray + sepFilter2D
            gray[:, None, None] * rng.standard_normal((3, 3)),  # gray + filter2D
            rng.standard_normal((3, 3, 3)),  # one filter2D per input channel
        ]
    )
    image = _image((23, 17, 3), dtype)
    folded = FoldedFilter(kernel, np.array([0.0, 0.25, -0.5]), border)
    former = FoldedFilter(kernel, np.array([0.0, 0.25, -0.5]), border)
    former._filter = _former_fast_filter.__get__(former)
    assert folded.methods == ["gray + sepFilter2D", "gray + filter2D", "filter2D per input channel"]
    np.testing.assert_array_equal(folded(image), former(image))
    np.testing.assert_array_equal(folded(image[..., :1]), former(image[..., :1]))

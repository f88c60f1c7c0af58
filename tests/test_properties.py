"""Property tests (Hypothesis): tiling, filter kernels, folding, finite outputs, borders.

Every test is deterministic (``derandomize=True``, no example database) and
bounded (``max_examples``), so the file runs in well under a minute on two cores.
The properties, for random sizes (tiny and odd ones included), tiles, borders and
parameters:

* tiled inference equals whole-image inference, for every registered architecture;
* every linear filter equals the convolution with its reported kernel
  (``Filter.apply_kernel`` and an independent OpenCV-padded convolution);
* ``fold_linear`` preserves the outputs of random linear stacks away from the borders;
* ``apply_filter`` never returns NaN or Inf for finite input of any accepted dtype and layout,
  and gives the same result for an array and any view of it (strides, transposes);
* ``pad2d`` equals ``cv2.copyMakeBorder`` for any size and pad, pads wider than the image included.
"""

from __future__ import annotations

import inspect

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from img2img_filters.border import BORDER_MODES, CV2_BORDER_FLAGS, pad2d
from img2img_filters.filters import create_filter
from img2img_filters.infer import apply_filter
from img2img_filters.models import create_img2img_model, get_arch, list_archs, receptive_field
from img2img_filters.solve import fold_linear

ARCHS = [entry.name for entry in list_archs()]
BORDERS = sorted(BORDER_MODES)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- models with random small options and random weights -------------------------------------------

#: Small option choices per architecture, so that random models stay cheap. An architecture
#: registered later without an entry here is still tested, with its defaults and a random border.
_SMALL_OPTIONS = {
    "linear": {
        "kernel_size": [1, 3, 5],
        "depth": [1, 2, 3],
        "width": [2, 3],
        "bias": [True, False],
    },
    "study": {},
    "can": {"width": [3, 4], "depth": [1, 2, 3, 4]},
    "structured": {
        "kernel_size": [1, 3, 5],
        "features": [2, 3],
        "hidden": [4],
        "layers": [0, 1, 2],
    },
    "neighbourhood": {
        "features": [1, 2],
        "feature_size": [1, 3],
        "window": [1, 3, 5],
        "hidden": [4],
        "layers": [0, 1],
    },
}


@st.composite
def random_models(draw: st.DrawFn, archs: list[str] | None = None, out_channels=(1, 2, 3)):
    """``(arch, options, model)``: a registered architecture with random small options and weights."""
    arch = draw(st.sampled_from(archs or ARCHS))
    defaults = get_arch(arch).defaults
    options = {}
    for key, choices in _SMALL_OPTIONS.get(arch, {}).items():
        if key in defaults:
            options[key] = draw(st.sampled_from(choices))
    if "border" in defaults:
        options["border"] = draw(st.sampled_from(BORDERS))
    out = draw(st.sampled_from(out_channels))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    model = create_img2img_model(3, out, arch, **options)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
        for module in model.modules():  # BatchNorm statistics that are not the identity
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return arch, options, model.eval()


@st.composite
def images(draw: st.DrawFn, max_side: int = 40):
    """A uint8 ``(H, W, 3)`` image of random size, tiny and one-pixel-wide sides included."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _assert_close(actual: np.ndarray, expected: np.ndarray, tolerance: float = 2e-5) -> None:
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    assert error <= tolerance * scale, f"max error {error:.3g} at output scale {scale:.3g}"


# -- tiled inference equals whole-image inference --------------------------------------------------


def test_apply_filter_takes_a_tile_argument() -> None:
    """The tiling properties below need ``apply_filter(..., tile=...)``."""
    assert "tile" in inspect.signature(apply_filter).parameters


@_settings(250)
@given(model=random_models(), image=images(48), extra=st.integers(0, 20), fast=st.booleans())
def test_tiled_equals_whole_image(model, image: np.ndarray, extra: int, fast: bool) -> None:
    _, _, network = model
    field = receptive_field(network)
    tile = field + extra
    # fast=None folds a depth-1 linear model into one OpenCV filter; fast=False runs the network.
    mode = None if fast else False
    whole = apply_filter(image, network, tile=max(*image.shape[:2], field), device="cpu", fast=mode)
    tiled = apply_filter(image, network, tile=tile, device="cpu", fast=mode)
    assert np.isfinite(tiled).all()
    _assert_close(tiled, whole)


@_settings(60)
@given(model=random_models(), image=images(24))
def test_whole_image_inference_equals_the_network(model, image: np.ndarray) -> None:
    """The reference for the tiles: one forward pass of the network on the whole image."""
    _, _, network = model
    with torch.no_grad():
        batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        expected = network(batch)[0].permute(1, 2, 0).numpy()
    result = apply_filter(image, network, device="cpu", fast=False)
    if expected.shape[-1] == 1:
        expected = expected[..., 0]
    _assert_close(result, expected)


# -- linear filters equal the convolution with their reported kernel -------------------------------

_ODD = st.sampled_from([1, 3, 5, 7])


@st.composite
def linear_specs(draw: st.DrawFn) -> str:
    """A one-stage linear filter spec with random parameters, border and channels."""
    name = draw(
        st.sampled_from(
            [
                *("sobel", "scharr", "laplacian", "gaussian", "box", "sharpen", "unsharp"),
                *("emboss", "random", "kernel"),
            ]
        )
    )
    params: dict[str, object] = {}
    borders = ["reflect101", "reflect", "replicate", "constant"]
    if name == "sobel":
        ksize = draw(_ODD)
        limit = max(ksize, 3)
        dx = draw(st.integers(0, limit - 1))
        dy = draw(st.integers(0 if dx else 1, limit - 1))
        params = {"dx": dx, "dy": dy, "ksize": ksize, "scale": draw(st.sampled_from([1.0, 0.25]))}
    elif name == "scharr":
        dx = draw(st.integers(0, 1))
        params = {"dx": dx, "dy": 1 - dx}
    elif name == "laplacian":
        params = {"ksize": draw(_ODD)}
    elif name == "gaussian":
        params = {
            "ksize": draw(st.sampled_from([1, 3, 5, 7, 9])),
            "sigma": draw(st.sampled_from([0.0, 0.5, 1.5, 3.0])),
        }
    elif name == "box":
        ksize = draw(_ODD)
        params = {"ksize": ksize, "normalize": draw(st.booleans())}
        if ksize <= 5:
            borders = [*borders, "wrap"]
    elif name == "sharpen":
        params = {"amount": draw(st.sampled_from([0.0, 0.5, 2.0]))}
    elif name == "unsharp":
        params = {
            "amount": draw(st.sampled_from([0.5, 1.0])),
            "ksize": draw(st.sampled_from([3, 5])),
        }
    elif name == "random":
        distribution = draw(st.sampled_from(["uniform", "normal"]))
        params = {
            "ksize": draw(_ODD if distribution == "uniform" else st.sampled_from([3, 5, 7])),
            "seed": draw(st.integers(0, 1000)),
            "distribution": distribution,
        }
    elif name == "kernel":
        kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))  # even sides too
        values = draw(st.lists(st.integers(-4, 4), min_size=kh * kw, max_size=kh * kw))
        rows = ";".join(" ".join(str(v) for v in values[r * kw : (r + 1) * kw]) for r in range(kh))
        params = {"rows": rows}
    params["border"] = draw(st.sampled_from(borders))
    if name != "emboss" or draw(st.booleans()):
        params["channels"] = draw(st.sampled_from(["gray", "rgb"]))
    return name + ":" + ",".join(f"{key}={value}" for key, value in params.items())


def _reference_convolution(batch: torch.Tensor, kernel: torch.Tensor, border: str) -> np.ndarray:
    """``(B, 3, H, W)`` -> ``(B, C, H, W)`` float64: pad each channel with OpenCV, correlate in float64."""
    _, _, kh, kw = kernel.shape
    images = batch.double().numpy()
    padded = np.stack(
        [
            np.stack(
                [
                    cv2.copyMakeBorder(
                        channel,
                        kh // 2,
                        kh // 2,
                        kw // 2,
                        kw // 2,
                        CV2_BORDER_FLAGS[border],
                        value=0,
                    )
                    for channel in image
                ]
            )
            for image in images
        ]
    )
    return F.conv2d(torch.from_numpy(padded), kernel.double()).numpy()


@_settings(400)
@given(
    spec=linear_specs(),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    seed=st.integers(0, 99),
)
def test_linear_filter_equals_its_kernel(spec: str, height: int, width: int, seed: int) -> None:
    f = create_filter(spec)
    assert f.linear and f.kernel is not None
    assert f.kernel.shape[:2] == (f.out_channels, 3)
    assert torch.isfinite(f.kernel).all(), spec
    batch = torch.from_numpy(
        np.random.default_rng(seed).random((2, 3, height, width), dtype=np.float32)
    )
    filtered = f(batch).double().numpy()
    via_kernel = f.apply_kernel(batch).double().numpy()
    reference = _reference_convolution(batch, f.kernel, f.border)
    scale = float(f.kernel.abs().sum()) + 1.0  # the largest possible output for inputs in [0, 1]
    np.testing.assert_allclose(filtered, reference, rtol=0, atol=2e-6 * scale, err_msg=spec)
    np.testing.assert_allclose(via_kernel, reference, rtol=0, atol=2e-6 * scale, err_msg=spec)


@_settings(150)
@given(
    first=linear_specs(),
    second=linear_specs(),
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    seed=st.integers(0, 99),
)
def test_chained_linear_filters_equal_their_kernel_inside(
    first: str, second: str, height: int, width: int, seed: int
) -> None:
    """Two spatial stages: the composed kernel is exact wherever its support lies inside the image."""
    spec = f"{first}|{second}"
    f = create_filter(spec)
    kh, kw = f.kernel_size
    batch = torch.from_numpy(
        np.random.default_rng(seed).random((1, 3, height, width), dtype=np.float32)
    )
    filtered = f(batch).double().numpy()
    valid = F.conv2d(batch.double(), f.kernel).numpy() if height >= kh and width >= kw else None
    assert filtered.shape == (1, f.out_channels, height, width)
    if valid is not None:
        top, left = kh // 2, kw // 2
        inside = filtered[..., top : top + valid.shape[-2], left : left + valid.shape[-1]]
        scale = float(f.kernel.abs().sum()) + 1.0
        np.testing.assert_allclose(inside, valid, rtol=0, atol=5e-6 * scale, err_msg=spec)


def test_a_normal_random_kernel_of_one_pixel_is_refused() -> None:
    """One entry minus its mean is zero: normalising it gave a NaN kernel and NaN targets."""
    with pytest.raises(ValueError, match=r"'ksize' must be at least 3 with distribution=normal"):
        create_filter("random:ksize=1,distribution=normal")
    assert torch.isfinite(create_filter("random:ksize=1").kernel).all()


# -- folding preserves outputs ---------------------------------------------------------------------


@st.composite
def linear_stacks(draw: st.DrawFn) -> nn.Module:
    """A random linear stack: ``nn.Conv2d`` layers of random size, dilation, groups, padding mode."""
    depth = draw(st.integers(1, 4))
    channels = [draw(st.sampled_from([1, 2, 3, 4]))]
    layers: list[nn.Module] = []
    for _ in range(depth):
        groups = draw(st.sampled_from([g for g in (1, 2) if channels[-1] % g == 0]))
        out = groups * draw(st.integers(1, 3))
        kernel = draw(st.sampled_from([1, 3, 5]))
        dilation = draw(st.sampled_from([1, 2]))
        mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
        layers.append(
            nn.Conv2d(
                channels[-1],
                out,
                kernel,
                padding=dilation * (kernel // 2),
                dilation=dilation,
                groups=groups,
                bias=draw(st.booleans()),
                padding_mode=mode,
            )
        )
        if draw(st.booleans()):
            layers.append(nn.Identity())
        channels.append(out)
    torch.manual_seed(draw(st.integers(0, 2**16)))
    stack = nn.Sequential(*layers).double()
    with torch.no_grad():
        for parameter in stack.parameters():
            parameter.normal_()
    return stack


@_settings(200)
@given(
    stack=linear_stacks(),
    extra_h=st.integers(0, 8),
    extra_w=st.integers(0, 8),
    seed=st.integers(0, 99),
)
def test_fold_linear_preserves_interior_outputs(
    stack, extra_h: int, extra_w: int, seed: int
) -> None:
    weight, bias = fold_linear(stack)
    kh, kw = weight.shape[-2:]
    in_channels = stack[0].in_channels
    # Reflect padding needs the image larger than each layer's pad: keep every side >= the kernel.
    x = torch.from_numpy(
        np.random.default_rng(seed).standard_normal((1, in_channels, kh + extra_h, kw + extra_w))
    )
    with torch.no_grad():
        full = stack(x)
    folded = F.conv2d(x, weight, bias)
    inside = full[..., kh // 2 : kh // 2 + folded.shape[-2], kw // 2 : kw // 2 + folded.shape[-1]]
    scale = float(weight.abs().sum(dim=(1, 2, 3)).max() * x.abs().max() + bias.abs().max()) + 1.0
    torch.testing.assert_close(inside, folded, rtol=0, atol=1e-10 * scale)


@_settings(80)
@given(model=random_models(archs=["linear"]), seed=st.integers(0, 99))
def test_fold_linear_of_the_linear_architecture(model, seed: int) -> None:
    _, _, network = model
    weight, bias = fold_linear(network)
    field = receptive_field(network)
    assert weight.shape[-2:] == (field, field)
    x = torch.from_numpy(np.random.default_rng(seed).random((1, 3, field + 5, field + 3)))
    with torch.no_grad():
        full = network.double()(x)
    folded = F.conv2d(x, weight, bias)
    half = field // 2
    inside = full[..., half : half + folded.shape[-2], half : half + folded.shape[-1]]
    torch.testing.assert_close(inside, folded, rtol=0, atol=1e-9)


# -- apply_filter never returns NaN for finite input -----------------------------------------------

_DTYPES = [np.uint8, np.uint16, np.float16, np.float32, np.float64]
_LAYOUTS = ["gray2d", "gray3d", "rgb", "rgba"]


@st.composite
def any_images(draw: st.DrawFn) -> np.ndarray:
    """Finite images of every accepted dtype and layout, extreme values included."""
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    layout = draw(st.sampled_from(_LAYOUTS))
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    channels = {"gray2d": None, "gray3d": 1, "rgb": 3, "rgba": 4}[layout]
    shape = (height, width) if channels is None else (height, width, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["random", "zeros", "full", "extremes"]))
    if dtype.kind == "u":
        top = np.iinfo(dtype).max
        values = {
            "random": lambda: rng.integers(0, top, shape, endpoint=True),
            "zeros": lambda: np.zeros(shape),
            "full": lambda: np.full(shape, top),
            "extremes": lambda: rng.choice([0, top], shape),
        }[kind]()
    else:
        values = {
            "random": lambda: rng.random(shape),
            "zeros": lambda: np.zeros(shape),
            "full": lambda: np.ones(shape),
            "extremes": lambda: rng.choice([0.0, 1.0, 1e-30, np.finfo(dtype).tiny], shape),
        }[kind]()
    return np.ascontiguousarray(values.astype(dtype))


@_settings(250)
@given(image=any_images(), model=random_models(), tiled=st.booleans())
def test_apply_filter_output_is_finite(image: np.ndarray, model, tiled: bool) -> None:
    _, _, network = model
    tile = receptive_field(network) if tiled else None
    result = apply_filter(image, network, tile=tile, device="cpu")
    out_channels = network.config["out_channels"]
    expected_shape = image.shape[:2] if out_channels == 1 else (*image.shape[:2], out_channels)
    assert result.shape == expected_shape
    assert result.dtype == np.float32
    assert np.isfinite(result).all()


@_settings(50)
@given(model=random_models(), seed=st.integers(0, 99))
def test_apply_filter_treats_every_dtype_and_layout_alike(model, seed: int) -> None:
    """The same picture as uint8, uint16 and float, gray or RGB or RGBA, gives the same output."""
    _, _, network = model
    rng = np.random.default_rng(seed)
    rgb8 = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    expected = apply_filter(rgb8, network, device="cpu")
    variants = [
        rgb8.astype(np.uint16) * 257,
        rgb8.astype(np.float32) / 255,
        rgb8.astype(np.float64) / 255,
        np.dstack([rgb8, rng.integers(0, 256, (9, 11), dtype=np.uint8)]),
    ]
    for variant in variants:
        _assert_close(apply_filter(variant, network, device="cpu"), expected, 1e-5)
    gray = rgb8[..., 0]
    expected_gray = apply_filter(np.dstack([gray] * 3), network, device="cpu")
    _assert_close(apply_filter(gray, network, device="cpu"), expected_gray, 1e-6)
    _assert_close(apply_filter(gray[..., None], network, device="cpu"), expected_gray, 1e-6)


_VIEWS = {
    "flipped rows": lambda a: a[::-1],
    "flipped columns": lambda a: a[:, ::-1],
    "transposed": lambda a: a.transpose(1, 0, 2),
    "Fortran order": np.asfortranarray,
    "strided": lambda a: a[::2, ::3],
    "reversed channels": lambda a: a[..., ::-1],
    "read-only": lambda a: np.lib.stride_tricks.as_strided(a, writeable=False),
}


@_settings(60)
@given(
    model=random_models(),
    image=images(40),
    view=st.sampled_from(sorted(_VIEWS)),
    tiled=st.booleans(),
)
def test_apply_filter_ignores_the_memory_layout(
    model, image: np.ndarray, view: str, tiled: bool
) -> None:
    """Views (negative strides, transposes, read-only memory) give what their copies give."""
    _, _, network = model
    viewed = _VIEWS[view](image)
    tile = receptive_field(network) if tiled else None
    result = apply_filter(viewed, network, tile=tile, device="cpu")
    _assert_close(result, apply_filter(np.array(viewed), network, tile=tile, device="cpu"), 1e-6)


# -- pad2d equals cv2.copyMakeBorder ---------------------------------------------------------------


@_settings(1000)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    pads=st.tuples(*[st.integers(0, 25)] * 4),
    border=st.sampled_from(BORDERS),
    channels=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 99),
)
def test_pad2d_equals_copymakeborder(
    height: int, width: int, pads: tuple[int, int, int, int], border: str, channels, seed: int
) -> None:
    left, right, top, bottom = pads
    shape = (height, width) if channels is None else (channels, height, width)
    tensor = torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))
    ours = pad2d(tensor, left, right, top, bottom, border).numpy()
    image = tensor.numpy() if channels is None else tensor.permute(1, 2, 0).numpy()
    expected = cv2.copyMakeBorder(
        image, top, bottom, left, right, CV2_BORDER_FLAGS[border], value=0
    )
    if channels is not None:
        expected = expected.reshape(height + top + bottom, width + left + right, channels)
        expected = expected.transpose(2, 0, 1)
    np.testing.assert_array_equal(ours, expected, err_msg=f"{border} {shape} {pads}")

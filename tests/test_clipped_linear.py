"""Operators that are linear up to clipping: the model, the clipped fit, ``--arch auto``, end to end.

OpenCV's ``filter2D`` on uint8 photos is the oracle: it convolves and saturates
to [0, 255], as an image tool saving a sharpened photo does. Pillow's kernel
filters are the real tool that also leaves the photo's outer ring as it was.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from img2img_filters import apply_filter, load_model
from img2img_filters.auto import choose_arch
from img2img_filters.data import load_filtered_dataset
from img2img_filters.export import check_onnx, export_onnx
from img2img_filters.filters.external import CallableFilter
from img2img_filters.models import ClippedLinearNet, create_img2img_model
from img2img_filters.runs import DataConfig, ModelConfig, train_run
from img2img_filters.solve import fit_linear

#: A 3x3 sharpening kernel (sums to 1): it pushes bright and dark edges past [0, 255].
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)


def sharpen(photo: np.ndarray) -> np.ndarray:
    """OpenCV's 3x3 sharpening of a uint8 RGB photo, saturated to uint8, replicated border."""
    return cv2.filter2D(photo, -1, SHARPEN, borderType=cv2.BORDER_REPLICATE)


def contour(photo: np.ndarray) -> np.ndarray:
    """Pillow's ``ImageFilter.CONTOUR`` (255 + a Laplacian, clipped; the outer ring unchanged)."""
    return np.asarray(Image.fromarray(photo, "RGB").filter(ImageFilter.CONTOUR))


def _photos(count: int, side: int = 40) -> torch.Tensor:
    rng = np.random.default_rng(3)
    return torch.from_numpy(rng.random((count, 3, side, side), dtype=np.float32))


def _set_kernel(model: ClippedLinearNet, kernel: np.ndarray, bias: float = 0.0) -> None:
    conv = model.layers[0]
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(conv.weight.shape[0]):
            conv.weight[c, c] = torch.from_numpy(kernel)
        conv.bias.fill_(bias)


def test_the_model_is_opencvs_saturated_convolution() -> None:
    model = create_img2img_model(3, 3, "clipped_linear", kernel_size=3, border="replicate")
    _set_kernel(model, SHARPEN)
    photo = (_photos(1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    expected = sharpen(photo).astype(np.float32) / 255
    with torch.no_grad():
        output = model(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    got = output[0].permute(1, 2, 0).numpy()
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert (expected == 0).any() and (expected == 1).any()  # the oracle did clip
    np.testing.assert_allclose(got, expected, atol=0.5 / 255)


def test_keep_edge_copies_the_input_on_the_outer_ring() -> None:
    model = create_img2img_model(3, 3, "clipped_linear", kernel_size=5, keep_edge=2)
    _set_kernel(model, np.full((5, 5), 1 / 25, np.float32), bias=0.3)
    x = _photos(2)
    with torch.no_grad():
        y = model(x)
        plain = create_img2img_model(3, 3, "clipped_linear", kernel_size=5)
        plain.load_state_dict(model.state_dict())
        inner = plain(x)
    ring = torch.ones_like(x, dtype=torch.bool)
    ring[..., 2:-2, 2:-2] = False
    assert torch.equal(y[ring], x[ring])
    assert torch.equal(y[..., 2:-2, 2:-2], inner[..., 2:-2, 2:-2])
    assert not torch.equal(y[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"low": 1.0, "high": 0.0}, "high must be greater than low"),
        ({"low": float("nan")}, "low must be a finite number"),
        ({"high": "1"}, "high must be a finite number"),
        (
            {"kernel_size": 3, "keep_edge": 2},
            r"keep_edge must be at most the kernel's radius \(1\)",
        ),
        ({"keep_edge": -1}, "keep_edge"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_img2img_model(3, 3, "clipped_linear", **options)


def test_keep_edge_needs_as_many_channels_out_as_in() -> None:
    with pytest.raises(ValueError, match="keep_edge needs as many output channels"):
        create_img2img_model(3, 1, "clipped_linear", kernel_size=3, keep_edge=1)


def test_the_clipped_fit_recovers_the_kernel_that_a_plain_fit_misses() -> None:
    train_set, _ = load_filtered_dataset(filter=CallableFilter(sharpen), limit=6, crop_size=48)
    truth = torch.zeros(3, 3, 3, 3)
    for c in range(3):
        truth[c, c] = torch.from_numpy(SHARPEN)
    clipped = fit_linear(train_set, 3, clip=(0.0, 1.0))
    plain = fit_linear(train_set, 3)
    assert isinstance(clipped, ClippedLinearNet) and clipped.config["arch"] == "clipped_linear"
    report = clipped.fit_report
    assert report["clip"] == [0.0, 1.0] and report["clipped_pixels"] > 0
    assert report["residual_rms"] < 1e-5  # exact on the pixels the clipping left alone
    error = (clipped.layers[0].weight - truth).abs().max()
    assert error < 1e-4
    assert (plain.layers[0].weight - truth).abs().max() > 100 * error
    assert float(clipped.layers[0].bias.detach().abs().max()) < 1e-5


@pytest.mark.parametrize(
    ("clip", "error", "message"),
    [
        ((1.0, 0.0), ValueError, "low < high"),
        ((0.0, float("inf")), ValueError, "finite"),
        (0.5, TypeError, r"clip must be None or a \(low, high\) pair"),
        ((0.0, 0.5, 1.0), TypeError, r"clip must be None or a \(low, high\) pair"),
    ],
)
def test_a_bad_clip_is_refused(clip: object, error: type, message: str) -> None:
    train_set, _ = load_filtered_dataset(filter=CallableFilter(sharpen), limit=2, crop_size=16)
    with pytest.raises(error, match=message):
        fit_linear(train_set, 3, clip=clip)


def test_auto_takes_the_exact_clipped_fit_for_a_saturated_sharpening() -> None:
    teacher = CallableFilter(sharpen)
    train_set, _ = load_filtered_dataset(filter=teacher, limit=8)
    choice = choose_arch(teacher, train_set)
    assert choice.probe["verdict"] == "local" and choice.probe["support_radius"] == 1
    assert (choice.method, choice.arch) == ("exact", "clipped_linear")
    assert choice.options["kernel_size"] == 3 and choice.options["keep_edge"] == 0
    assert choice.options["border"] in ("replicate", "reflect")  # the same at radius 1
    assert "linear up to clipping -> exact clipped linear fit (kernel_size=3)" in choice.probe_line


def test_auto_keeps_a_median_a_network() -> None:
    def median(photo: np.ndarray) -> np.ndarray:
        return cv2.medianBlur(photo, 3)

    teacher = CallableFilter(median)
    train_set, _ = load_filtered_dataset(filter=teacher, limit=8)
    choice = choose_arch(teacher, train_set)
    assert choice.probe["verdict"] == "local" and choice.arch == "neighbourhood"


def test_pillow_contour_is_copied_exactly_end_to_end(tmp_path: Path) -> None:
    """Probe, clipped fit, Pillow's untouched outer ring, certificate, tiles and ONNX."""
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=contour, limit=16, crop_size=48),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False},
        figures=False,
        log=lambda _: None,
    )
    model = result.model
    assert model.config["arch"] == "clipped_linear"
    assert model.config["options"]["keep_edge"] == 1
    certificate = result.metrics["certificate"]
    assert certificate["exact_share"] == 1.0 and certificate["bit_depth"] == 8
    photo = (_photos(1, side=97)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    expected = contour(photo)
    whole = apply_filter(photo, model)
    tiled = apply_filter(photo, model, tile=32)
    assert np.array_equal(np.round(whole * 255), expected)  # floats in [0, 1]
    assert np.array_equal(np.round(tiled * 255), expected)
    path = export_onnx(model, tmp_path / "contour.onnx")
    assert check_onnx(model, path) <= 1e-5


def contrast_about_the_mean(photo: np.ndarray) -> np.ndarray:
    """1.5x contrast about the photo's mean gray, saturated to uint8 (a global operator)."""
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float64).mean()
    return np.clip(np.round(gray + 1.5 * (photo - gray)), 0, 255).astype(np.uint8)


def test_image_mean_adds_a_map_of_the_photos_mean_colour() -> None:
    model = create_img2img_model(3, 3, "clipped_linear", kernel_size=1, image_mean=True)
    assert model.whole_image
    _set_kernel(model, np.ones((1, 1), np.float32) * 1.5)
    with torch.no_grad():
        model.mean_weight.copy_(torch.full((3, 3), -0.5 / 3))
    x = _photos(2)
    with torch.no_grad():
        got = model(x)
    expected = (1.5 * x - 0.5 * x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_image_mean_needs_clip_and_a_bool() -> None:
    train_set, _ = load_filtered_dataset(filter=CallableFilter(sharpen), limit=2, crop_size=16)
    with pytest.raises(ValueError, match="image_mean=True needs clip"):
        fit_linear(train_set, 1, image_mean=True)
    with pytest.raises(TypeError, match="image_mean must be a bool; got 1"):
        fit_linear(train_set, 1, clip=(0, 1), image_mean=1)


def test_a_contrast_change_about_the_mean_is_fitted_exactly_and_tiled_with_the_photos_mean(
    tmp_path: Path,
) -> None:
    teacher = CallableFilter(contrast_about_the_mean)
    train_set, _ = load_filtered_dataset(filter=teacher, limit=8)
    choice = choose_arch(teacher, train_set)
    assert choice.probe["verdict"] == "global"
    assert (choice.method, choice.arch) == ("exact", "clipped_linear")
    assert choice.options["image_mean"] is True and choice.options["kernel_size"] == 1
    assert "kernel_size=1, image_mean" in choice.probe_line
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=contrast_about_the_mean, limit=16),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False},
        figures=False,
        log=lambda _: None,
    )
    assert result.metrics["certificate"]["psnr"] > 50.0  # the rounding of the teacher
    photo = (_photos(1, side=90)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    whole = apply_filter(photo, result.model)
    tiled = apply_filter(photo, result.model, tile=16)  # with the whole photo's mean colour
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)
    assert np.abs(np.round(whole * 255) - contrast_about_the_mean(photo)).max() <= 1
    reloaded = load_model(result.folder)  # the mean's map is saved and read back
    assert reloaded.image_mean and np.array_equal(apply_filter(photo, reloaded), whole)
    path = export_onnx(result.model, tmp_path / "contrast.onnx")
    assert check_onnx(result.model, path) <= 1e-5


def test_photos_too_small_for_the_kernel_fall_back_to_a_network() -> None:
    """A 21x21 clipped fit of 16x16 photos has no pixel to fit: auto goes on without it."""
    teacher = CallableFilter(lambda photo: cv2.medianBlur(photo, 21))
    train_set, _ = load_filtered_dataset(filter=teacher, limit=4, crop_size=16)
    choice = choose_arch(teacher, train_set)
    assert choice.arch != "clipped_linear" and choice.method == "gradient"

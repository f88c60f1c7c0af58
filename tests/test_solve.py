"""Exact least-squares fits of linear filters, folding linear networks, kernel errors."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from img2img_filters.data.filtered import FilteredDataset
from img2img_filters.models import BorderConv2d, create_img2img_model
from img2img_filters.solve import fit_linear, fold_linear, gauss_newton, kernel_error, lbfgs_refine

LINEAR_SPECS = [
    ("study-sobel", 5),
    ("study-random", 3),
    ("random:ksize=5,seed=3,distribution=normal", 5),
]


def _load(paths: list[Path]) -> np.ndarray:
    photos = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]
    return np.ascontiguousarray(np.stack(photos).transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def train_photos(mini_root: Path) -> np.ndarray:
    """240 real training photos from all ten classes, uint8 ``(240, 3, 64, 64)``."""
    paths = sorted((mini_root / "train").glob("*/images/*.JPEG"))
    return _load(paths[:: len(paths) // 240][:240])


@pytest.fixture(scope="module")
def val_photos(mini_photos: np.ndarray) -> np.ndarray:
    """The sixteen held-out validation photos, uint8 ``(16, 3, 64, 64)``."""
    return np.ascontiguousarray(mini_photos.transpose(0, 3, 1, 2))


# -- fit_linear ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "kernel_size"), LINEAR_SPECS)
def test_fit_linear_recovers_the_kernel(
    train_photos: np.ndarray, val_photos: np.ndarray, spec: str, kernel_size: int
) -> None:
    model = fit_linear(FilteredDataset(train_photos, spec), kernel_size)
    error = kernel_error(model, spec)
    assert error["max_abs"] <= 1e-4, error
    assert error["bias_max_abs"] <= 1e-4, error
    report = model.fit_report
    assert report["pixels"] == 240 * (64 - 2 * (kernel_size // 2)) ** 2
    assert report["rank"] == report["unknowns"] == 3 * kernel_size**2 + 1
    assert report["solver"] == "cholesky"
    assert report["residual_rms"] <= 1e-5 * report["target_rms"] + 1e-7
    inputs, targets = FilteredDataset(val_photos, spec).batch(np.arange(len(val_photos)))
    with torch.no_grad():
        assert F.l1_loss(model(inputs), targets).item() < 1e-5


def test_fit_linear_with_a_larger_kernel_and_no_bias(train_photos: np.ndarray) -> None:
    model = fit_linear(FilteredDataset(train_photos[:60], "study-random"), 5, bias=False)
    assert model.layers[0].bias is None
    error = kernel_error(model, "study-random")
    assert error["model_kernel_size"] == (5, 5)
    assert error["filter_kernel_size"] == (3, 3)
    assert error["max_abs"] <= 1e-4


def test_fit_linear_accepts_a_dataset_of_pairs(train_photos: np.ndarray) -> None:
    filtered = FilteredDataset(train_photos[:40], "sobel:dx=1,dy=0")
    inputs, targets = filtered.batch(np.arange(40))
    from_pairs = fit_linear(TensorDataset(inputs, targets), 3, batch_size=16)
    from_dataset = fit_linear(filtered, 3)
    assert from_pairs.fit_report["pixels"] == from_dataset.fit_report["pixels"]
    assert from_pairs.layers[0].border == "reflect101"
    torch.testing.assert_close(
        from_pairs.layers[0].weight, from_dataset.layers[0].weight, atol=1e-6, rtol=0
    )
    assert kernel_error(from_pairs, "sobel:dx=1,dy=0")["max_abs"] <= 1e-4


def test_fit_linear_uses_the_filters_border(train_photos: np.ndarray) -> None:
    model = fit_linear(FilteredDataset(train_photos[:20], "gaussian:ksize=3,border=replicate"), 3)
    assert model.layers[0].border == "replicate"
    assert model.config["options"]["border"] == "replicate"
    chosen = fit_linear(FilteredDataset(train_photos[:20], "box"), 3, border="constant")
    assert chosen.layers[0].border == "constant"


def test_fit_linear_ridge_shrinks_the_weights(train_photos: np.ndarray) -> None:
    dataset = FilteredDataset(train_photos[:20], "study-random")
    plain = fit_linear(dataset, 3)
    ridged = fit_linear(dataset, 3, ridge=1.0)
    assert ridged.layers[0].weight.norm() < plain.layers[0].weight.norm()
    assert ridged.fit_report["ridge"] == 1.0


def test_fit_linear_on_uniform_photos_warns_and_stays_finite(notices) -> None:
    gray = np.full((4, 3, 16, 16), 128, dtype=np.uint8)
    with notices("rank-deficient"):
        model = fit_linear(FilteredDataset(gray, "gaussian:ksize=3"), 3)
    weight, bias = model.layers[0].weight, model.layers[0].bias
    assert torch.isfinite(weight).all() and torch.isfinite(bias).all()
    assert model.fit_report["solver"] == "pinv"
    inputs, targets = FilteredDataset(gray, "gaussian:ksize=3").batch([0])
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), targets, atol=1e-5, rtol=0)


def test_fit_linear_with_fewer_pixels_than_unknowns_warns(notices) -> None:
    photos = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 5), dtype=np.uint8)
    with notices("only 2 pixels for 76 unknowns"):
        model = fit_linear(FilteredDataset(photos, "box:ksize=5"), 5)
    assert torch.isfinite(model.layers[0].weight).all()


def test_fit_linear_skips_photos_too_small_and_fails_when_all_are() -> None:
    photos = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="no pixel to fit"):
        fit_linear(FilteredDataset(photos, "box:ksize=5"), 5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kernel_size": 4}, ValueError, "kernel_size must be a positive odd integer; got 4"),
        ({"kernel_size": 0}, ValueError, "kernel_size"),
        ({"kernel_size": 3.0}, TypeError, "kernel_size"),
        ({"kernel_size": True}, TypeError, "kernel_size"),
        ({"kernel_size": 3, "batch_size": 0}, ValueError, "batch_size"),
        ({"kernel_size": 3, "ridge": -1.0}, ValueError, "ridge"),
        ({"kernel_size": 3, "max_images": 0}, ValueError, "max_images"),
        ({"kernel_size": 3, "border": "mirror"}, ValueError, "border"),
    ],
)
def test_fit_linear_validates_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    photos = np.zeros((1, 3, 8, 8), dtype=np.uint8)
    with pytest.raises(error, match=match):
        fit_linear(FilteredDataset(photos, "box"), **kwargs)


def test_fit_linear_rejects_things_that_are_not_datasets() -> None:
    with pytest.raises(TypeError, match="dataset"):
        fit_linear(42, 3)
    with pytest.raises(ValueError, match="empty"):
        fit_linear(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, 1, 8, 8)), 3)


def test_fit_linear_rejects_non_finite_targets() -> None:
    inputs = torch.rand(2, 3, 8, 8)
    targets = torch.zeros(2, 1, 8, 8)
    targets[0, 0, 4, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_linear(TensorDataset(inputs, targets), 3)


# -- fold_linear -----------------------------------------------------------------------------------


def _interior_close(
    model: nn.Module, weight: torch.Tensor, bias: torch.Tensor, radius: int
) -> None:
    x = torch.rand(2, weight.shape[1], 29, 31, dtype=torch.float64)
    with torch.no_grad():
        expected = model.double()(x)[..., radius:-radius, radius:-radius]
    folded = F.conv2d(x, weight, bias)
    crop = weight.shape[-1] // 2 - radius
    if crop:
        folded = folded[..., crop:-crop, crop:-crop]
    assert folded.shape == expected.shape
    assert (folded - expected).abs().max() <= 1e-5


def test_fold_linear_preserves_interior_outputs() -> None:
    model = create_img2img_model(3, 2, "linear", kernel_size=3, depth=3, width=4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    weight, bias = fold_linear(model)
    assert weight.shape == (2, 3, 7, 7) and bias.shape == (2,)
    assert weight.dtype == bias.dtype == torch.float64
    _interior_close(model, weight, bias, 3)


def test_fold_linear_handles_dilation_groups_identity_and_nesting() -> None:
    model = nn.Sequential(
        BorderConv2d(3, 4, 3, "reflect101", dilation=2),
        nn.Identity(),
        nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)]),
        nn.Sequential(nn.Conv2d(4, 1, 1)),
    )
    model.forward = lambda x: model[3](model[2][0](model[0](x)))  # the same order as the children
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    weight, bias = fold_linear(model)
    assert weight.shape == (1, 3, 7, 7)
    _interior_close(model, weight, bias, 3)


def test_fold_linear_names_the_first_nonlinear_layer() -> None:
    with pytest.raises(ValueError, match=r"fold_linear: layer 'relu1' \(ReLU\) is not linear"):
        fold_linear(create_img2img_model(3, 1, "study"))
    with pytest.raises(ValueError, match=r"layer 'body.1' \(AdaptiveNorm\)"):
        fold_linear(create_img2img_model(3, 1, "can"))


def test_fold_linear_rejects_strides_and_empty_models() -> None:
    with pytest.raises(ValueError, match="stride"):
        fold_linear(nn.Sequential(nn.Conv2d(3, 1, 3, stride=2)))
    with pytest.raises(ValueError, match="no convolution"):
        fold_linear(nn.Sequential(nn.Identity()))


# -- kernel_error ------------------------------------------------------------------------------------


def test_kernel_error_of_an_exact_model_is_zero() -> None:
    from img2img_filters.filters import create_filter

    spec = "study-sobel"
    model = create_img2img_model(3, 1, "linear", kernel_size=5, bias=False)
    with torch.no_grad():
        model.layers[0].weight.copy_(create_filter(spec).kernel)
    error = kernel_error(model, spec)
    assert error["max_abs"] < 1e-7 and error["relative"] < 1e-7 and error["bias_max_abs"] == 0.0
    assert error["compared_size"] == (5, 5)
    small = create_img2img_model(3, 1, "linear", kernel_size=3)
    with torch.no_grad():
        small.layers[0].weight.zero_()
        small.layers[0].bias.zero_()
    assert kernel_error(small, spec)["relative"] == pytest.approx(1.0)


def test_kernel_error_rejects_nonlinear_filters_and_channel_mismatch() -> None:
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    with pytest.raises(ValueError, match="not linear"):
        kernel_error(model, "median")
    with pytest.raises(ValueError, match="channels"):
        kernel_error(create_img2img_model(3, 3, "linear", kernel_size=3), "sobel:dx=1,dy=0")
    with pytest.raises(ValueError, match="centred"):
        kernel_error(nn.Conv2d(3, 1, 2), "sobel:dx=1,dy=0")


# -- lbfgs_refine ------------------------------------------------------------------------------------


def test_lbfgs_refine_polishes_a_linear_model(train_photos: np.ndarray) -> None:
    dataset = FilteredDataset(train_photos[:16], "study-random")
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    lbfgs_refine(model, dataset, steps=30, batch_size=8)
    report = model.refine_report
    assert report["images"] == 16 and report["iterations"] >= 1
    # The loss is what L-BFGS pins down; the kernel itself stays loose along the directions that
    # correlated RGB channels barely excite, which only the exact solve of fit_linear resolves.
    assert report["loss_after"] < 1e-6 * report["loss_before"]
    assert model.training  # the mode is restored


def test_warnings_are_not_raised_for_well_posed_fits(train_photos: np.ndarray, caplog) -> None:
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="img2img_filters"):
        warnings.simplefilter("error")
        fit_linear(FilteredDataset(train_photos[:10], "box"), 3, max_images=5)
    assert not caplog.records  # no rank-deficiency notice either


def _crops(photos: np.ndarray, count: int = 8, size: int = 32) -> np.ndarray:
    """The top-left ``size`` x ``size`` corner of ``count`` real photos, uint8 ``(count, 3, size, size)``."""
    return np.ascontiguousarray(photos[:count, :, :size, :size])


# -- gauss_newton and lbfgs_refine, with deadlines -------------------------------------------------


def test_gauss_newton_lands_on_the_exact_kernel(train_photos: np.ndarray) -> None:
    dataset = FilteredDataset(_crops(train_photos), "study-sobel")
    model = create_img2img_model(3, 1, "linear", kernel_size=5)
    assert kernel_error(model, "study-sobel")["max_abs"] > 0.01
    gauss_newton(model, dataset, images=8)
    report = model.refine_report
    assert report["loss_after"] < 1e-12 * report["loss_before"]
    assert kernel_error(model, "study-sobel")["max_abs"] < 1e-5
    assert next(model.parameters()).dtype == torch.float32  # back to its own precision


def test_lbfgs_refine_lowers_the_loss_and_keeps_its_deadline(train_photos: np.ndarray) -> None:
    dataset = FilteredDataset(_crops(train_photos), "dilate:ksize=3")
    model = create_img2img_model(3, 1, "neighbourhood", layers=0)
    model.train()
    lbfgs_refine(model, dataset, steps=20, images=4)
    report = model.refine_report
    assert report["loss_after"] < report["loss_before"] and report["iterations"] >= 1
    assert report["method"] == "l-bfgs" and model.training  # the mode is restored
    slow = create_img2img_model(3, 1, "neighbourhood")
    lbfgs_refine(slow, dataset, steps=1000, images=4, seconds=0.0)
    assert slow.refine_report["stopped"] == "time"
    assert slow.refine_report["loss_after"] <= slow.refine_report["loss_before"]


@pytest.mark.parametrize(
    ("options", "error"),
    [({"steps": 0}, ValueError), ({"images": 0}, ValueError), ({"seconds": -1.0}, ValueError)],
)
def test_lbfgs_refine_bad_arguments(
    train_photos: np.ndarray, options: dict, error: type[Exception]
) -> None:
    dataset = FilteredDataset(_crops(train_photos, 2), "dilate")
    with pytest.raises(error):
        lbfgs_refine(create_img2img_model(3, 1, "neighbourhood"), dataset, **options)

"""The normalised domain transform and its edge features: OpenCV's stylization as the oracle."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from img2img_filters import apply_filter
from img2img_filters.auto import choose_arch
from img2img_filters.data import load_filtered_dataset
from img2img_filters.export import export_torchscript
from img2img_filters.filters.external import CallableFilter
from img2img_filters.models import create_img2img_model
from img2img_filters.models.domain_transform import normalised_sweep
from img2img_filters.models.structured import fit_linear_head
from img2img_filters.runs import DataConfig, ModelConfig, train_run

#: Crops on which OpenCV's normalised convolution is defined: every row and column of them
#: is longer, in transformed units, than the first sweep's window (on a flatter crop OpenCV
#: reads a first pixel's window from outside its sums, and its output is not the filter's).
CROPS = [
    (name, side) for name in ("astronaut", "chelsea", "coffee") for side in ((64, 64), (96, 128))
]


def _bgr(function):
    def apply(photo: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(function(np.ascontiguousarray(photo[..., ::-1]))[..., ::-1])

    return apply


stylization = _bgr(cv2.stylization)


def _tensor(photo: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float() / 255


def _stylization_model() -> torch.nn.Module:
    """OpenCV's stylization by hand: the smoothed photo minus itself times the edge magnitude."""
    model = create_img2img_model(
        3, 3, "domain_transform", transform="normalised", edges=True, clip=True,
        sigma_s=60.0, sigma_r=0.45,
    )  # fmt: skip
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
        for c in range(3):
            model.linear.weight[c, 6 + c] = 1.0  # the smoothed photo (after photo and guide)
            model.linear.weight[c, 13 + c] = -1.0  # minus it times the magnitude (after it)
    return model


@pytest.mark.parametrize(("name", "side"), CROPS)
def test_the_normalised_sweeps_are_opencvs_normalised_convolution(
    name: str, side: tuple[int, int]
) -> None:
    photo = getattr(data, name)()[: side[0], : side[1]]
    model = create_img2img_model(
        3, 3, "domain_transform", transform="normalised", sigma_s=60.0, sigma_r=0.45
    )
    with torch.no_grad():
        output = model(_tensor(photo))[0].permute(1, 2, 0).numpy()
    got = np.clip(np.round(output * 255), 0, 255)
    expected = _bgr(
        lambda bgr: cv2.edgePreservingFilter(
            bgr, flags=cv2.NORMCONV_FILTER, sigma_s=60, sigma_r=0.45
        )
    )(photo)
    assert np.abs(got - expected).max() <= 1
    assert (got == expected).mean() >= 0.9995  # float32 rounding against OpenCV's


@pytest.mark.parametrize(("name", "side"), CROPS)
def test_with_edge_features_a_linear_head_is_opencvs_stylization(
    name: str, side: tuple[int, int]
) -> None:
    photo = getattr(data, name)()[: side[0], : side[1]]
    with torch.no_grad():
        output = _stylization_model()(_tensor(photo))[0].permute(1, 2, 0).numpy()
    got = np.round(output * 255)
    expected = stylization(photo).astype(np.float64)
    assert np.abs(got - expected).max() <= 1
    assert (got == expected).mean() >= 0.9995  # float32 rounding against OpenCV's


def test_the_normalised_sweep_is_the_box_mean_it_names() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((2, 3, 4, 9))
    coordinates = np.cumsum(1 + 5 * rng.random((2, 1, 4, 9)), axis=-1)
    radius = 4.0
    expected = np.empty_like(values)
    for j in range(9):
        here = coordinates[..., j : j + 1]
        inside = (coordinates > here - radius) & (coordinates <= here + radius)
        expected[..., j] = (values * inside).sum(-1) / inside.sum(-1)
    got = normalised_sweep(torch.from_numpy(values), torch.from_numpy(coordinates), radius)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_the_head_fit_leaves_out_a_photo_no_head_explains_and_fits_inside_the_clip() -> None:
    rng = np.random.default_rng(1)
    features = torch.from_numpy(rng.random((8, 16, 16, 4)))
    weight = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 1.5]], dtype=torch.float64)
    bias = torch.tensor([0.1, -0.2], dtype=torch.float64)
    targets = (features @ weight.T + bias).permute(0, 3, 1, 2)
    targets[3] = torch.from_numpy(rng.random((2, 16, 16)))  # one photo of garbage
    clipped = targets.clamp(0.0, 1.0)  # a tool's 8-bit output clips
    for clip, wanted in ((False, targets), (True, clipped)):
        head = torch.nn.Linear(4, 2).double()
        error = fit_linear_head(head, features, wanted, clip=clip)
        assert error < 1e-12
        torch.testing.assert_close(head.weight.detach(), weight, rtol=0, atol=1e-9)
        torch.testing.assert_close(head.bias.detach(), bias, rtol=0, atol=1e-9)
    head = torch.nn.Linear(4, 2).double()
    error = fit_linear_head(head, features, clipped, clip=False)  # blind to the clip: bent
    assert error > 1e-3


def test_auto_gives_stylization_normalised_sweeps_with_edge_features() -> None:
    teacher = CallableFilter(stylization)
    train_set, _ = load_filtered_dataset(filter=teacher, limit=16)
    choice = choose_arch(teacher, train_set)
    assert choice.probe["verdict"] == "global"
    assert choice.arch == "domain_transform"
    options = choice.options
    assert options["transform"] == "normalised" and options["edges"] is True
    assert abs(math.log2(options["sigma_r"] / 0.45)) <= 0.25
    assert choice.train["loss"] == "l1" and not choice.refine
    assert "-> domain_transform(transform=normalised, sigma_s=" in choice.probe_line


def test_stylization_is_learnt_end_to_end_from_a_least_squares_head(tmp_path: Path) -> None:
    lines: list[str] = []
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=stylization, limit=16),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False, "max_epochs": 1},  # no budget: deterministic
        figures=False,
        log=lines.append,
    )
    assert any(line.startswith("head: least-squares start on 12 photos") for line in lines)
    model = result.model
    assert model.config["options"]["transform"] == "normalised"
    photo = data.coffee()[:64, :96]  # not a training photo, nor their size
    whole = apply_filter(photo, model)
    np.testing.assert_array_equal(apply_filter(photo, model, tile=16), whole)
    error = np.sqrt(np.mean(((np.round(whole * 255) - stylization(photo)) / 255.0) ** 2))
    assert -20 * math.log10(error) > 40.0
    scripted = torch.jit.load(str(export_torchscript(model, tmp_path / "model.pt")))
    for side in ((40, 57), (71, 64)):  # searchsorted and the Sobel run at every size
        x = torch.rand(1, 3, *side)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=1e-5)


def test_the_edge_features_pass_finite_gradients_on_flat_patches() -> None:
    model = create_img2img_model(3, 3, "domain_transform", edges=True, clip=True)
    with torch.no_grad():
        model.linear.weight.fill_(0.1)  # every feature, the edge magnitude included, counts
    x = torch.full((1, 3, 16, 16), 0.5)
    x[..., 8:, :] = 0.7  # flat halves: no gradient anywhere but on the step
    model(x).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name

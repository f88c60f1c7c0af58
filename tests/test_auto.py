"""``--arch auto``: exact fits for linear filters, the benchmarked recipe for the others, polishes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from img2img_filters.auto import (
    DEFAULT_RECIPE,
    NONLINEAR_ARCH,
    POINTWISE_OF_LINEAR,
    POINTWISE_RECIPE,
    choose_arch,
    default_model,
)
from img2img_filters.cli import main
from img2img_filters.filters import GRAY_WEIGHTS, create_filter, list_filters
from img2img_filters.models import create_img2img_model, receptive_field

#: Parameters that registered linear filters need to be built.
REQUIRED = {"kernel": "kernel:rows=1 2 1;0 0 0;-1 -2 -1"}

LINEAR_SPECS = [REQUIRED.get(e.name, e.name) for e in list_filters() if e.linear] + [
    "gray|gaussian:ksize=3|sobel:dx=1,dy=0",  # a chain
    "sobel:dx=1,dy=0,ksize=5",
    "gaussian:ksize=7,channels=rgb",
]
NONLINEAR_SPECS = [e.name for e in list_filters() if not e.linear]


def _photos(count: int = 8, size: int = 32) -> np.ndarray:
    """Smooth random photos, uint8 ``(count, 3, size, size)``: not real, but not white noise."""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((count, 3, size // 4, size // 4))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")
    noise = torch.from_numpy(rng.normal(0, 0.03, (count, 3, size, size))).float()
    return (smooth + noise).clamp(0, 1).mul(255).round().byte().numpy()


# -- choose_arch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", LINEAR_SPECS)
def test_linear_filters_get_an_exact_fit_covering_their_kernel(spec: str) -> None:
    filt = create_filter(spec)
    choice = choose_arch(filt)
    assert choice.method == "exact" and choice.arch == "linear"
    assert choice.options["kernel_size"] == max(filt.kernel_size)
    assert choice.options["border"] == filt.border
    assert choice.options["depth"] == 1


@pytest.mark.parametrize("spec", NONLINEAR_SPECS)
def test_nonlinear_filters_get_their_recipe_sized_to_their_support(spec: str) -> None:
    filt = create_filter(spec)
    choice = choose_arch(filt)
    name = filt.stages[-1].name
    recipe = POINTWISE_RECIPE if name in POINTWISE_OF_LINEAR else NONLINEAR_ARCH[name]
    assert choice.method == "gradient"
    assert choice.arch == recipe.arch
    assert choice.train == recipe.train and choice.refine == recipe.refine
    for key, value in recipe.options.items():
        if key != recipe.sized:
            assert choice.options[key] == value
    model = default_model(filt, choice.arch, choice.options)
    assert receptive_field(model) == 2 * filt.radius + 1  # the filter's support, no more
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, filt.out_channels, 16, 16)


@pytest.mark.parametrize(
    ("spec", "arch", "sized", "size"),
    [
        ("median:ksize=5", "neighbourhood", "window", 5),
        ("dilate:ksize=7", "neighbourhood", "window", 7),
        ("bilateral:d=9", "neighbourhood", "window", 9),
        ("gaussian:ksize=3|median:ksize=3", "neighbourhood", "window", 5),
        ("magnitude:ksize=5", "neighbourhood", "feature_size", 5),
        ("sobel:dx=1,dy=0|abs", "neighbourhood", "feature_size", 3),
        ("canny", "neighbourhood", "feature_size", 3),
    ],
)
def test_recipe_options_follow_the_filter(spec: str, arch: str, sized: str, size: int) -> None:
    choice = choose_arch(create_filter(spec))
    assert (choice.arch, choice.options[sized]) == (arch, size)


def test_rgb_filters_get_a_feature_per_channel() -> None:
    choice = choose_arch(create_filter("median:channels=rgb"))
    assert choice.options["features"] == 3


def test_every_nonlinear_stage_has_a_recipe() -> None:
    assert set(NONLINEAR_ARCH) | POINTWISE_OF_LINEAR >= set(NONLINEAR_SPECS)
    assert DEFAULT_RECIPE.arch == "can"  # for stages registered later


def test_every_recipe_names_a_registered_architecture_and_valid_options() -> None:
    for recipe in [*NONLINEAR_ARCH.values(), POINTWISE_RECIPE, DEFAULT_RECIPE]:
        create_img2img_model(3, 1, recipe.arch, **recipe.options)
        assert recipe.reason


# -- the rank recipe holds rank filters exactly --------------------------------------------------


@pytest.mark.parametrize(("spec", "rank"), [("dilate:ksize=3", 8), ("erode:ksize=3", 0)])
def test_neighbourhood_net_represents_rank_filters_exactly(spec: str, rank: int) -> None:
    filt = create_filter(spec)
    choice = choose_arch(filt)
    model = default_model(filt, choice.arch, choice.options).eval()
    with torch.no_grad():
        model.features.weight.zero_()
        model.features.weight[0, :, 0, 0] = torch.tensor(GRAY_WEIGHTS)
        model.linear.weight.zero_()
        model.linear.weight[0, 9 + rank] = 1.0  # the sorted window follows the 9 values
        model.mlp[-1].weight.zero_()
    x = torch.from_numpy(_photos(2)).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(model(x), filt(x), atol=1e-6, rtol=0)


# -- the command line: gradient training of a linear model reaches the exact kernel --------------


def test_gradient_trained_linear_model_reaches_the_exact_kernel(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", "samples", "--filter", "study-sobel", "--arch", "linear"]
    argv += ["--epochs", "2", "--limit", "32", "--out", str(out), "--no-progress", "--no-figures"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arch"] == "linear"
    assert metrics["refine"]["method"] == "gauss-newton"
    assert metrics["kernel_error"]["max_abs"] <= 1e-4
    assert metrics["psnr"] >= 100

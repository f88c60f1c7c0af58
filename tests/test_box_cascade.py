"""The rounded box cascade (``box_cascade``) and auto's search for it, against Pillow's blurs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage import data

from img2img_filters.auto.box_cascade import box_cascade_candidate, box_variance
from img2img_filters.data import load_filtered_dataset
from img2img_filters.export import export_torchscript
from img2img_filters.filters.external import CallableFilter
from img2img_filters.models import create_img2img_model, receptive_field
from img2img_filters.models.box_cascade import FRACTION_BITS, box_weights
from img2img_filters.runs import DataConfig, ModelConfig, train_run

PHOTOS = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}
#: Sizes down to photos narrower than one pass reads.
SIZES = [(96, 128), (17, 5), (3, 2), (1, 9)]


def gaussian_box_radius(sigma: float, passes: int) -> float:
    """The fractional box radius whose ``passes`` passes have the variance ``sigma ** 2``.

    Written from the variance of a box with fractional end weights (see
    ``models/box_cascade.py``), independently of the model's code.
    """
    variance = sigma * sigma / passes
    whole = math.floor((math.sqrt(12.0 * variance + 1.0) - 1.0) / 2.0)
    fraction = (2 * whole + 1) * (whole * (whole + 1) - 3 * variance)
    fraction /= 6 * (variance - (whole + 1) ** 2)
    return whole + fraction


def pillow(photo: np.ndarray, image_filter: ImageFilter.Filter) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).filter(image_filter))


def pillow_gaussian2(photo: np.ndarray) -> np.ndarray:
    """Pillow's ``GaussianBlur(2)``: three box passes each way, each rounded to 8 bits."""
    return pillow(photo, ImageFilter.GaussianBlur(2))


def run_model(model: torch.nn.Module, photo: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        out = model(x)[0].permute(1, 2, 0).numpy()
    return np.round(out * 255.0).astype(np.uint8)


@pytest.mark.parametrize(
    ("image_filter", "radius", "passes"),
    [
        (ImageFilter.GaussianBlur(2), gaussian_box_radius(2, 3), 3),
        (ImageFilter.GaussianBlur(5.5), gaussian_box_radius(5.5, 3), 3),
        (ImageFilter.BoxBlur(1.5), 1.5, 1),
        (ImageFilter.BoxBlur(3), 3.0, 1),  # a whole radius: no fractional end weights
    ],
)
@pytest.mark.parametrize("name", sorted(PHOTOS))
@pytest.mark.parametrize("size", SIZES)
def test_equals_pillows_blurs_value_for_value(
    image_filter: ImageFilter.Filter,
    radius: float,
    passes: int,
    name: str,
    size: tuple[int, int],
) -> None:
    photo = np.ascontiguousarray(PHOTOS[name][: size[0], : size[1]])
    model = create_img2img_model(3, 3, "box_cascade", radius=radius, passes=passes)
    np.testing.assert_array_equal(run_model(model, photo), pillow(photo, image_filter))


def test_a_kernel_rounded_once_is_not_the_cascade() -> None:
    # The same three passes without the rounding between them: many values differ.
    photo = PHOTOS["astronaut"][:64, :64]
    model = create_img2img_model(3, 3, "box_cascade", radius=gaussian_box_radius(2, 3), passes=3)
    kernel = np.zeros(13)
    kernel[6] = 1.0
    _, inner, outer = box_weights(gaussian_box_radius(2, 3))
    one_pass = np.array([outer, inner, inner, inner, outer], dtype=np.float64) / 2**FRACTION_BITS
    for _ in range(3):
        kernel = np.convolve(kernel, one_pass, mode="same")
    padded = np.pad(photo.astype(np.float64), ((6, 6), (6, 6), (0, 0)), mode="edge")
    rows = np.apply_along_axis(lambda line: np.convolve(line, kernel, "valid"), 1, padded)
    once = np.apply_along_axis(lambda line: np.convolve(line, kernel, "valid"), 0, rows)
    once = np.floor(once + 0.5).astype(np.uint8)[6:-6, 6:-6]  # the borders differ too
    cascade = run_model(model, photo)[6:-6, 6:-6]
    assert 0.05 < (once != cascade).mean() < 0.6
    assert np.abs(once.astype(int) - cascade).max() <= 2


@pytest.mark.parametrize("radius", [0.3, 1.0, 1.375, 2.9, 7.25])
def test_box_weights_sum_to_one_and_give_the_variance(radius: float) -> None:
    whole, inner, outer = box_weights(radius)
    assert whole == math.floor(radius)
    one = 1 << FRACTION_BITS
    assert one - 2 < (2 * whole + 1) * inner + 2 * outer <= one
    assert inner == math.floor(one / (2 * radius + 1))
    weights = np.array([outer] + [inner] * (2 * whole + 1) + [outer], dtype=np.float64) / one
    offsets = np.arange(len(weights)) - len(weights) // 2
    assert box_variance(radius) == pytest.approx(float((weights * offsets**2).sum()), rel=1e-12)


def test_receptive_field_is_what_the_passes_read() -> None:
    assert receptive_field(create_img2img_model(3, 3, "box_cascade", radius=1.375, passes=3)) == 13
    # A whole radius has no end weights: each pass reads only its 2r + 1 pixels.
    assert receptive_field(create_img2img_model(3, 3, "box_cascade", radius=2.0, passes=2)) == 9


def test_the_channel_map_learns_through_the_rounding() -> None:
    model = create_img2img_model(3, 1, "box_cascade")
    assert model.mix.tolist() == [[1.0, 0.0, 0.0]]  # output 0 starts as input channel 0
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    target = create_img2img_model(3, 1, "box_cascade")
    with torch.no_grad():
        target.mix.copy_(torch.tensor([[0.2, 0.5, 0.3]]))
        wanted = target(x)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(150):
        optimiser.zero_grad()
        loss = (model(x) - wanted).abs().mean()
        first = first if first is not None else float(loss.detach())
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < 0.1 * first
    assert torch.allclose(model.mix, torch.tensor([[0.2, 0.5, 0.3]]), atol=0.02)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"radius": 0.0}, "radius must be a positive finite number"),
        ({"radius": float("nan")}, "radius must be a positive finite number"),
        ({"radius": "2"}, "radius must be a positive finite number"),
        ({"passes": 0}, "passes must be"),
        ({"passes": 17}, "passes must be"),
        ({"border": "mirror"}, "border must be one of"),
        ({"radius": 60.0, "passes": 3}, "make a support 367 pixels wide; the limit is 255"),
    ],
)
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        create_img2img_model(3, 3, "box_cascade", **options)


def test_torchscript_equals_the_model(tmp_path: Path) -> None:
    model = create_img2img_model(3, 3, "box_cascade", radius=1.375, passes=3).eval()
    path = export_torchscript(model, tmp_path / "model.pt")
    scripted = torch.jit.load(str(path))
    x = torch.rand(1, 3, 23, 31, generator=torch.Generator().manual_seed(3))
    assert torch.equal(scripted(x), model(x))


def _search(teacher, limit: int = 12):
    train_set, _ = load_filtered_dataset(filter=CallableFilter(teacher), limit=limit)
    inputs, targets = train_set.batch(list(range(len(train_set))), "cpu")
    return inputs, targets


def test_the_search_finds_pillows_setting_from_a_kernel() -> None:
    inputs, targets = _search(pillow_gaussian2)
    # The blur's own kernel (three passes, unrounded) as the least-squares fit would give it.
    _, inner, outer = box_weights(gaussian_box_radius(2, 3))
    one_pass = np.array([outer, inner, inner, inner, outer]) / 2**FRACTION_BITS
    line = np.convolve(np.convolve(one_pass, one_pass), one_pass)
    kernel = torch.zeros(3, 3, 13, 13, dtype=torch.float64)
    for channel in range(3):
        kernel[channel, channel] = torch.from_numpy(np.outer(line, line))
    found = box_cascade_candidate(kernel, inputs, targets, kernel_error=1e-6)
    assert found is not None
    choice, error = found
    assert choice.options["passes"] == 3 and choice.options["border"] == "replicate"
    model = create_img2img_model(3, 3, "box_cascade", **choice.options)
    assert box_weights(choice.options["radius"]) == box_weights(gaussian_box_radius(2, 3))
    assert error < 1e-12
    with torch.no_grad():
        assert torch.equal(torch.round(model(inputs) * 255), torch.round(targets * 255))


def test_a_kernel_that_mixes_channels_is_left_to_least_squares() -> None:
    inputs, targets = _search(pillow_gaussian2, limit=4)
    kernel = torch.zeros(3, 3, 5, 5, dtype=torch.float64)
    kernel[:, :, 2, 2] = 1.0 / 3.0  # a gray: each output reads every channel
    assert box_cascade_candidate(kernel, inputs, targets, kernel_error=1.0) is None


def test_auto_copies_pillows_gaussian_blur_exactly(tmp_path: Path) -> None:
    lines: list[str] = []
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=pillow_gaussian2, limit=24, crop_size=48),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False},
        figures=False,
        log=lines.append,
    )
    assert result.model.config["arch"] == "box_cascade"
    assert result.model.config["options"]["passes"] == 3
    assert any(line.startswith("probe: linear, radius 6 -> box_cascade(") for line in lines)
    certificate = result.metrics["certificate"]
    assert certificate["probe"]["verdict"] == "linear"
    assert certificate["exact_share"] == 1.0

"""The gray blend (``gray_blend``), its closed-form fit and auto's test for it, against Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from skimage import data

from img2img_filters.auto.gray_blend import gray_blend_choice
from img2img_filters.data import load_filtered_dataset
from img2img_filters.filters.external import CallableFilter
from img2img_filters.models import create_img2img_model
from img2img_filters.probe import probe_operator
from img2img_filters.runs import DataConfig, ModelConfig, train_run
from img2img_filters.solve import fit_gray_blend

PHOTOS = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
#: Pillow's gray: ``L = (19595 R + 38470 G + 7471 B + 2**15) >> 16``.
PILLOW_GRAY = [19595 / 65536, 38470 / 65536, 7471 / 65536]


def saturation(factor: float):
    def enhance(photo: np.ndarray) -> np.ndarray:
        return np.asarray(ImageEnhance.Color(Image.fromarray(photo)).enhance(factor))

    return enhance


def brightness(factor: float):
    def enhance(photo: np.ndarray) -> np.ndarray:
        return np.asarray(ImageEnhance.Brightness(Image.fromarray(photo)).enhance(factor))

    return enhance


def run_model(model: torch.nn.Module, photo: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        out = model(x)[0].permute(1, 2, 0).numpy()
    return np.round(out * 255.0).astype(np.uint8)


def blend_model(factor: float, gray: list[float]) -> torch.nn.Module:
    model = create_img2img_model(3, 3, "gray_blend")
    with torch.no_grad():
        model.factor.fill_(factor)
        model.gray.copy_(torch.tensor(gray))
    return model


@pytest.mark.parametrize("factor", [1.6, 0.45, 2.5, 0.0])
@pytest.mark.parametrize("index", range(len(PHOTOS)))
def test_equals_pillows_saturation_value_for_value(factor: float, index: int) -> None:
    photo = PHOTOS[index][:128, :160]
    expected = saturation(factor)(photo)
    np.testing.assert_array_equal(run_model(blend_model(factor, PILLOW_GRAY), photo), expected)


@pytest.mark.parametrize("factor", [0.8, 1.3])
def test_equals_pillows_brightness_with_a_gray_of_zero(factor: float) -> None:
    photo = PHOTOS[0][:128, :160]
    model = blend_model(factor, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(run_model(model, photo), brightness(factor)(photo))


def test_a_colour_matrix_rounded_once_is_not_the_blend() -> None:
    photo = PHOTOS[1][:128, :160].astype(np.float64)
    gray = photo @ np.array(PILLOW_GRAY)
    once = np.clip(np.round(gray[..., None] + 1.6 * (photo - gray[..., None])), 0, 255)
    blended = run_model(blend_model(1.6, PILLOW_GRAY), PHOTOS[1][:128, :160])
    assert 0.03 < (once != blended).mean() < 0.5


def test_starts_as_the_identity_and_maps_channels_by_position() -> None:
    x = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    levels = torch.round(x * 255) / 255
    assert torch.equal(create_img2img_model(3, 3, "gray_blend")(x), levels)
    two = create_img2img_model(3, 2, "gray_blend")(x)
    assert torch.equal(two, levels[:, :2])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rounding": "up"}, "rounding must be one of"),
        ({"gray_rounding": 1}, "gray_rounding must be one of"),
    ],
)
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        create_img2img_model(3, 3, "gray_blend", **options)


@pytest.mark.parametrize("factor", [1.6, 0.45])
def test_the_fit_finds_the_factor_and_a_gray_that_rounds_like_pillows(factor: float) -> None:
    train_set, val_set = load_filtered_dataset(
        filter=CallableFilter(saturation(factor)), limit=24, crop_size=48
    )
    model = fit_gray_blend(train_set)
    report = model.fit_report
    assert report["factor"] == pytest.approx(factor, abs=1e-6)
    assert report["exact_share"] > 0.9995
    np.testing.assert_allclose(report["gray"], PILLOW_GRAY, atol=2e-3)
    inputs, targets = val_set.batch(list(range(len(val_set))), "cpu")
    with torch.no_grad():
        same = torch.round(model(inputs) * 255) == torch.round(targets * 255)
    assert float(same.double().mean()) > 0.9995


def test_the_fit_of_a_brightness_change_has_no_gray() -> None:
    train_set, _ = load_filtered_dataset(filter=CallableFilter(brightness(0.8)), limit=12)
    report = fit_gray_blend(train_set).fit_report
    assert report["gray"] == [0.0, 0.0, 0.0] and report["exact_share"] == 1.0
    assert report["factor"] == pytest.approx(0.8, abs=1e-6)


def test_the_fit_refuses_targets_clipped_everywhere() -> None:
    def white(photo: np.ndarray) -> np.ndarray:
        return np.full_like(photo, 255)

    train_set, _ = load_filtered_dataset(filter=CallableFilter(white), limit=4)
    with pytest.raises(ValueError, match="inside \\(0, 255\\)"):
        fit_gray_blend(train_set)


def test_auto_leaves_curves_and_exact_matrices_alone() -> None:
    def gamma(photo: np.ndarray) -> np.ndarray:
        return np.round(255.0 * (photo / 255.0) ** 0.6).astype(np.uint8)

    for teacher in (gamma, lambda photo: np.ascontiguousarray(photo[..., ::-1])):
        train_set, _ = load_filtered_dataset(filter=CallableFilter(teacher), limit=24)
        report = probe_operator(teacher)
        assert gray_blend_choice(report, train_set, "probe") is None


def test_auto_copies_pillows_saturation_exactly(tmp_path: Path) -> None:
    lines: list[str] = []
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=saturation(1.6), limit=24, crop_size=48),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False},
        figures=False,
        log=lines.append,
    )
    assert result.model.config["arch"] == "gray_blend"
    assert result.model.config["options"] == {"rounding": "floor", "gray_rounding": "nearest"}
    assert any(
        line.startswith("probe: pointwise, radius 0 -> gray_blend(factor=1.6") for line in lines
    )
    certificate = result.metrics["certificate"]
    assert certificate["probe"]["verdict"] == "pointwise"
    assert certificate["exact_share"] > 0.9995

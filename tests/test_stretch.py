"""The level stretch (``stretch``): quantiles, the per-photo affine loss, auto's test and pretraining."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import exposure

import img2img_filters.auto.stretch as stretch_module
from img2img_filters.auto import choose_arch
from img2img_filters.auto.stretch import (
    affine_residual,
    pretrain_stretch,
    same_range_on_every_photo,
)
from img2img_filters.data import load_filtered_dataset
from img2img_filters.filters.external import CallableFilter
from img2img_filters.models import create_img2img_model
from img2img_filters.models.stretch import photo_quantiles
from img2img_filters.runs import DataConfig, ModelConfig, train_run


def levels_of_a_blur(photo: np.ndarray) -> np.ndarray:
    """A 3x3 Gaussian blur of the gray photo, its 1% and 99% percentiles stretched to 0 and 255."""
    gray = cv2.GaussianBlur(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float64), (3, 3), 0)
    low, high = np.percentile(gray, (1, 99))
    out = exposure.rescale_intensity(gray, in_range=(low, high), out_range=(0.0, 255.0))
    return np.round(out).astype(np.uint8)


def test_photo_quantiles_equal_numpys() -> None:
    values = torch.rand(3, 1001, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    levels = torch.tensor([0.0, 0.0015, 0.3, 0.9995, 1.0], dtype=torch.float64)
    expected = np.quantile(values.numpy(), levels.numpy(), axis=1).T
    np.testing.assert_allclose(photo_quantiles(values, levels).numpy(), expected, atol=1e-12)


def test_each_photo_is_stretched_by_its_own_quantiles() -> None:
    model = create_img2img_model(3, 2, "stretch").double()
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        x[1] *= 0.2  # a dim photo: stretched to the same range
        out = model(x)
    flat = out.flatten(2)
    torch.testing.assert_close(flat.min(dim=2).values, torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(flat.max(dim=2).values, torch.ones(2, 2, dtype=torch.float64))
    with torch.no_grad():
        model.levels.copy_(torch.tensor([0.1, 0.9], dtype=torch.float64))
        intensity = model.intensity(x)
        low, high = np.quantile(intensity[0].numpy(), (0.1, 0.9))
        expected = np.clip((intensity[0].numpy() - low) / (high - low), 0.0, 1.0)
        np.testing.assert_allclose(model(x)[0, 0].numpy(), expected, atol=1e-12)


def test_the_affine_residual_is_what_no_affine_map_per_photo_explains() -> None:
    generator = torch.Generator().manual_seed(2)
    intensity = torch.rand(2, 16, 16, generator=generator, dtype=torch.float64)
    affine = torch.stack([0.3 * intensity[0] + 0.1, -2.0 * intensity[1] + 1.5])
    targets = affine.clamp(0.0, 1.0).unsqueeze(1)
    assert float(affine_residual(intensity, targets)) < 1e-20  # clipped pixels left out
    noisy = targets + 0.01 * torch.randn(targets.shape, generator=generator, dtype=torch.float64)
    residual = float(affine_residual(intensity, noisy))
    expected, count = 0.0, 0
    for photo in range(2):  # numpy's least squares, photo by photo, on the unclipped pixels
        y = noisy[photo, 0].flatten().numpy()
        inside = (y > y.min()) & (y < y.max())
        design = np.stack([intensity[photo].flatten().numpy()[inside], np.ones(inside.sum())], 1)
        solution = np.linalg.lstsq(design, y[inside], rcond=None)[0]
        expected += float(np.square(design @ solution - y[inside]).sum())
        count += int(inside.sum())
    assert residual == pytest.approx(expected / count, rel=1e-9)


def test_the_same_range_on_every_photo_marks_a_stretch_not_a_blur() -> None:
    stretched, _ = load_filtered_dataset(filter=CallableFilter(levels_of_a_blur), limit=12)
    blurred, _ = load_filtered_dataset(
        filter=CallableFilter(lambda photo: cv2.GaussianBlur(photo, (5, 5), 0)), limit=12
    )
    positions = list(range(12))
    assert same_range_on_every_photo(stretched.batch(positions, "cpu")[1])
    assert not same_range_on_every_photo(blurred.batch(positions, "cpu")[1])
    assert not same_range_on_every_photo(torch.zeros(1, 1, 4, 4))  # one photo proves nothing


def _psnr(model: torch.nn.Module, dataset) -> float:
    inputs, targets = dataset.batch(list(range(len(dataset))), "cpu")
    with torch.no_grad():
        error = float((model(inputs) - targets).double().square().mean())
    return -10.0 * np.log10(error)


def test_pretraining_finds_the_local_operator_and_the_levels() -> None:
    train_set, val_set = load_filtered_dataset(
        filter=CallableFilter(levels_of_a_blur), limit=48, crop_size=48
    )
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, "stretch")
    before = _psnr(model, val_set)
    lines: list[str] = []
    pretrain_stretch(model, train_set, steps=300, log=lines.append)
    low, high = model.levels.tolist()
    assert 0.005 <= low <= 0.02 and 0.98 <= high <= 0.995  # the operator's 1% and 99%
    assert _psnr(model, val_set) > max(30.0, before + 10.0)
    assert lines and lines[0].startswith("stretch: local network trained 300 steps")


def test_auto_chooses_and_pretrains_the_stretch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stretch_module, "PRETRAIN_STEPS", 200)
    train_set, _ = load_filtered_dataset(filter=CallableFilter(levels_of_a_blur), limit=24)
    choice = choose_arch(CallableFilter(levels_of_a_blur), train_set)
    assert (choice.method, choice.arch) == ("gradient", "stretch")
    assert choice.probe["verdict"] == "global"
    assert "the same output range on nearly every photo -> stretch(" in choice.probe_line
    lines: list[str] = []
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=levels_of_a_blur, limit=24, crop_size=48),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False, "max_epochs": 3},
        figures=False,
        log=lines.append,
    )
    assert result.model.config["arch"] == "stretch"
    assert any(line.startswith("stretch: local network trained 200 steps") for line in lines)
    assert result.metrics["psnr"] > 25.0
    assert result.metrics["certificate"]["probe"]["verdict"] == "global"


def test_a_stretch_named_by_the_user_is_pretrained_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stretch_module, "PRETRAIN_STEPS", 20)
    lines: list[str] = []
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=levels_of_a_blur, limit=12, crop_size=32),
        ModelConfig(arch="stretch"),
        {"device": "cpu", "progress": False, "max_epochs": 1},
        figures=False,
        log=lines.append,
    )
    assert any(line.startswith("stretch: local network trained 20 steps") for line in lines)
    assert not any(line.startswith("head:") for line in lines)  # no auto: no head's start
    assert result.model.levels.tolist() != [0.0, 1.0]  # the levels were chosen

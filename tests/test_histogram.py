"""The photo's histograms as per-pixel inputs: ranks and quantiles against NumPy, global models end to end."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from img2img_filters import apply_filter
from img2img_filters.export import check_onnx, export_onnx
from img2img_filters.models import create_img2img_model
from img2img_filters.models.histogram import (
    QUANTILES,
    histogram_feature_count,
    histogram_features,
)
from img2img_filters.runs import DataConfig, ModelConfig, train_run


def _photos_8bit(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 256, (count, 3, height, width)).astype(np.float32)
    return torch.from_numpy(values / 255)


def test_ranks_quantiles_and_means_equal_numpys() -> None:
    x = _photos_8bit(2, 13, 21)
    features = histogram_features(x).numpy()
    assert features.shape == (2, 13, 21, histogram_feature_count(3))
    q = len(QUANTILES)
    for b in range(2):
        gray = x[b].mean(dim=0, keepdim=True)
        histograms = torch.cat([x[b], gray]).numpy().reshape(4, -1)
        for k, values in enumerate(histograms):
            bins = np.round(np.clip(values, 0, 1) * 255)
            rank = (bins[None, :] <= bins[:, None]).mean(axis=1)  # share at or below each
            np.testing.assert_allclose(features[b, ..., k].reshape(-1), rank, atol=1e-6)
            shared = features[b, 0, 0, 4 + k * (q + 1) : 4 + (k + 1) * (q + 1)]
            expected = np.quantile(bins / 255, QUANTILES, method="inverted_cdf")
            np.testing.assert_allclose(shared[:q], expected, atol=1e-6)
            np.testing.assert_allclose(shared[q], values.mean(), atol=1e-6)
        assert np.all(features[b, ..., 4:] == features[b, :1, :1, 4:])  # the same everywhere


def test_a_histogram_model_reads_the_whole_photo() -> None:
    torch.manual_seed(0)
    local = create_img2img_model(3, 3, "neighbourhood", features=2, feature_size=3)
    photo = create_img2img_model(3, 3, "neighbourhood", features=2, feature_size=3, histogram=True)
    assert photo.whole_image and not local.whole_image
    with torch.no_grad():
        for model in (local, photo):
            model.mlp[-1].weight.normal_()  # the MLP's output layer starts at zero
    x = _photos_8bit(1, 40, 40)
    changed = x.clone()
    changed[..., :8, :8] = 1.0  # a white patch in one corner
    with torch.no_grad():
        far_local = (local(changed) - local(x))[..., 20:, 20:].abs().max()
        far_photo = (photo(changed) - photo(x))[..., 20:, 20:].abs().max()
    assert far_local == 0 and far_photo > 1e-3


def test_a_histogram_model_is_tiled_with_the_whole_photos_statistics(tmp_path: Path) -> None:
    model = create_img2img_model(3, 3, "neighbourhood", features=2, histogram=True)
    with torch.no_grad():
        model.mlp[-1].weight.normal_()
    sides: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda _, args: sides.append(tuple(args[0].shape[-2:])))
    image = (_photos_8bit(1, 70, 90)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    whole = apply_filter(image, model)
    assert sides == [(70, 90)]
    sides.clear()
    tiled = apply_filter(image, model, tile=16)
    assert len(sides) > 1 and max(max(side) for side in sides) <= 16 + 2  # tile and halo
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)
    path = export_onnx(model, tmp_path / "histogram.onnx")
    assert check_onnx(model, path) <= 1e-5


def test_statistics_of_strips_add_up_to_the_photos() -> None:
    model = create_img2img_model(3, 3, "neighbourhood", histogram=True)
    x = _photos_8bit(2, 30, 17)
    parts = model.photo_statistics(x[..., :11, :]) + model.photo_statistics(x[..., 11:, :])
    torch.testing.assert_close(parts, model.photo_statistics(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(
        histogram_features(x[..., 5:20, 3:9], statistics=parts),
        histogram_features(x)[:, 5:20, 3:9],
        rtol=0,
        atol=1e-6,
    )


def equalize(photo: np.ndarray) -> np.ndarray:
    """OpenCV's histogram equalisation of the gray photo."""
    return cv2.equalizeHist(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))


@pytest.mark.parametrize("histogram", [False, True])
def test_equalisation_is_learnt_with_the_histograms_and_not_without(
    histogram: bool, tmp_path: Path
) -> None:
    """The same network and steps: the photo's histograms make equalisation learnable."""
    options = {"features": 4, "window": 1, "sort": False, "hidden": 32, "histogram": histogram}
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=equalize, limit=24, crop_size=48),
        ModelConfig(arch="neighbourhood", options=options),
        {"device": "cpu", "progress": False, "max_epochs": 15, "seed": 0, "loss": "mse",
         "batch_size": 8, "learning_rate": 3e-3, "early_stopping_patience": 0},
        figures=False,
        log=lambda _: None,
    )  # fmt: skip
    psnr = result.metrics["psnr"]
    if histogram:
        assert psnr > 22.0  # 25.2 dB when written; 13.6 dB without
    else:
        assert psnr < 16.0

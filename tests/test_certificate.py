"""The fidelity certificate: every figure against NumPy and scikit-image computed directly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from img2img_filters.certificate import certificate_for_model, fidelity_certificate
from img2img_filters.data.filtered import FilteredDataset
from img2img_filters.models import create_img2img_model


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    """Targets on the 8-bit grid and predictions near them, ``(3, 2, 20, 20)`` float64."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 256, (3, 2, 20, 20)) / 255.0
    predictions = targets + rng.normal(0, 0.003, targets.shape)
    predictions[1, :, 13:20, 14:20] += 0.2  # the worst region: image 1, bottom right
    return predictions, targets


def grid_tiles(error: np.ndarray, size: int) -> list[tuple[float, int, int, int]]:
    """Mean error of every crop on the grid (the last row and column flush), by plain loops."""
    tiles = []
    height, width = error.shape[-2:]
    rows = sorted(set(range(0, height - size + 1, size)) | {height - size})
    cols = sorted(set(range(0, width - size + 1, size)) | {width - size})
    for image, y, x in itertools.product(range(len(error)), rows, cols):
        tiles.append((error[image, :, y : y + size, x : x + size].mean(), image, y, x))
    return sorted(tiles, reverse=True)


def test_every_figure_equals_numpy_and_skimage(batch):
    predictions, targets = batch
    cert = fidelity_certificate(
        torch.from_numpy(predictions), torch.from_numpy(targets), data_range=1.0, worst=4, region=8
    )
    hwc = [
        (p.transpose(1, 2, 0), t.transpose(1, 2, 0))
        for p, t in zip(predictions, targets, strict=True)
    ]
    psnrs = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in hwc]
    ssims = [structural_similarity(t, p, data_range=1.0, channel_axis=-1) for p, t in hwc]
    assert cert["images"] == 3 and cert["values"] == predictions.size
    assert cert["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-12)
    assert cert["psnr_min"] == pytest.approx(min(psnrs), rel=1e-12)
    assert cert["ssim"] == pytest.approx(np.mean(ssims), rel=1e-10)
    assert cert["ssim_min"] == pytest.approx(min(ssims), rel=1e-10)
    error = np.abs(predictions - targets)
    assert cert["max_abs_error"] == error.max()
    assert cert["mean_abs_error"] == pytest.approx(error.mean(), rel=1e-12)
    p50, p99, p999 = np.percentile(error, [50, 99, 99.9])
    assert cert["abs_error_percentiles"] == {"p50": p50, "p99": p99, "p99.9": p999}
    exact = np.mean(np.round(predictions * 255) == np.round(targets * 255))
    assert 0.2 < exact < 1  # some values round to their target, some do not
    assert cert["bit_depth"] == 8 and cert["exact_share"] == pytest.approx(exact, abs=1e-15)

    tiles = grid_tiles(error, 8)[:4]
    boxes = cert["worst_regions"]
    assert [(b["image"], b["y"], b["x"], b["size"]) for b in boxes] == [
        (image, y, x, 8) for _, image, y, x in tiles
    ]
    np.testing.assert_allclose(
        [b["mean_abs_error"] for b in boxes], [t[0] for t in tiles], rtol=1e-12
    )
    assert (boxes[0]["image"], boxes[0]["y"], boxes[0]["x"]) == (1, 12, 12)  # flush with the corner


def test_bit_depth_none_and_16_and_numpy_inputs(batch):
    predictions, targets = batch
    none = fidelity_certificate(predictions, targets, data_range=1.0, bit_depth=None)
    assert none["exact_share"] is None and none["bit_depth"] is None
    deep = fidelity_certificate(predictions, targets, data_range=1.0, bit_depth=16)
    levels = 2**16 - 1
    expected = np.mean(np.round(predictions * levels) == np.round(targets * levels))
    assert deep["exact_share"] == pytest.approx(expected, abs=1e-15)
    from_torch = fidelity_certificate(
        torch.from_numpy(predictions), torch.from_numpy(targets), data_range=1.0
    )
    assert from_torch == fidelity_certificate(predictions, targets, data_range=1.0)


def test_perfect_predictions_are_exact_with_infinite_psnr(batch):
    _, targets = batch
    cert = fidelity_certificate(targets, targets, data_range=1.0)
    assert cert["exact_share"] == 1.0 and cert["max_abs_error"] == 0.0
    assert cert["psnr"] == np.inf and cert["psnr_infinite_images"] == 3 and cert["ssim"] == 1.0


def test_a_data_range_other_than_one(batch):
    predictions, targets = batch
    scaled = fidelity_certificate(8 * predictions - 4, 8 * targets - 4, data_range=8.0)
    plain = fidelity_certificate(predictions, targets, data_range=1.0)
    assert scaled["psnr"] == pytest.approx(plain["psnr"], rel=1e-9)
    assert scaled["max_abs_error"] == pytest.approx(8 * plain["max_abs_error"], rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"predictions": [[0.0]]}, TypeError, "predictions must be"),
        ({"targets": np.zeros((3, 2, 20, 21))}, ValueError, "same shape"),
        ({"data_range": -1.0}, ValueError, "data_range"),
        ({"bit_depth": 0}, ValueError, "bit_depth"),
        ({"worst": 0}, ValueError, "worst"),
        ({"region": 2.5}, ValueError, "region"),
    ],
)
def test_bad_arguments_name_the_argument(batch, kwargs, error, message):
    predictions, targets = batch
    arguments = {"predictions": predictions, "targets": targets, "data_range": 1.0, **kwargs}
    with pytest.raises(error, match=message):
        fidelity_certificate(arguments.pop("predictions"), arguments.pop("targets"), **arguments)


@pytest.fixture(scope="module")
def sobel_dataset() -> FilteredDataset:
    images = np.random.default_rng(1).integers(0, 256, (5, 3, 24, 24), dtype=np.uint8)
    return FilteredDataset(images, "study-sobel")


def test_certificate_for_model_equals_the_certificate_of_its_outputs(sobel_dataset):
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, "study").double()
    model.train()
    inputs, targets = sobel_dataset.batch(list(range(4)), torch.device("cpu"))
    with torch.no_grad():
        expected = fidelity_certificate(
            model.eval()(inputs.double()), targets, data_range=sobel_dataset.filter.data_range
        )
    model.train()
    cert = certificate_for_model(model, sobel_dataset, device="cpu", max_images=4, batch_size=3)
    assert model.training  # left as it was
    assert cert.pop("data_range_source") == "filter"
    assert_same_certificate(cert, expected)


def assert_same_certificate(first: dict, second: dict) -> None:
    """Equal keys and values, floats up to rounding (the batches differ)."""
    assert first.keys() == second.keys()
    for key, value in first.items():
        if key == "worst_regions":
            assert len(value) == len(second[key]) == 5
            for mine, theirs in zip(value, second[key], strict=True):
                assert mine == pytest.approx(theirs, rel=1e-9)
        elif isinstance(value, (dict, float)):
            assert value == pytest.approx(second[key], rel=1e-9), key
        else:
            assert value == second[key], key


def test_certificate_for_model_rejects_bad_input(sobel_dataset):
    with pytest.raises(TypeError, match="model must be"):
        certificate_for_model(object(), sobel_dataset)
    with pytest.raises(ValueError, match="same shape"):
        certificate_for_model(create_img2img_model(3, 3, "study"), sobel_dataset, device="cpu")
    with pytest.raises(ValueError, match="bit_depth"):
        certificate_for_model(create_img2img_model(3, 1, "study"), sobel_dataset, bit_depth=17)

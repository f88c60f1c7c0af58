"""PSNR and SSIM against scikit-image on real photos; compute_metrics; resolve_device."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from img2img_filters.data.filtered import FilteredDataset
from img2img_filters.devices import resolve_device
from img2img_filters.metrics import compute_metrics, psnr, ssim
from img2img_filters.models import create_img2img_model

RTOL = 1e-6


# -- helpers -----------------------------------------------------------------------------------
def _skimage_psnr(prediction: np.ndarray, target: np.ndarray, data_range: float) -> np.ndarray:
    """Per image of (B, C, H, W) arrays."""
    return np.array(
        [
            peak_signal_noise_ratio(
                t.transpose(1, 2, 0), p.transpose(1, 2, 0), data_range=data_range
            )
            for p, t in zip(prediction, target, strict=True)
        ]
    )


def _skimage_ssim(prediction: np.ndarray, target: np.ndarray, data_range: float) -> np.ndarray:
    """Per image of (B, C, H, W) arrays; channel_axis only for C > 1, as documented."""
    values = []
    for p, t in zip(prediction, target, strict=True):
        if t.shape[0] == 1:
            values.append(structural_similarity(t[0], p[0], data_range=data_range))
        else:
            values.append(
                structural_similarity(
                    t.transpose(1, 2, 0),
                    p.transpose(1, 2, 0),
                    data_range=data_range,
                    channel_axis=2,
                )
            )
    return np.array(values)


def _pair(photos: np.ndarray, channels: int, data_range: float, perturbation: str):
    """Targets from real photos (float64, (B, C, H, W), spanning ``data_range``) and a perturbed copy."""
    rng = np.random.default_rng(1)
    images = photos.astype(np.float64) / 255.0  # (B, H, W, 3)
    if channels == 1:
        images = images @ np.array([0.299, 0.587, 0.114])[:, None]
    target = images.transpose(0, 3, 1, 2) * data_range
    if perturbation == "noise":
        prediction = target + rng.normal(0.0, 0.05 * data_range, target.shape)
    elif perturbation == "blur":
        prediction = np.stack(
            [[cv2.GaussianBlur(plane, (5, 5), 1.2) for plane in image] for image in target]
        )
    else:  # signed: shift both to [-range/2, range/2], then noise
        target = target - data_range / 2
        prediction = target + rng.normal(0.0, 0.1 * data_range, target.shape)
    return np.ascontiguousarray(prediction), np.ascontiguousarray(target)


# -- psnr and ssim equal scikit-image ----------------------------------------------------------
CASES = [
    (channels, data_range, perturbation)
    for channels in (1, 3)
    for data_range in (1.0, 2.25, 255.0)
    for perturbation in ("noise", "blur", "signed")
]


@pytest.mark.parametrize(("channels", "data_range", "perturbation"), CASES)
def test_psnr_and_ssim_equal_skimage_per_image(mini_photos, channels, data_range, perturbation):
    prediction, target = _pair(mini_photos[:8], channels, data_range, perturbation)
    ours_psnr = psnr(torch.from_numpy(prediction), torch.from_numpy(target), data_range)
    ours_ssim = ssim(torch.from_numpy(prediction), torch.from_numpy(target), data_range)
    assert ours_psnr.shape == ours_ssim.shape == (8,)
    assert ours_psnr.dtype == ours_ssim.dtype == torch.float64
    np.testing.assert_allclose(
        ours_psnr.numpy(), _skimage_psnr(prediction, target, data_range), rtol=RTOL
    )
    np.testing.assert_allclose(
        ours_ssim.numpy(), _skimage_ssim(prediction, target, data_range), rtol=RTOL
    )


def test_float32_inputs_are_computed_in_float64(mini_photos):
    prediction, target = _pair(mini_photos[:4], 3, 1.0, "noise")
    prediction32, target32 = prediction.astype(np.float32), target.astype(np.float32)
    ours = ssim(torch.from_numpy(prediction32), torch.from_numpy(target32), 1.0)
    reference = _skimage_ssim(prediction32.astype(np.float64), target32.astype(np.float64), 1.0)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-12)


def test_uint8_tensors_equal_skimage_on_uint8(mini_photos):
    target = np.ascontiguousarray(mini_photos[:4].transpose(0, 3, 1, 2))
    prediction = np.ascontiguousarray(target[:, :, ::-1, :])  # flipped upside down
    ours_psnr = psnr(torch.from_numpy(prediction), torch.from_numpy(target), 255)
    ours_ssim = ssim(torch.from_numpy(prediction), torch.from_numpy(target), 255)
    np.testing.assert_allclose(ours_psnr.numpy(), _skimage_psnr(prediction, target, 255), rtol=RTOL)
    np.testing.assert_allclose(ours_ssim.numpy(), _skimage_ssim(prediction, target, 255), rtol=RTOL)


@pytest.mark.parametrize("size", [(7, 7), (7, 19), (23, 8)])
def test_smallest_and_non_square_images_equal_skimage(mini_photos, size):
    height, width = size
    prediction, target = _pair(mini_photos[:3, :height, :width], 3, 1.0, "noise")
    np.testing.assert_allclose(
        ssim(torch.from_numpy(prediction), torch.from_numpy(target), 1.0).numpy(),
        _skimage_ssim(prediction, target, 1.0),
        rtol=RTOL,
    )


def test_identical_images_give_infinite_psnr_and_unit_ssim(mini_photos):
    _, target = _pair(mini_photos[:2], 1, 1.0, "noise")
    tensor = torch.from_numpy(target)
    with np.errstate(divide="ignore"):
        reference = _skimage_psnr(target, target, 1.0)
    assert np.isinf(reference).all()
    assert torch.isinf(psnr(tensor, tensor.clone(), 1.0)).all()
    np.testing.assert_allclose(ssim(tensor, tensor.clone(), 1.0).numpy(), 1.0, rtol=1e-12)


def test_ssim_rejects_images_smaller_than_its_window():
    image = torch.zeros(1, 1, 6, 20)
    with pytest.raises(ValueError, match=r"7x7.*6x20"):
        ssim(image, image, 1.0)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_bad_inputs_name_the_argument(metric):
    a = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"prediction and target.*\(2, 1, 8, 8\).*\(2, 1, 8, 9\)"):
        metric(a, torch.zeros(2, 1, 8, 9), 1.0)
    with pytest.raises(ValueError, match=r"prediction must have shape \(B, C, H, W\).*\(1, 8, 8\)"):
        metric(a[0], a[0], 1.0)
    with pytest.raises(TypeError, match=r"target must be a torch\.Tensor"):
        metric(a, a.numpy(), 1.0)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"data_range must be a positive finite number.*{bad}"):
            metric(a, a, bad)
    with pytest.raises(TypeError, match="data_range"):
        metric(a, a, "1")


# -- compute_metrics ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sobel_dataset(mini_photos) -> FilteredDataset:
    return FilteredDataset(
        np.ascontiguousarray(mini_photos[:6].transpose(0, 3, 1, 2)), "study-sobel"
    )


def _reference(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, data_range: float):
    """Means over images of scikit-image's per-image values (and numpy L1 and MSE)."""
    with torch.no_grad():
        predictions = model.eval()(inputs).double().numpy()
    targets_np = targets.double().numpy()
    error = predictions - targets_np
    return {
        "psnr": _skimage_psnr(predictions, targets_np, data_range).mean(),
        "ssim": _skimage_ssim(predictions, targets_np, data_range).mean(),
        "l1": np.abs(error).mean(axis=(1, 2, 3)).mean(),
        "mse": np.square(error).mean(axis=(1, 2, 3)).mean(),
    }


@pytest.mark.parametrize("arch", ["study", "linear"])
def test_compute_metrics_is_the_mean_of_skimage_per_image_values(sobel_dataset, arch):
    model = create_img2img_model(3, 1, arch)
    inputs, targets = sobel_dataset.batch(range(len(sobel_dataset)))
    data_range = sobel_dataset.filter.data_range
    expected = _reference(model, inputs, targets, data_range)
    result = compute_metrics(model, sobel_dataset, batch_size=4, device="cpu")
    assert result["images"] == len(sobel_dataset)
    assert result["data_range_source"] == "filter"
    assert result["data_range"] == pytest.approx(data_range, rel=1e-15)
    assert result["psnr_infinite_images"] == 0
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=RTOL), key
    # The batch size changes nothing (means over images, not over batches).
    whole = compute_metrics(model, sobel_dataset, batch_size=256, device="cpu")
    for key in expected:
        assert whole[key] == pytest.approx(result[key], rel=1e-12), key


def test_compute_metrics_data_range_argument_and_max_images(sobel_dataset):
    model = create_img2img_model(3, 1, "linear")
    result = compute_metrics(model, sobel_dataset, data_range=3.0, max_images=3, device="cpu")
    inputs, targets = sobel_dataset.batch([0, 1, 2])
    expected = _reference(model, inputs, targets, 3.0)
    assert result["images"] == 3
    assert result["data_range"] == 3.0
    assert result["data_range_source"] == "argument"
    assert result["psnr"] == pytest.approx(expected["psnr"], rel=RTOL)
    assert result["ssim"] == pytest.approx(expected["ssim"], rel=RTOL)


class _PairList(torch.utils.data.Dataset):
    """(input, target) pairs without a filter: read through a DataLoader."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        return self.inputs[index], self.targets[index]


def test_compute_metrics_infers_the_range_from_the_targets(sobel_dataset):
    model = create_img2img_model(3, 1, "linear")
    inputs, targets = sobel_dataset.batch(range(6))
    dataset = _PairList(inputs, targets)
    result = compute_metrics(model, dataset, batch_size=4, device="cpu", max_images=5)
    span = float(targets[:5].max()) - float(targets[:5].min())
    expected = _reference(model, inputs[:5], targets[:5], span)
    assert result["data_range_source"] == "targets"
    assert result["data_range"] == pytest.approx(span, rel=1e-12)
    assert result["images"] == 5
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=RTOL), key


def test_compute_metrics_falls_back_to_targets_for_an_unbounded_filter(sobel_dataset):
    inputs, targets = sobel_dataset.batch(range(3))

    class Unbounded(_PairList):
        filter = type("F", (), {"data_range": math.inf})()

    result = compute_metrics(
        create_img2img_model(3, 1, "linear"), Unbounded(inputs, targets), device="cpu"
    )
    assert result["data_range_source"] == "targets"


def test_perfect_predictions_report_infinite_psnr(sobel_dataset):
    inputs, _ = sobel_dataset.batch(range(3))
    result = compute_metrics(nn.Identity(), _PairList(inputs, inputs.clone()), device="cpu")
    assert result["psnr"] == math.inf
    assert result["psnr_infinite_images"] == 3
    assert result["ssim"] == pytest.approx(1.0)
    assert result["l1"] == result["mse"] == 0.0
    assert result["data_range"] == pytest.approx(float(inputs.max() - inputs.min()))


def test_compute_metrics_leaves_the_model_as_it_was(sobel_dataset):
    model = create_img2img_model(3, 1, "linear").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compute_metrics(model, sobel_dataset, device="cpu", max_images=2)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer; got 0"),
        ({"max_images": 0}, "max_images must be a positive integer; got 0"),
        ({"data_range": -1.0}, "data_range must be a positive finite number"),
        ({"device": "gpu"}, "device must be .*got 'gpu'"),
    ],
)
def test_compute_metrics_bad_arguments(sobel_dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(create_img2img_model(3, 1, "linear"), sobel_dataset, **kwargs)


def test_compute_metrics_rejects_mismatched_outputs_and_empty_datasets(sobel_dataset):
    three_channels = create_img2img_model(3, 3, "linear")
    with pytest.raises(
        ValueError, match=r"output \(\d+, 3, 64, 64\) and targets \(\d+, 1, 64, 64\)"
    ):
        compute_metrics(three_channels, sobel_dataset, device="cpu", max_images=2)
    empty = _PairList(torch.zeros(0, 3, 8, 8), torch.zeros(0, 1, 8, 8))
    with pytest.raises(ValueError, match="dataset is empty"):
        compute_metrics(three_channels, empty, device="cpu")


# -- resolve_device ----------------------------------------------------------------------------
def test_resolve_device_accepts_the_documented_forms():
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_resolve_device_refuses_cuda_without_cuda(device):
    with pytest.raises(ValueError, match=r"device is .*cuda.*CUDA is not available"):
        resolve_device(device)


def test_resolve_device_cuda_index_out_of_range(monkeypatch):
    # A machine with two CUDA devices, as resolve_device sees it.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


def test_resolve_device_rejects_garbage():
    for garbage in ("gpu", "cuda:x", "", "tpu"):
        with pytest.raises(ValueError, match=f"model_device must be .*got {garbage!r}"):
            resolve_device(garbage, argument="model_device")
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(0)


def test_rms_psnr_is_scikit_images_psnr_of_that_error() -> None:
    from img2img_filters.metrics import rms_psnr

    rng = np.random.default_rng(3)
    target = rng.random((16, 16))
    prediction = target + 0.01 * rng.standard_normal((16, 16))
    error = float(np.sqrt(np.mean((prediction - target) ** 2)))
    for data_range in (1.0, 255.0):
        expected = peak_signal_noise_ratio(target, prediction, data_range=data_range)
        assert rms_psnr(error, data_range) == pytest.approx(expected, rel=1e-12)
    assert rms_psnr(0.0) == float("inf")

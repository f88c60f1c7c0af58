"""RGB in, RGB out, all the way through: training, metrics, apply, files, export, figures."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch.utils.data import Dataset

from img2img_filters import apply_filter, compute_metrics, preview_predictions, train_model
from img2img_filters.checkpoint import load_model, save_model
from img2img_filters.cli import main
from img2img_filters.data.samples import load_samples
from img2img_filters.models import create_img2img_model
from img2img_filters.solve import fit_lut

matplotlib.use("Agg")

#: A warm grade: each output channel a different mix and curve of the input, so a swap of R
#: and B (RGB written as BGR) changes the result.
_MIX = torch.tensor([[0.9, 0.2, 0.0], [0.1, 0.7, 0.1], [0.0, 0.1, 0.5]])


def _grade(x: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` -> ``(3, H, W)``: a colour matrix then a per-channel gamma, in [0, 1]."""
    mixed = torch.einsum("oc,chw->ohw", _MIX, x).clamp(0.0, 1.0)
    return mixed ** torch.tensor([0.8, 1.0, 1.3]).view(3, 1, 1)


class _Pairs(Dataset):
    def __init__(self, photos: np.ndarray) -> None:
        self.inputs = torch.from_numpy(photos).float() / 255.0

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], _grade(self.inputs[index])


@pytest.fixture(scope="module")
def pairs() -> tuple[_Pairs, _Pairs]:
    samples = load_samples(crop_size=32, stride=32, max_side=96)
    order = np.random.default_rng(1).permutation(len(samples.images))
    return _Pairs(samples.images[order[:64]]), _Pairs(samples.images[order[64:80]])


@pytest.fixture(scope="module")
def fitted(pairs) -> torch.nn.Module:
    return fit_lut(pairs[0], size=9, curve_size=64).eval()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real non-square photo, uint8 (45, 70, 3) RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40:85, 200:270])


def test_train_model_learns_an_rgb_target(pairs) -> None:
    train, val = pairs
    torch.manual_seed(0)
    model = create_img2img_model(3, 3, "pixelmlp", hidden=16, layers=1)
    before = compute_metrics(model, val, data_range=1.0, device="cpu")["l1"]
    subset = torch.utils.data.Subset(train, range(16))
    _, val_losses = train_model(
        model, subset, val, max_epochs=3, batch_size=4, learning_rate=1e-2, progress=False
    )
    assert len(val_losses) == 3 and val_losses[-1] < val_losses[0] < before
    with torch.no_grad():
        assert model(val.inputs[:2]).shape == (2, 3, 32, 32)


def test_compute_metrics_equals_skimage_with_channel_axis(pairs, fitted) -> None:
    _, val = pairs
    with torch.no_grad():
        predictions = fitted(val.inputs).double().numpy()
    targets = torch.stack([val[i][1] for i in range(len(val))]).double().numpy()
    result = compute_metrics(fitted, val, data_range=1.0, device="cpu")
    psnrs, ssims = [], []
    for p, t in zip(predictions, targets, strict=True):
        p, t = p.transpose(1, 2, 0), t.transpose(1, 2, 0)
        psnrs.append(peak_signal_noise_ratio(t, p, data_range=1.0))
        ssims.append(structural_similarity(t, p, data_range=1.0, channel_axis=2))
    assert result["images"] == len(val)
    assert result["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-9)
    assert result["ssim"] == pytest.approx(np.mean(ssims), rel=1e-9)
    assert result["psnr"] > 50  # the least-squares table fits the grade


@pytest.mark.parametrize("arch", ["lut3d", "linear"])
def test_apply_filter_returns_rgb_equal_to_the_network(arch, fitted, photo) -> None:
    if arch == "lut3d":
        model = fitted
    else:  # a 1x1 colour mix, which apply_filter folds into one OpenCV filter
        model = create_img2img_model(3, 3, "linear", kernel_size=1).eval()
        with torch.no_grad():
            model.layers[0].weight.copy_(_MIX[:, :, None, None])
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        expected = model(x)[0].permute(1, 2, 0).numpy()
    for tile in (None, 16):
        result = apply_filter(photo, model, tile=tile, device="cpu")
        assert result.shape == (45, 70, 3) and result.dtype == np.float32
        np.testing.assert_allclose(result, expected, atol=1e-5, rtol=0)


def test_cli_apply_writes_an_rgb_png_in_rgb_order(tmp_path: Path, fitted, photo) -> None:
    checkpoint = save_model(fitted, tmp_path / "model.safetensors")
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out.png"
    assert main(["apply", str(checkpoint), str(source), "-o", str(out), "--device", "cpu"]) == 0
    written = cv2.cvtColor(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        expected = load_model(checkpoint)(x)[0].permute(1, 2, 0).numpy()
    expected = np.round(np.clip(expected, 0, 1) * 255)
    assert written.shape == (45, 70, 3)
    assert np.abs(written.astype(np.float64) - expected).max() <= 1
    # The channels differ, so a swapped order would be caught.
    assert np.abs(expected[..., 0] - expected[..., 2]).mean() > 20


def test_onnx_export_of_an_rgb_lut(tmp_path: Path, fitted) -> None:
    import onnxruntime

    from img2img_filters.export import export_onnx

    path = export_onnx(fitted, tmp_path / "lut.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.rand(1, 3, 21, 34) * 1.2 - 0.1  # values beyond [0, 1] take the border
    (output,) = session.run(None, {"image": batch.numpy()})
    with torch.no_grad():
        expected = fitted(batch).numpy()
    assert output.shape == (1, 3, 21, 34)
    np.testing.assert_allclose(output, expected, atol=1e-5, rtol=0)


def test_preview_shows_colour_outputs(pairs, fitted) -> None:
    _, val = pairs
    figure = preview_predictions(fitted, val, num_images=2, device="cpu")
    output_axes = figure.axes[1]  # row 0: input | output | target | error
    shown = np.asarray(output_axes.images[0].get_array())
    with torch.no_grad():
        prediction = fitted(val.inputs[:1])[0].permute(1, 2, 0).numpy()
    assert shown.shape == (32, 32, 3)
    np.testing.assert_allclose(shown, np.clip(prediction, 0, 1), atol=1e-6)
    target_axes = figure.axes[2]
    assert np.asarray(target_axes.images[0].get_array()).shape == (32, 32, 3)

"""The tile-histogram equalisation: scikit-image's CLAHE as the oracle, auto's choice, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data, exposure, filters
from skimage.color import rgb2hsv
from skimage.exposure._adapthist import clip_histogram

from img2img_filters import apply_filter, load_model
from img2img_filters.auto import choose_arch
from img2img_filters.auto.equalisation import equalisation_candidate, equalisation_error
from img2img_filters.auto.scoring import sample_batch
from img2img_filters.auto.wide import WIDE_PSNR
from img2img_filters.data import load_filtered_dataset
from img2img_filters.export import export_onnx, export_torchscript
from img2img_filters.filters.external import CallableFilter
from img2img_filters.models import AdaptiveEqualisationNet, create_img2img_model
from img2img_filters.models.tile_histogram import clip_histograms, equalise_tiles
from img2img_filters.runs import DataConfig, ModelConfig, train_run


def clahe(photo: np.ndarray) -> np.ndarray:
    """scikit-image's ``equalize_adapthist`` (defaults) of an RGB photo, rounded to uint8."""
    return np.clip(np.round(exposure.equalize_adapthist(photo) * 255), 0, 255).astype(np.uint8)


def _tensor(photo: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
@pytest.mark.parametrize("side", [(64, 64), (97, 130), (5, 3), (1, 9)])
@pytest.mark.parametrize(("clip_limit", "bins"), [(0.01, 256), (0.0, 256), (0.05, 64)])
def test_equalise_tiles_is_scikit_images_clahe(
    name: str, side: tuple[int, int], clip_limit: float, bins: int
) -> None:
    photo = getattr(data, name)()[: side[0], : side[1]]
    gray = rgb2hsv(photo)[..., 2] if photo.ndim == 3 else photo / 255.0
    expected = exposure.equalize_adapthist(gray, clip_limit=clip_limit, nbins=bins)
    got = equalise_tiles(torch.from_numpy(gray)[None], 8, clip_limit, bins)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tiles", [2, 4, 16])
def test_the_tile_grid_follows_the_photo_size_as_scikit_images_kernel_size(tiles: int) -> None:
    gray = rgb2hsv(data.chelsea()[:120, :160])[..., 2]
    kernel = (120 // tiles, 160 // tiles)
    expected = exposure.equalize_adapthist(gray, kernel_size=kernel)
    got = equalise_tiles(torch.from_numpy(gray)[None], tiles, 0.01, 256)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("limit", [1, 3, 10, 40])
def test_clipping_spreads_the_excess_as_scikit_image_does(limit: int) -> None:
    rng = np.random.default_rng(limit)
    histograms = np.stack(
        [rng.multinomial(64 * (1 + i), rng.dirichlet(np.full(32, 0.3))) for i in range(6)]
    )
    expected = np.stack([clip_histogram(h.copy(), limit) for h in histograms])
    got = clip_histograms(torch.from_numpy(histograms), limit).numpy()
    np.testing.assert_array_equal(got, expected)
    assert (got <= limit).all()
    kept = np.minimum(histograms.sum(axis=1), 32 * limit)  # what the bins can hold
    assert (got.sum(axis=1) >= kept).all()


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "rocket"])
def test_at_the_defaults_the_model_is_scikit_images_clahe_of_rgb(name: str) -> None:
    photo = getattr(data, name)()[:96, :128]
    model = create_img2img_model(3, 3, "equalisation")
    with torch.no_grad():
        output = model(_tensor(photo))[0].permute(1, 2, 0).numpy()
    got = np.clip(np.round(output * 255), 0, 255)
    expected = clahe(photo).astype(np.float64)
    assert np.abs(got - expected).max() <= 1  # float32 against scikit-image's float64
    assert (got == expected).mean() >= 0.998


@pytest.mark.parametrize("value", ["luma", "mean", "channels"])
def test_each_channel_choice_equalises_what_it_names(value: str) -> None:
    photo = data.coffee()[:64, :80]
    x = _tensor(photo)
    model = create_img2img_model(3, 3, "equalisation", value=value)
    gray = {
        "luma": photo @ np.array([0.299, 0.587, 0.114]) / 255,
        "mean": photo.mean(axis=2) / 255,
    }
    z = model.head_inputs(x)[0].numpy()
    if value == "channels":
        for c in range(3):
            expected = exposure.equalize_adapthist(photo[..., c] / 255.0)
            np.testing.assert_allclose(z[..., 3 + c], expected, atol=1e-6)
    else:
        np.testing.assert_allclose(z[..., 3], gray[value], atol=1e-6)
        np.testing.assert_allclose(z[..., 4], exposure.equalize_adapthist(gray[value]), atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"value": "hue"}, "value must be one of"),
        ({"tiles": 0}, "tiles"),
        ({"clip_limit": 1.5}, r"clip_limit must be in \[0, 1\]"),
        ({"clip_limit": float("nan")}, "clip_limit must be a finite number"),
        ({"bins": 1}, "bins"),
        ({"bins": 2**15}, "bins"),
        ({"activation": "no-such"}, "activation must be one of"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        create_img2img_model(3, 3, "equalisation", **options)


def test_auto_gives_adaptive_contrast_the_equalisation_and_other_operators_not() -> None:
    teacher = CallableFilter(clahe)
    train_set, _ = load_filtered_dataset(filter=teacher, limit=12)
    choice = choose_arch(teacher, train_set)
    assert choice.probe["verdict"] == "global"
    assert choice.arch == "equalisation" and choice.method == "gradient"
    assert {key: choice.options[key] for key in ("value", "tiles", "clip_limit")} == {
        "value": "max",
        "tiles": 8,
        "clip_limit": 0.01,
    }
    assert "-> equalisation(value=max, tiles=8, clip_limit=0.01; least-squares head " in (
        choice.probe_line
    )

    def sobel(photo: np.ndarray) -> np.ndarray:
        gray = photo.mean(axis=2) / 255.0
        return np.clip(filters.sobel(gray) * 255, 0, 255).astype(np.uint8)

    sobel_set, _ = load_filtered_dataset(filter=CallableFilter(sobel), limit=12)
    _, psnr = equalisation_candidate(*sample_batch(sobel_set, 12))
    assert psnr < WIDE_PSNR


def test_the_least_squares_score_prefers_the_operators_settings() -> None:
    photos = [data.astronaut()[:64, :64], data.chelsea()[:64, :64], data.coffee()[:64, :64]]
    inputs = torch.cat([_tensor(photo) for photo in photos])
    targets = torch.cat([_tensor(clahe(photo)) for photo in photos])
    right = equalisation_error(inputs, targets, value="max", tiles=8, clip_limit=0.01)
    assert right < 1.5 / 255
    for wrong in ({"value": "luma"}, {"tiles": 4}, {"clip_limit": 0.0}):
        settings = {"value": "max", "tiles": 8, "clip_limit": 0.01, **wrong}
        assert equalisation_error(inputs, targets, **settings) > 3 * right


def test_adaptive_contrast_is_learnt_end_to_end(tmp_path: Path) -> None:
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=clahe, limit=12),
        ModelConfig(arch="auto"),
        {"device": "cpu", "progress": False, "max_epochs": 1},  # no budget: deterministic
        figures=False,
        log=lambda _: None,
    )
    assert result.model.config["arch"] == "equalisation"
    assert isinstance(result.model, AdaptiveEqualisationNet)
    certificate = result.metrics["certificate"]
    assert certificate["psnr"] > 50.0 and certificate["exact_share"] > 0.98
    assert certificate["probe"]["verdict"] == "global"
    photo = data.coffee()[:70, :90]  # another size than the training photos
    whole = apply_filter(photo, result.model)
    np.testing.assert_array_equal(apply_filter(photo, result.model, tile=16), whole)
    assert (np.round(whole * 255) == clahe(photo)).mean() > 0.98
    np.testing.assert_array_equal(apply_filter(photo, load_model(result.folder)), whole)
    scripted = torch.jit.load(str(export_torchscript(result.model, tmp_path / "model.pt")))
    for side in ((40, 57), (71, 64)):  # the equalisation is TorchScript: every size runs
        x = torch.rand(1, 3, *side)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), result.model(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"cannot be exported to ONNX.*TorchScript"):
        export_onnx(result.model, tmp_path / "model.onnx")

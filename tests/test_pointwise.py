"""Per-pixel architectures (lut3d, pixelmlp), the least-squares LUT fit and 1x1 colour mixing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from img2img_filters.auto import arch_for_verdict
from img2img_filters.data.samples import load_samples
from img2img_filters.models import ColourLUT, PixelMLP, create_img2img_model, receptive_field
from img2img_filters.solve import fit_linear, fit_lut

#: A sepia matrix (rows: output R, G, B; columns: input R, G, B).
SEPIA = np.array(
    [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32
)


class _Pairs(Dataset):
    """``(input (3, H, W), target (C, H, W))`` pairs: uint8 photos / 255 and an operator of them."""

    def __init__(self, photos: np.ndarray, operator) -> None:
        self.inputs = torch.from_numpy(photos).float() / 255.0
        self.operator = operator

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs[index]
        return x, self.operator(x)


def _gamma(x: torch.Tensor) -> torch.Tensor:
    return x.sqrt()


def _sepia_then_curve(x: torch.Tensor) -> torch.Tensor:
    """Sepia by OpenCV's ``cv2.transform`` (clipped to [0, 1]), then a smooth S-curve."""
    hwc = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
    mixed = np.clip(cv2.transform(hwc, SEPIA), 0.0, 1.0)
    curve = mixed * mixed * (3.0 - 2.0 * mixed)
    return torch.from_numpy(curve).permute(2, 0, 1)


@pytest.fixture(scope="module")
def crops() -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out crops of the built-in photos, uint8 ``(N, 3, 32, 32)``, disjoint."""
    samples = load_samples(crop_size=32, stride=32, max_side=96)
    order = np.random.default_rng(0).permutation(len(samples.images))
    return samples.images[order[:96]], samples.images[order[96:160]]


def _exact_share(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """The share of values equal after rounding to 8 bits."""
    return float(((prediction * 255).round() == (target * 255).round()).double().mean())


def _psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / (prediction.double() - target.double()).square().mean()))


# -- the lut3d model ------------------------------------------------------------------------------


def test_lut_starts_as_the_identity_or_the_mean() -> None:
    x = torch.rand(2, 3, 9, 11)
    with torch.no_grad():
        same = create_img2img_model(3, 3, "lut3d")(x)
        mean = create_img2img_model(3, 1, "lut3d", size=0)(x)
    torch.testing.assert_close(same, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(mean, x.mean(dim=1, keepdim=True), atol=1e-6, rtol=0)


def test_lut_table_equals_grid_sample_and_curves_equal_np_interp() -> None:
    generator = torch.Generator().manual_seed(0)
    model = create_img2img_model(3, 2, "lut3d", size=6, curve_size=9)
    x = torch.rand(1, 3, 7, 13, generator=generator) * 1.4 - 0.2  # some outside [0, 1]
    with torch.no_grad():
        model.curves.zero_()
        model.table.copy_(torch.randn(model.table.shape, generator=generator))
        table_only = model(x)
        # grid_sample: a (C, D, H, W) volume read at (x=W, y=H, z=D) in [-1, 1].
        grid = (x.permute(0, 2, 3, 1).flip(-1) * 2 - 1).unsqueeze(1)  # (1, 1, 7, 13, 3)
        expected = F.grid_sample(
            model.table[None], grid, align_corners=True, padding_mode="border"
        )[:, :, 0]
        torch.testing.assert_close(table_only, expected, atol=1e-5, rtol=0)

        model.table.zero_()
        model.curves.copy_(torch.randn(model.curves.shape, generator=generator))
        curves_only = model(x).numpy()
    knots = np.linspace(0, 1, 9)
    curves = model.curves.detach().numpy()
    reference = sum(
        np.stack([np.interp(x[0, c].numpy(), knots, curves[o, c]) for o in range(2)])
        for c in range(3)
    )
    np.testing.assert_allclose(curves_only[0], reference, atol=1e-5, rtol=0)


def test_pointwise_models_have_a_one_pixel_field() -> None:
    for arch in ("lut3d", "pixelmlp"):
        assert receptive_field(create_img2img_model(3, 3, arch)) == 1
    assert isinstance(create_img2img_model(3, 3, "lut3d"), ColourLUT)
    assert isinstance(create_img2img_model(3, 3, "pixelmlp"), PixelMLP)
    curves_only = create_img2img_model(1, 1, "lut3d", size=0)  # any input channels
    assert curves_only.table is None and curves_only(torch.rand(1, 1, 4, 4)).shape == (1, 1, 4, 4)


@pytest.mark.parametrize(
    ("arch", "channels", "options", "error", "message"),
    [
        ("lut3d", 3, {"size": 1}, ValueError, "size must be 0"),
        ("lut3d", 3, {"size": 66}, ValueError, "size must be 0"),
        ("lut3d", 3, {"size": 2.0}, TypeError, "size must be an integer"),
        ("lut3d", 3, {"curve_size": 1}, ValueError, "curve_size must be"),
        ("lut3d", 3, {"curve_size": 5000}, ValueError, "curve_size must be 2 to 4096"),
        ("lut3d", 1, {}, ValueError, "a 3D table needs 3 input channels"),
        ("lut3d", 3, {"border": "mirror"}, ValueError, "border"),
        ("pixelmlp", 3, {"hidden": 0}, ValueError, "hidden must be"),
        ("pixelmlp", 3, {"hidden": 2000}, ValueError, "hidden must be an integer from 1 to 1024"),
        ("pixelmlp", 3, {"layers": 17}, ValueError, "layers must be 1 to 16"),
        ("pixelmlp", 3, {"activation": "swish"}, ValueError, "activation must be one of"),
    ],
)
def test_bad_options_are_named(arch, channels, options, error, message) -> None:
    with pytest.raises(error, match=message):
        create_img2img_model(channels, 3, arch, **options)


# -- fits -----------------------------------------------------------------------------------------


def test_fit_lut_learns_a_gamma_curve_exactly(crops) -> None:
    train, held_out = crops
    model = fit_lut(_Pairs(train, _gamma), size=0, curve_size=256)
    x = torch.from_numpy(held_out).float() / 255.0
    with torch.no_grad():
        prediction = model(x)
    assert _exact_share(prediction, x.sqrt()) >= 0.995
    assert _psnr(prediction, x.sqrt()) > 80.0
    assert model.fit_report["residual_rms"] < 1e-5
    assert model.fit_report["pixels"] == 96 * 32 * 32


def test_fit_lut_learns_sepia_then_a_curve(crops) -> None:
    train, held_out = crops
    model = fit_lut(_Pairs(train, _sepia_then_curve), size=9, curve_size=64)
    held = _Pairs(held_out, _sepia_then_curve)
    x = held.inputs
    target = torch.stack([held[i][1] for i in range(len(held))])
    with torch.no_grad():
        prediction = model(x)
    # Held-out crops: some of their colours are absent from the 96 training crops.
    assert _exact_share(prediction, target) >= 0.97
    assert _psnr(prediction, target) > 60.0
    # Curves alone cannot mix the channels non-linearly: the table is what fits it.
    curves_only = fit_lut(_Pairs(train, _sepia_then_curve), size=0, curve_size=64)
    with torch.no_grad():
        assert _psnr(curves_only(x), target) < _psnr(prediction, target) - 20


def test_fit_lut_fills_unseen_colours_smoothly() -> None:
    # Only dark pixels: the rest of the table is filled from its neighbours, never NaN.
    photos = np.random.default_rng(1).integers(0, 100, (4, 3, 16, 16), dtype=np.uint8)
    model = fit_lut(_Pairs(photos, _gamma), size=5, curve_size=32)
    assert torch.isfinite(model.table).all() and torch.isfinite(model.curves).all()
    with torch.no_grad():
        bright = model(torch.full((1, 3, 2, 2), 0.9))
    assert torch.isfinite(bright).all()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"size": 1}, ValueError, "size must be 0"),
        ({"size": 33, "curve_size": 256}, ValueError, "at most 12000"),
        ({"smoothness": -1.0}, ValueError, "smoothness"),
        ({"smoothness": "a"}, TypeError, "smoothness"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_fit_lut_bad_arguments(options, error, message) -> None:
    photos = np.zeros((1, 3, 4, 4), dtype=np.uint8)
    with pytest.raises(error, match=message):
        fit_lut(_Pairs(photos, _gamma), **options)


def test_fit_lut_refuses_an_empty_or_wrong_dataset() -> None:
    with pytest.raises(ValueError, match="dataset is empty"):
        fit_lut(_Pairs(np.zeros((0, 3, 4, 4), dtype=np.uint8), _gamma))
    with pytest.raises(TypeError, match="dataset must be"):
        fit_lut(42)


def test_fit_linear_fits_a_sepia_matrix_exactly(crops) -> None:
    """A 3 -> 3 colour mix: the 1x1 least-squares fit is OpenCV's matrix to float32 rounding."""
    train, _ = crops

    def sepia(x: torch.Tensor) -> torch.Tensor:  # unclipped: a linear map
        hwc = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
        return torch.from_numpy(cv2.transform(hwc, SEPIA)).permute(2, 0, 1)

    model = fit_linear(_Pairs(train[:16], sepia), kernel_size=1)
    conv = model.layers[0]
    assert conv.weight.shape == (3, 3, 1, 1)
    np.testing.assert_allclose(conv.weight[:, :, 0, 0].detach().numpy(), SEPIA, atol=2e-7, rtol=0)
    np.testing.assert_allclose(conv.bias.detach().numpy(), 0.0, atol=2e-7)
    assert receptive_field(model) == 1


# -- choosing the architecture from a probe's verdict ---------------------------------------------


def test_arch_for_verdict() -> None:
    arch, options = arch_for_verdict("pointwise", 3)
    assert arch == "lut3d" and options == {"size": 17, "curve_size": 256}
    model = create_img2img_model(3, 1, arch, **options)
    assert receptive_field(model) == 1
    for verdict in ("colour_linear", "color-linear", "linear_colour"):
        arch, options = arch_for_verdict(verdict, 3)
        assert arch == "linear" and options == {"kernel_size": 1, "depth": 1}
    options["kernel_size"] = 3  # a copy: the table is not changed
    assert arch_for_verdict("colour_linear", 1)[1]["kernel_size"] == 1
    with pytest.raises(ValueError, match="verdict must be one of"):
        arch_for_verdict("local", 3)
    with pytest.raises(TypeError, match="verdict must be a string"):
        arch_for_verdict(None, 3)
    with pytest.raises(ValueError, match="channels_out must be"):
        arch_for_verdict("pointwise", 0)
    with pytest.raises(TypeError, match="channels_out must be"):
        arch_for_verdict("pointwise", True)


def test_a_fitted_lut_saves_and_loads(tmp_path, crops) -> None:
    from img2img_filters.checkpoint import load_model, save_model

    model = fit_lut(_Pairs(crops[0][:8], _gamma), size=4, curve_size=32)
    loaded = load_model(save_model(model, tmp_path / "lut.safetensors"))
    assert loaded.config["options"] == {"size": 4, "curve_size": 32, "border": "reflect101"}
    x = torch.rand(2, 3, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_fit_auto_fits_the_verdicts_architectures_in_closed_form(crops) -> None:
    from img2img_filters.auto import AutoChoice, fit_auto

    train, held_out = _Pairs(crops[0][:32], _gamma), _Pairs(crops[1][:8], _gamma)
    arch, options = arch_for_verdict("pointwise", 3)
    options["size"] = 5  # a small table keeps the test fast; the curves are the verdict's
    model, result = fit_auto(
        train, held_out, AutoChoice("exact", arch, options), device="cpu", progress=False
    )
    assert model.config["arch"] == "lut3d"
    assert model.config["options"] == {"size": 5, "curve_size": 256, "border": "reflect101"}
    assert result.val_losses[0] < 1e-4 and result.epochs == 1
    arch, options = arch_for_verdict("colour_linear", 3)
    model, _ = fit_auto(train, held_out, AutoChoice("exact", arch, options), device="cpu")
    assert model.config["arch"] == "linear" and model.config["options"]["kernel_size"] == 1
    with pytest.raises(ValueError, match=r"fit_auto fits \['linear', 'clipped_linear', 'lut3d'"):
        fit_auto(train, held_out, AutoChoice("exact", "can"), device="cpu")


def test_merging_8bit_colours_gives_the_same_normal_equations(monkeypatch, crops) -> None:
    from img2img_filters.solve import colour

    # float64 levels u / 255, so that merged and unmerged rows hold the same numbers.
    x = torch.from_numpy(crops[0][:4]).double() / 255.0
    y = torch.stack([_sepia_then_curve(image.float()) for image in x]).double()
    merge_colours = colour._merge_8bit_colours
    unknowns = 3 * 16 + 4**3
    sums = []
    for merge in (True, False):
        if not merge:
            monkeypatch.setattr(colour, "_merge_8bit_colours", lambda p, t: (p, t, None))
        gram = torch.zeros(unknowns, unknowns, dtype=torch.float64)
        cross = torch.zeros(unknowns, 3, dtype=torch.float64)
        colour._accumulate(gram, cross, x, y, 16, 4)
        sums.append((gram, cross))
    torch.testing.assert_close(sums[0][0], sums[1][0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sums[0][1], sums[1][1], rtol=1e-9, atol=1e-9)
    colours, _, counts = merge_colours(
        x.transpose(0, 1).reshape(3, -1), y.transpose(0, 1).reshape(3, -1)
    )
    assert counts is not None and counts.sum() == 4 * 32 * 32 and colours.shape[1] < 4 * 32 * 32
    # Values that are not 8-bit levels are kept pixel by pixel.
    _, _, none = merge_colours(
        torch.rand(3, 10, dtype=torch.float64), torch.rand(1, 10, dtype=torch.float64)
    )
    assert none is None

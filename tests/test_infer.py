"""Inference on any size: tiling, conversions, the folded fast path, bounded memory."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from img2img_filters.border import BORDER_MODES
from img2img_filters.filters import create_filter
from img2img_filters.infer import (
    FoldedFilter,
    Predictor,
    apply_filter,
    bytes_per_pixel,
    choose_tile,
    folds_exactly,
    image_to_tensor,
    prepare_for_inference,
)
from img2img_filters.infer.tiling import CPU_TILE_BUDGET, available_memory, plan_axis
from img2img_filters.models import create_img2img_model, get_arch, list_archs, receptive_field

ARCHS = [entry.name for entry in list_archs()]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real non-square photo, uint8 (61, 90, 3) RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[150:211, 160:250])


def _perturb_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm running statistics and the adaptive norms a weight, so eval matters."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) * 0.2 - 0.1)
            if hasattr(module, "bn") and hasattr(module, "b"):
                module.b.fill_(0.3)
    return model


def _reference(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The model on the whole image in eval mode, ``(H, W, C_out)``."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = model(image_to_tensor(image))[0].permute(1, 2, 0).numpy()
    model.train(was_training)
    return output


def _close(actual: np.ndarray, expected: np.ndarray, tolerance: float = 1e-5) -> None:
    """Equal within ``tolerance`` relative to the output's scale (at least 1)."""
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(actual - expected).max())
    assert error <= tolerance * scale, f"max error {error:.3g} (scale {scale:.3g})"


# -- tiling ----------------------------------------------------------------------------------------


#: Every architecture with each border it takes (``None``: it takes none).
TILING_CASES = [
    (arch, border)
    for arch in ARCHS
    for border in (sorted(BORDER_MODES) if "border" in get_arch(arch).defaults else [None])
]


@pytest.mark.parametrize(("arch", "border"), TILING_CASES)
def test_tiled_equals_whole_image_for_every_arch(
    arch: str, border: str | None, photo: np.ndarray
) -> None:
    options = {} if border is None else {"border": border}
    model = _perturb_norms(create_img2img_model(3, 2, arch, **options)).train()
    field = receptive_field(model)
    expected = _reference(model, photo)
    whole = Predictor(model, tile=max(photo.shape), device="cpu", fast=False)(photo)
    _close(whole, expected)
    for tile in sorted({field, field + 7, 48}):
        tiled = Predictor(model, tile=tile, device="cpu", fast=False)(photo)
        assert tiled.shape == (*photo.shape[:2], 2)
        assert np.abs(tiled - whole).max() <= 1e-5 * max(1.0, float(np.abs(whole).max()))
    assert model.training  # the caller's model is untouched: inference ran on an eval copy
    if field > 2:  # a per-pixel model (field 1) takes any tile
        with pytest.raises(ValueError, match=rf"tile must be at least .*\({field} pixels\); got 2"):
            apply_filter(photo, model, tile=2, device="cpu")
        with pytest.raises(ValueError, match=rf"\({field} pixels\); got {field - 1}"):
            apply_filter(photo, model, tile=field - 1, device="cpu")


def test_bad_tile_types(photo: np.ndarray) -> None:
    model = create_img2img_model(3, 1, "study")
    for tile in (7.5, True, "64"):
        with pytest.raises(TypeError, match="tile must be an integer"):
            apply_filter(photo, model, tile=tile)


def test_plan_axis_covers_the_axis_in_nearly_equal_parts() -> None:
    assert plan_axis(100, 40) == [(0, 34), (34, 68), (68, 100)]
    assert plan_axis(5, 40) == [(0, 5)]
    for size in (1, 31, 64, 65, 1000):
        parts = plan_axis(size, 32)
        assert parts[0][0] == 0 and parts[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
        assert all(0 < stop - start <= 32 for start, stop in parts)


def test_choose_tile_from_memory() -> None:
    model = create_img2img_model(3, 1, "can")
    assert bytes_per_pixel(model) == 4 * 24 * 10
    assert available_memory("cpu") > 0
    tiny = choose_tile(model, "cpu", memory=1000)
    assert tiny == receptive_field(model)  # never below the receptive field
    small = choose_tile(model, "cpu", memory=64 * 2**20)
    large = choose_tile(model, "cpu", memory=2**40)
    assert 33 <= small < large and small % 32 == 0 and large % 32 == 0
    with_halo = large + 32
    assert with_halo**2 * bytes_per_pixel(model) <= CPU_TILE_BUDGET  # the cache-sized cap
    assert Predictor(model, device="cpu").tile == choose_tile(prepare_for_inference(model), "cpu")


def test_large_image_is_tiled_automatically() -> None:
    model = create_img2img_model(3, 1, "structured")
    predictor = Predictor(model, device="cpu")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (predictor.tile * 2 + 5, 40, 3), dtype=np.uint8)
    _close(predictor(image), _reference(model, image))


def test_memory_stays_bounded_with_tiles(tmp_path: Path) -> None:
    """A can model on a 1024x768 photo: the peak grows by the image, output and one tile only.

    Untiled, its feature maps alone would take 1024 * 768 * 24 * 4 bytes * 5 (about 380 MB).
    """
    script = textwrap.dedent(
        """
        import json, resource, sys
        import numpy as np, torch
        from img2img_filters.infer import Predictor
        from img2img_filters.models import create_img2img_model
        torch.set_num_threads(2)
        model = create_img2img_model(3, 1, "can")
        image = np.random.default_rng(0).integers(0, 256, (1024, 768, 3), dtype=np.uint8)
        predictor = Predictor(model, device="cpu")
        predictor(image[:64, :64])  # warm up the allocator and oneDNN
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        output = predictor(image)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"before": before * 1024, "after": after * 1024,
                          "tile": predictor.tile, "output": output.nbytes}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    growth = report["after"] - report["before"]
    bound = report["output"] + CPU_TILE_BUDGET + 48 * 2**20
    assert growth < bound, f"peak grew {growth / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB)"


def test_batchnorm_models_run_in_eval_mode(photo: np.ndarray) -> None:
    model = _perturb_norms(create_img2img_model(3, 1, "can")).train()
    _close(apply_filter(photo, model, device="cpu"), _reference(model, photo)[..., 0])
    assert model.training


# -- input conversions ---------------------------------------------------------------------------


def test_conversions(photo: np.ndarray) -> None:
    model = create_img2img_model(3, 1, "study", border="reflect101")
    as_float = apply_filter(photo.astype(np.float32) / 255, model, device="cpu")
    assert as_float.shape == photo.shape[:2] and as_float.dtype == np.float32
    _close(apply_filter(photo, model, device="cpu"), as_float)
    sixteen = photo.astype(np.uint16) * 257  # the same values in 16 bits
    _close(apply_filter(sixteen, model, device="cpu"), as_float)
    alpha = np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)])
    _close(apply_filter(alpha, model, device="cpu"), as_float)  # alpha dropped
    gray = photo[..., 1]
    expected = apply_filter(np.repeat(gray[..., None], 3, axis=2), model, device="cpu")
    _close(apply_filter(gray, model, device="cpu"), expected)
    _close(apply_filter(gray[..., None], model, device="cpu"), expected)


def test_bad_images(photo: np.ndarray) -> None:
    model = create_img2img_model(3, 1, "study")
    with pytest.raises(TypeError, match="image must be uint8, uint16 or float"):
        apply_filter(photo.astype(np.int32), model)
    with pytest.raises(ValueError, match="NaN or Inf"):
        apply_filter(np.full((4, 4, 3), np.nan, np.float32), model)
    with pytest.raises(ValueError, match="dimension of zero"):
        apply_filter(np.zeros((0, 4, 3), np.uint8), model)
    with pytest.raises(ValueError, match=r"\(H, W, 4\); got \(4, 4, 2\)"):
        apply_filter(np.zeros((4, 4, 2), np.uint8), model)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        apply_filter(photo, "model.safetensors")
    with pytest.raises(TypeError, match="fast must be None, True or False"):
        apply_filter(photo, model, fast="yes")


def test_16bit_and_rgba_files(tmp_path: Path, photo: np.ndarray) -> None:
    model = create_img2img_model(3, 1, "can")
    sixteen = (photo.astype(np.uint16) * 257 + 100).clip(0, 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), sixteen[..., ::-1])
    _close(
        apply_filter(tmp_path / "deep.png", model, device="cpu"),
        apply_filter(sixteen.astype(np.float64) / 65535, model, device="cpu"),
    )
    rgba = np.dstack([photo, np.arange(photo.size // 3, dtype=np.uint8).reshape(photo.shape[:2])])
    cv2.imwrite(str(tmp_path / "alpha.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    _close(
        apply_filter(str(tmp_path / "alpha.png"), model, device="cpu"),
        apply_filter(photo, model, device="cpu"),
    )
    from img2img_filters.imageio import ImageReadError

    with pytest.raises(ImageReadError, match="more than the limit"):
        apply_filter(tmp_path / "alpha.png", model, max_pixels=100)


def test_predict_batch_equals_one_by_one(photo: np.ndarray) -> None:
    model = create_img2img_model(3, 2, "structured")
    predictor = Predictor(model, device="cpu")
    stack = np.stack([photo, photo[::-1], photo[:, ::-1]])
    batched = predictor.predict_batch(stack)
    for image, result in zip(stack, batched, strict=True):
        _close(result, predictor(image))


# -- the folded fast path ------------------------------------------------------------------------


def _linear(kernel: np.ndarray, bias: float, border: str) -> torch.nn.Module:
    model = create_img2img_model(
        3, kernel.shape[0], "linear", kernel_size=kernel.shape[-1], border=border
    )
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.from_numpy(kernel))
        model.layers[0].bias.fill_(bias)
    return model


def _kernels() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    gray = np.array([0.299, 0.587, 0.114])
    sobel = create_filter("study-sobel").kernel.numpy()
    return {
        "sobel (gray, separable)": sobel,
        "gray, not separable": gray[None, :, None, None] * rng.normal(size=(1, 1, 3, 3)),
        "full rank": rng.normal(size=(1, 3, 5, 5)) / 5,
        "two outputs": rng.normal(size=(2, 3, 3, 3)) / 3,
        "1x1": rng.normal(size=(1, 3, 1, 1)),
        "15x15 box": np.full((1, 3, 15, 15), 1 / 675),
        "13x13 gray, not separable": gray[None, :, None, None]
        * rng.normal(size=(1, 1, 13, 13))
        / 13,
    }


@pytest.mark.parametrize("border", sorted(BORDER_MODES))
@pytest.mark.parametrize("name", sorted(_kernels()))
def test_folded_path_equals_the_network(name: str, border: str, photo: np.ndarray) -> None:
    model = _linear(_kernels()[name].astype(np.float32), 0.25, border)
    fast = Predictor(model, device="cpu")
    assert fast.path == "folded" and fast.folded.exact
    network = Predictor(model, device="cpu", fast=False)
    assert network.path == "network"
    rng = np.random.default_rng(1)
    images = [photo, photo[..., 0], photo.astype(np.uint16) * 257, rng.random((7, 5, 3))]
    images += [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(1, 1, 3), (2, 3, 3)]]
    for image in images:
        _close(fast(image), network(image))
    _close(fast(photo), _reference(model, photo))
    tiled = Predictor(model, device="cpu", tile=16)(photo)
    _close(tiled, fast(photo))


def test_fast_path_methods() -> None:
    kernels = _kernels()
    methods = {
        name: FoldedFilter(kernels[name], np.zeros(kernels[name].shape[0]), "reflect101").methods
        for name in kernels
    }
    assert methods["sobel (gray, separable)"] == ["gray + sepFilter2D"]
    assert methods["gray, not separable"] == ["gray + filter2D"]
    assert methods["full rank"] == ["filter2D per input channel"]
    assert methods["15x15 box"] == ["gray + sepFilter2D"]
    assert methods["13x13 gray, not separable"] == ["gray + filter2D"]


def test_fast_path_choice(photo: np.ndarray) -> None:
    deep = create_img2img_model(3, 1, "linear", depth=2, kernel_size=3)
    assert not folds_exactly(deep)
    assert Predictor(deep, device="cpu").path == "network"
    forced = Predictor(deep, device="cpu", fast=True)
    assert forced.path == "folded" and not forced.folded.exact
    halo = receptive_field(deep) // 2
    inner = (slice(halo, -halo), slice(halo, -halo))
    _close(forced(photo)[inner], _reference(deep, photo)[inner])  # exact away from the borders
    can = create_img2img_model(3, 1, "can")
    assert not folds_exactly(can)
    with pytest.raises(ValueError, match="fast=True needs a linear model"):
        apply_filter(photo, can, fast=True)
    assert Predictor(create_img2img_model(3, 1, "linear"), device="cpu", fast=False).path == (
        "network"
    )


def test_folded_filter_rejects_bad_kernels() -> None:
    with pytest.raises(ValueError, match="odd kh and kw"):
        FoldedFilter(np.zeros((1, 3, 2, 3)), np.zeros(1), "reflect101")
    with pytest.raises(ValueError, match=r"bias must have shape \(1,\)"):
        FoldedFilter(np.zeros((1, 3, 3, 3)), np.zeros(2), "reflect101")
    with pytest.raises(ValueError, match="border must be one of"):
        FoldedFilter(np.zeros((1, 3, 3, 3)), np.zeros(1), "mirror")

"""The domain-transform network: OpenCV's edge-preserving filter as the oracle, auto's choice, end to end."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from img2img_filters import apply_filter, load_model
from img2img_filters.auto import choose_arch
from img2img_filters.auto.edge_aware import SIGMA_R_GRID, SIGMA_S_GRID, head_error
from img2img_filters.data import load_filtered_dataset
from img2img_filters.export import export_torchscript
from img2img_filters.filters.external import CallableFilter
from img2img_filters.models import DomainTransformNet, create_img2img_model
from img2img_filters.models.domain_transform import recursive_sweep
from img2img_filters.runs import DataConfig, ModelConfig, train_run


def edge_preserving(photo: np.ndarray) -> np.ndarray:
    """OpenCV's ``edgePreservingFilter`` (recursive filter, sigma_s 60, sigma_r 0.4) of RGB."""
    return cv2.edgePreservingFilter(np.ascontiguousarray(photo[..., ::-1]))[..., ::-1]


def _tensor(photo: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_at_opencvs_scales_it_is_opencvs_edge_preserving_filter(name: str) -> None:
    photo = getattr(data, name)()[:96, :128]
    model = create_img2img_model(3, 3, "domain_transform", sigma_s=60.0, sigma_r=0.4)
    with torch.no_grad():
        output = model(_tensor(photo))[0].permute(1, 2, 0).numpy()
    got = np.clip(np.round(output * 255), 0, 255)
    expected = edge_preserving(photo).astype(np.float64)
    assert np.abs(got - expected).max() <= 1
    assert (got == expected).mean() >= 0.999


def test_the_sweep_is_the_recursion_it_names() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((2, 3, 4, 9))
    coefficients = rng.random((2, 1, 4, 9))
    expected = values.copy()
    for j in range(1, 9):
        expected[..., j] += coefficients[..., j] * (expected[..., j - 1] - expected[..., j])
    for j in range(7, -1, -1):
        expected[..., j] += coefficients[..., j + 1] * (expected[..., j + 1] - expected[..., j])
    got = recursive_sweep(torch.from_numpy(values), torch.from_numpy(coefficients))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sigma_s": 0.0}, "sigma_s must be a positive finite number"),
        ({"sigma_r": float("nan")}, "sigma_r must be a positive finite number"),
        ({"sigma_r": "0.4"}, "sigma_r must be a positive finite number"),
        ({"sigma_s": 1e300, "sigma_r": 1e-300}, "sigma_s / sigma_r must be finite"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": 9}, "iterations"),
        ({"guide": 0}, "guide"),
        ({"activation": "no-such"}, "activation must be one of"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_img2img_model(3, 3, "domain_transform", **options)


def test_the_scale_grid_scores_opencvs_scales_best_near_them() -> None:
    photos = np.stack([data.astronaut()[:64, :64], data.chelsea()[:64, :64]])
    inputs = torch.cat([_tensor(photo) for photo in photos])
    targets = torch.cat([_tensor(edge_preserving(photo)) for photo in photos])
    near = head_error(inputs, targets, 80.0, 0.4)
    assert near < 2e-3
    far = [head_error(inputs, targets, s, r) for s in SIGMA_S_GRID[:2] for r in SIGMA_R_GRID[-2:]]
    assert min(far) > 5 * near


def test_auto_gives_a_wide_shift_invariant_teacher_a_domain_transform() -> None:
    teacher = CallableFilter(edge_preserving)
    train_set, _ = load_filtered_dataset(filter=teacher, limit=8)
    choice = choose_arch(teacher, train_set)
    assert choice.probe["shift_invariant"]["holds"] is True
    assert choice.probe["support_radius"] is None or choice.probe["support_radius"] >= 16
    assert choice.arch == "domain_transform" and choice.method == "gradient"
    # refined from the grid to within a quarter octave of OpenCV's 60 and 0.4
    assert abs(math.log2(choice.options["sigma_s"] / 60.0)) <= 0.25
    assert abs(math.log2(choice.options["sigma_r"] / 0.4)) <= 0.25
    assert choice.options["transform"] == "recursive" and choice.options["clip"] is True
    assert "shift-invariant -> domain_transform(transform=recursive, sigma_s=" in choice.probe_line


def test_edge_preserving_smoothing_is_learnt_end_to_end(tmp_path: Path) -> None:
    result = train_run(
        tmp_path / "run",
        DataConfig(data="samples", filter=edge_preserving, limit=12, crop_size=48),
        # auto's choice (above) without its L-BFGS polish, which would take most of the time
        ModelConfig(arch="domain_transform", options={"sigma_s": 80.0, "sigma_r": 0.4}),
        {"device": "cpu", "progress": False, "max_epochs": 2, "learning_rate": 1e-3, "loss": "mse"},
        figures=False,
        log=lambda _: None,
    )
    assert result.model.config["arch"] == "domain_transform"
    assert result.metrics["certificate"]["psnr"] > 40.0
    photo = data.coffee()[:70, :90]
    whole = apply_filter(photo, result.model)
    tiled = apply_filter(photo, result.model, tile=16)  # never tiled: rows and columns recurse
    np.testing.assert_array_equal(whole, tiled)
    assert np.abs(np.round(whole * 255) - edge_preserving(photo)).mean() < 1.0
    reloaded = load_model(result.folder)
    np.testing.assert_array_equal(apply_filter(photo, reloaded), whole)
    scripted = torch.jit.load(str(export_torchscript(result.model, tmp_path / "model.pt")))
    for side in ((40, 57), (71, 64)):  # the sweeps are a loop: every size runs
        x = torch.rand(1, 3, *side)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), result.model(x), rtol=0, atol=1e-5)
    assert isinstance(result.model, DomainTransformNet)


def test_the_head_runs_band_by_band_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_img2img_model(3, 3, "domain_transform")
    with torch.no_grad():
        model.mlp[-1].weight.normal_()
    x = torch.rand(2, 3, 37, 29)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr("img2img_filters.models.domain_transform.HEAD_CHUNK_PIXELS", 100)
        banded = model(x)
    torch.testing.assert_close(banded, whole, rtol=0, atol=1e-6)


def test_a_photo_too_large_to_filter_at_once_is_refused_before_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("img2img_filters.infer.predict.available_memory", lambda _: 2**20)
    photo = np.zeros((300, 400, 3), np.uint8)
    model = create_img2img_model(3, 3, "domain_transform")
    with pytest.raises(ValueError, match=r"image of 120,000 pixels: .*reads whole rows and col"):
        apply_filter(photo, model)
    tiled = create_img2img_model(3, 3, "neighbourhood", histogram=True)  # tiles: not refused
    assert apply_filter(photo, tiled, tile=64).shape == (300, 400, 3)

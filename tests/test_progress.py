"""Progress bars appear only on a terminal: with stderr captured (a file, a pipe), nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from img2img_filters.data.filtered import FilteredDataset
from img2img_filters.imageio import write_image
from img2img_filters.infer import apply_filter, apply_folder
from img2img_filters.models import create_img2img_model
from img2img_filters.solve import fit_linear
from img2img_filters.train import train_model


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)


def _no_bar(capsys: pytest.CaptureFixture) -> None:
    assert not sys.stderr.isatty()
    assert capsys.readouterr().err == ""


def test_no_bars_when_stderr_is_not_a_terminal(
    images: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dataset = FilteredDataset(images, "study-sobel")
    fit_linear(dataset, 5, progress=True)
    _no_bar(capsys)
    model = create_img2img_model(3, 1, "study")
    photo = np.ascontiguousarray(images[0].transpose(1, 2, 0))
    apply_filter(photo, model, tile=16, device="cpu", fast=False, progress=True)
    _no_bar(capsys)
    write_image(tmp_path / "in" / "a.png", photo)
    apply_folder(model, tmp_path / "in", tmp_path / "out", device="cpu", progress=True)
    _no_bar(capsys)
    train = FilteredDataset(images, "study-sobel", indices=np.arange(4))
    val = FilteredDataset(images, "study-sobel", indices=np.arange(4, 6))
    train_model(model, train, val, max_epochs=1, batch_size=2, device="cpu", progress=True)
    _no_bar(capsys)

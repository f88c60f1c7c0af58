"""The polish of a trained model returns a RefineReport value."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from img2img_filters.data import FilteredDataset
from img2img_filters.models import create_img2img_model
from img2img_filters.solve.refine import RefineReport, gauss_newton, lbfgs_refine


@pytest.mark.parametrize("finish", [lbfgs_refine, gauss_newton])
def test_the_polish_returns_its_report(train_photos: np.ndarray, finish) -> None:
    dataset = FilteredDataset(np.ascontiguousarray(train_photos[:4, :, :16, :16]), "study-sobel")
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    report = finish(model, dataset, steps=2, images=4)
    assert isinstance(report, RefineReport)
    assert report.method == ("l-bfgs" if finish is lbfgs_refine else "gauss-newton")
    assert report.images == 4 and report.loss_after <= report.loss_before
    assert report.as_dict() == dataclasses.asdict(report) == model.refine_report
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.stopped = "time"

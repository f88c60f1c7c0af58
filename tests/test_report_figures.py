"""The figures a report shows: crops from different photos, the error scale, one photo at full size."""

from __future__ import annotations

import numpy as np

from img2img_filters.data.filtered import FilteredDataset
from img2img_filters.models import create_img2img_model
from img2img_filters.viz import preview_validation_photo
from img2img_filters.viz.images import error_scale_top, spread_positions
from img2img_filters.viz.style import DPI


def _dataset() -> FilteredDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(9, 3, 16, 16), dtype=np.uint8)
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    return FilteredDataset(images, "study-sobel", indices=np.arange(1, 9), groups=groups)


def test_spread_positions_take_one_crop_of_each_photo_in_turn():
    dataset = _dataset()  # positions 0-1 photo 0, 2-3 photo 1, 4-7 photo 2
    assert spread_positions(dataset, 3) == [0, 2, 4]
    assert spread_positions(dataset, 5) == [0, 2, 4, 1, 3]
    plain = FilteredDataset(dataset.images, "study-sobel")  # no photos recorded
    assert spread_positions(plain, 3) == [0, 1, 2]


def test_error_scale_ends_at_a_high_percentile():
    errors = np.full((100, 100), 0.01)
    errors[0, :] = 5.0  # a bright border row: 1 % of the values
    assert error_scale_top(errors) == np.percentile(errors, 99.0) < 5.0
    assert error_scale_top(np.zeros((4, 4))) == 1.0


def test_validation_photo_is_shown_pixel_for_pixel():
    fig = preview_validation_photo(create_img2img_model(3, 1, "linear"), _dataset(), device="cpu")
    assert fig.axes == []
    width, height = fig.get_size_inches() * DPI
    assert round(height) == 16 and round(width) == 4 * 16 + 3 * 4

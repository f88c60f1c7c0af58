"""Figures: written, readable back, the expected axes and titles, no overlapping text."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from img2img_filters import viz
from img2img_filters.data.filtered import FilteredDataset
from img2img_filters.models import create_img2img_model
from img2img_filters.viz import kernels as viz_kernels


# -- helpers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(large_photo) -> np.ndarray:
    """Six real 64x64 crops, uint8 ``(6, 3, 64, 64)``."""
    crops = [large_photo[r : r + 64, c : c + 64] for r in (0, 100) for c in (0, 100, 200)]
    return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2))


def _read_png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def _image_axes(fig: Figure) -> list:
    """Axes that are not colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _overlapping_text(fig: Figure) -> list[str]:
    """Titles and axis labels that overlap another axes or text, or leave the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [
        (ax, text)
        for ax in fig.axes
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label)
        if text.get_text()
    ]
    if fig._suptitle is not None:
        texts.append((None, fig._suptitle))
    problems = []
    width, height = fig.bbox.width, fig.bbox.height
    for owner, text in texts:
        box = text.get_window_extent(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            problems.append(f"{text.get_text()!r} leaves the figure")
        for ax in fig.axes:
            if ax is not owner and box.overlaps(ax.get_window_extent(renderer)):
                problems.append(f"{text.get_text()!r} overlaps axes {ax.get_title()!r}")
        for _, other in texts:
            if other is not text and box.overlaps(other.get_window_extent(renderer)):
                problems.append(f"{text.get_text()!r} overlaps {other.get_text()!r}")
    return problems


# -- save_figure and global state --------------------------------------------------------------
def test_save_figure_is_atomic_and_creates_folders(tmp_path):
    fig = viz.plot_losses([1.0, 0.5], [1.1, 0.6])
    target = tmp_path / "run" / "figures" / "loss.png"
    assert viz.save_figure(fig, target) == target
    first = target.read_bytes()
    viz.save_figure(fig, str(target))  # overwrite in place; the figure stays usable
    assert target.read_bytes()[:8] == first[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in target.parent.iterdir()] == ["loss.png"]  # no temporary left
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure"):
        viz.save_figure("not a figure", target)


def test_no_global_state_changes_and_no_pyplot_figures(tmp_path, photos):
    import matplotlib.pyplot as plt

    before = {key: str(value) for key, value in matplotlib.rcParams.items()}
    viz.plot_losses([1.0, 0.5], None, tmp_path / "a.png")
    viz.preview_filtered_dataset(FilteredDataset(photos, "study-sobel"), 2, tmp_path / "b.png")
    after = {key: str(value) for key, value in matplotlib.rcParams.items()}
    assert [key for key in before if before[key] != after[key]] == []
    assert plt.get_fignums() == []


# -- plot_losses -------------------------------------------------------------------------------
def test_plot_losses_writes_a_readable_png(tmp_path):
    path = tmp_path / "loss.png"
    fig = viz.plot_losses([0.3, 0.2, 0.15, 0.12], [0.35, 0.25, 0.2, 0.21], path, title="Sobel")
    _read_png(path)
    (ax,) = fig.axes
    assert ax.get_title() == "Sobel"
    assert ax.get_xlabel() == "Epoch"
    assert "L1" in ax.get_ylabel()
    assert ax.get_yscale() == "linear"
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3, 4])
    assert any("epoch 3" in text.get_text() for text in ax.get_legend().get_texts())
    assert _overlapping_text(fig) == []


def test_plot_losses_switches_to_log_scale_over_two_decades():
    assert viz.plot_losses([1.0, 0.1, 0.0099], None).axes[0].get_yscale() == "log"
    assert viz.plot_losses([1.0, 0.5], [0.02]).axes[0].get_yscale() == "linear"
    assert viz.plot_losses([1.0, 0.5], [0.009]).axes[0].get_yscale() == "log"
    fig = viz.plot_losses([1.0, float("nan")], [])  # a diverged run still plots
    assert fig.axes[0].get_title() == "Training and validation loss"


def test_plot_losses_labels_the_loss_it_shows():
    default = viz.plot_losses([1.0, 0.5], [1.1, 0.6]).axes[0]  # the study's L1
    assert default.get_ylabel() == "L1 loss (mean absolute error)"
    assert default.get_title() == "Training and validation loss"
    mse = viz.plot_losses([1.0, 0.5], [1.1, 0.6], loss="mse").axes[0]
    assert mse.get_ylabel() == "MSE loss (mean squared error)"
    assert mse.get_title() == "Training and validation MSE loss"
    unknown = viz.plot_losses([1.0, 0.5], None, loss=None).axes[0]
    assert unknown.get_ylabel() == "Loss (its kind is not recorded)"
    assert viz.plot_losses([1.0, 0.5], None, False, 1, loss="mse").axes[0].get_xlim()[0] > 1
    with pytest.raises(ValueError, match=r"loss must be one of \['l1', 'mse'\].*got 'L2'"):
        viz.plot_losses([1.0], None, loss="L2")


def test_plot_losses_bad_input():
    with pytest.raises(ValueError, match="train_losses must hold at least one loss"):
        viz.plot_losses([], [1.0])
    with pytest.raises(ValueError, match=r"val_losses must be a 1-D sequence.*\(2, 2\)"):
        viz.plot_losses([1.0], [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(TypeError, match="train_losses must be a sequence of numbers"):
        viz.plot_losses(["a"], None)


# -- previews ----------------------------------------------------------------------------------
def test_preview_predictions_signed_filter(tmp_path, photos):
    dataset = FilteredDataset(photos, "study-sobel")
    model = create_img2img_model(3, 1, "study").train()
    path = tmp_path / "preview.png"
    fig = viz.preview_predictions(model, dataset, 3, path, device="cpu")
    _read_png(path)
    assert model.training  # mode restored
    axes = _image_axes(fig)
    assert len(axes) == 3 * 4 and len(fig.axes) == 3 * 4 + 2  # two colour bars
    assert [ax.get_title() for ax in axes[:4]] == [
        "Input (RGB)",
        "Model output",
        "Target",
        "|Output − target|",
    ]
    assert "study-sobel" in fig._suptitle.get_text()
    output_image, target_image = axes[1].get_images()[0], axes[2].get_images()[0]
    low, high = output_image.get_clim()
    assert target_image.get_clim() == (low, high) and low == -high  # one symmetric scale
    assert output_image.get_cmap().name == target_image.get_cmap().name == viz.SIGNED_CMAP
    assert _overlapping_text(fig) == []


def test_preview_predictions_non_negative_and_rgb_filters(photos):
    gray = FilteredDataset(photos, "gaussian:ksize=3")
    fig = viz.preview_predictions(create_img2img_model(3, 1, "linear"), gray, 2, device="cpu")
    image = _image_axes(fig)[2].get_images()[0]
    assert image.get_cmap().name == viz.UNSIGNED_CMAP
    rgb = FilteredDataset(photos, "gaussian:ksize=3,channels=rgb")
    fig = viz.preview_predictions(create_img2img_model(3, 3, "linear"), rgb, 2, device="cpu")
    axes = _image_axes(fig)
    assert len(axes) == 2 * 4 and len(fig.axes) == 2 * 4 + 1  # only the error colour bar
    shown = axes[1].get_images()[0].get_array()
    assert shown.shape == (64, 64, 3) and shown.min() >= 0 and shown.max() <= 1
    assert _overlapping_text(fig) == []


def test_preview_predictions_bad_input(photos):
    dataset = FilteredDataset(photos, "study-sobel")
    model = create_img2img_model(3, 1, "linear")
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=f"num_images must be a positive integer; got {bad}"):
            viz.preview_predictions(model, dataset, bad, device="cpu")
    with pytest.raises(ValueError, match=r"output \(2, 3, 64, 64\) and targets \(2, 1, 64, 64\)"):
        viz.preview_predictions(create_img2img_model(3, 3, "linear"), dataset, 2, device="cpu")
    fig = viz.preview_predictions(model, dataset, 50, device="cpu")  # capped at the dataset
    assert len(_image_axes(fig)) == len(dataset) * 4


def test_preview_filtered_dataset(tmp_path, photos):
    dataset = FilteredDataset(photos, "study-sobel")
    path = tmp_path / "dataset.png"
    fig = viz.preview_filtered_dataset(dataset, 4, path)
    _read_png(path)
    axes = _image_axes(fig)
    assert len(axes) == 2 * 4 and len(fig.axes) == 2 * 4 + 1
    assert [ax.get_title() for ax in axes] == [f"Input {i}" for i in range(4)] + [
        f"Target {i}" for i in range(4)
    ]
    assert fig._suptitle.get_text() == "Filter: study-sobel"
    assert _overlapping_text(fig) == []
    with pytest.raises(ValueError, match="num_images must be a positive integer; got 0"):
        viz.preview_filtered_dataset(dataset, 0)


# -- kernels -----------------------------------------------------------------------------------
def test_align_kernels_pads_the_smaller_one_centred():
    small = np.arange(9, dtype=float).reshape(1, 1, 3, 3)
    large = np.ones((1, 1, 5, 7))
    a, b = viz.align_kernels(small, torch.from_numpy(large))
    assert a.shape == b.shape == (1, 1, 5, 7)
    np.testing.assert_array_equal(a[0, 0, 1:4, 2:5], small[0, 0])
    assert a.sum() == small.sum()
    np.testing.assert_array_equal(b, large)
    with pytest.raises(ValueError, match=r"same \(C, Cin\).*\(1, 1, 3, 3\).*\(1, 3, 5, 7\)"):
        viz.align_kernels(small, np.ones((1, 3, 5, 7)))


def test_plot_kernel_comparison(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.normal(size=(1, 3, 3, 3))
    path = tmp_path / "kernels.png"
    fig = viz.plot_kernel_comparison(true + 0.01 * rng.normal(size=true.shape), true, path)
    _read_png(path)
    axes = _image_axes(fig)
    assert len(axes) == 3 * 3 and len(fig.axes) == 3 * 3 + 2
    assert [ax.get_title() for ax in axes[:3]] == ["Learned, R", "Learned, G", "Learned, B"]
    assert axes[-1].get_title() == "Learned − true, B"
    assert all(len(ax.texts) == 9 for ax in axes)  # annotated cells
    assert _overlapping_text(fig) == []


def test_plot_kernel_comparison_large_multi_output_and_learned_only():
    rng = np.random.default_rng(0)
    big = rng.normal(size=(1, 1, 9, 9))
    fig = viz.plot_kernel_comparison(big, big)
    assert all(len(ax.texts) == 0 for ax in _image_axes(fig))  # too large to annotate
    multi = rng.normal(size=(2, 1, 3, 3))
    fig = viz.plot_kernel_comparison(multi, multi * 0.9, channel_names=("Y",))
    assert len(_image_axes(fig)) == 2 * 3
    assert _image_axes(fig)[1].get_title() == "Learned, Y → out 1"
    fig = viz.plot_kernel_comparison(
        rng.normal(size=(1, 3, 3, 3)), None, titles=("Fitted", "Exact", "Error")
    )
    assert len(fig.axes) == 3 + 1
    assert _image_axes(fig)[0].get_title() == "Fitted, R"


def test_plot_kernel_comparison_bad_input():
    kernel = np.zeros((1, 3, 3, 3))
    with pytest.raises(ValueError, match=r"true must have the learned kernel's shape"):
        viz.plot_kernel_comparison(kernel, np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match=r"learned must have shape \(C, Cin, kh, kw\)"):
        viz.plot_kernel_comparison(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="titles must hold 3 names"):
        viz.plot_kernel_comparison(kernel, titles=("a",))
    with pytest.raises(ValueError, match="channel_names must hold 3 names"):
        viz.plot_kernel_comparison(kernel, channel_names=("Y",))


def test_plot_kernels_uses_fold_linear(tmp_path, monkeypatch):
    learned = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    learned[0, 1, 1, 1] = 1.0
    monkeypatch.setattr(
        viz_kernels,
        "fold_linear",
        lambda model: (learned, torch.tensor([0.25], dtype=torch.float64)),
    )
    path = tmp_path / "kernels.png"
    fig = viz.plot_kernels(torch.nn.Identity(), "study-sobel", path)
    _read_png(path)
    axes = _image_axes(fig)
    assert len(axes) == 9
    assert "study-sobel" in fig._suptitle.get_text() and "0.25" in fig._suptitle.get_text()
    shown = axes[1].get_images()[0].get_array()
    assert shown.shape == (5, 5) and shown[2, 2] == 1.0  # 3x3 padded to the true 5x5, centred
    fig = viz.plot_kernels(torch.nn.Identity(), "median:ksize=3")  # non-linear: learned only
    assert len(_image_axes(fig)) == 3


def test_plot_kernels_with_a_real_linear_model():

    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    fig = viz.plot_kernels(model, "study-sobel")
    assert len(_image_axes(fig)) == 9
    assert _image_axes(fig)[0].get_images()[0].get_array().shape == (5, 5)


# -- the study's calls, as its notebook writes them ---------------------------------------------
def test_the_studys_calls_run_unchanged(tmp_path, photos, monkeypatch):
    from img2img_filters import (
        compute_metrics,
        plot_losses,
        preview_filtered_dataset,
        preview_predictions,
    )

    monkeypatch.chdir(tmp_path)
    train_dataset = FilteredDataset(photos, "study-sobel", indices=np.arange(5))
    val_dataset = FilteredDataset(photos, "study-sobel", indices=np.arange(5))
    model = create_img2img_model(3, 1)
    train_losses = [0.9, 0.5, 0.3, 0.2, 0.15, 0.12, 0.11, 0.1]
    val_losses = [1.0, 0.6, 0.35, 0.25, 0.2, 0.16, 0.14, 0.13]

    fig = plot_losses(train_losses, val_losses, save=True, trunc=5)
    _read_png(tmp_path / "training_loss.png")
    training, validation = fig.axes[0].lines[:2]
    np.testing.assert_array_equal(training.get_xdata(), [6, 7, 8])  # the first 5 epochs dropped
    np.testing.assert_array_equal(training.get_ydata(), train_losses[5:])
    np.testing.assert_array_equal(validation.get_ydata(), val_losses[5:])

    preview_predictions(
        model, val_dataset, num_images=5, save_plot=True, plot_save_path="prediction_plot.png"
    )
    _read_png(tmp_path / "prediction_plot.png")
    fig = preview_filtered_dataset(train_dataset, num_images=5, save_plot=False)
    assert len(_image_axes(fig)) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "prediction_plot.png",
        "training_loss.png",
    ]
    preview_filtered_dataset(train_dataset, 5, True)  # the study's positional order
    _read_png(tmp_path / "preview_plot.png")
    metrics = compute_metrics(model, val_dataset)
    assert {"psnr", "ssim", "l1"} <= set(metrics)


def test_path_wins_over_the_studys_save_flag(tmp_path, photos, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="img2img_filters.viz"):
        viz.plot_losses([1.0, 0.5], [1.1, 0.6], True, 0, path=tmp_path / "mine.png")
    assert (tmp_path / "mine.png").is_file() and not (tmp_path / "training_loss.png").exists()
    assert "save=True and path= given; the figure is saved to" in caplog.text
    dataset = FilteredDataset(photos, "study-sobel")
    caplog.clear()
    with caplog.at_level("WARNING", logger="img2img_filters.viz"):
        viz.preview_filtered_dataset(dataset, 2, save_plot=True, path=tmp_path / "data.png")
    assert (tmp_path / "data.png").is_file() and not (tmp_path / "preview_plot.png").exists()
    assert "save_plot=True and path= given" in caplog.text
    viz.preview_predictions(create_img2img_model(3, 1), dataset, 2, plot_save_path="x.png")
    assert not (tmp_path / "x.png").exists()  # the study saves only with save_plot=True


def test_the_studys_options_bad_input(photos):
    with pytest.raises(TypeError, match=r"save must be True, False or a path; got 1\.5"):
        viz.plot_losses([1.0], None, 1.5)
    with pytest.raises(TypeError, match=r"trunc must be an integer; got 0\.5"):
        viz.plot_losses([1.0, 0.5], None, trunc=0.5)
    with pytest.raises(
        ValueError, match=r"trunc must be from 0 to 1 \(the epochs less one\); got 2"
    ):
        viz.plot_losses([1.0, 0.5], None, trunc=2)
    with pytest.raises(TypeError, match="path given twice"):
        viz.preview_filtered_dataset(FilteredDataset(photos, "gray"), 2, "a.png", path="b.png")

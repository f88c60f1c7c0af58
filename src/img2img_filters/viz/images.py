"""Images: a dataset's inputs and targets, a model's predictions and errors, a filter on a photo."""

from __future__ import annotations

import os
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from img2img_filters.data import FilteredDataset
from img2img_filters.devices import DeviceLike, resolve_device
from img2img_filters.imageio import read_image
from img2img_filters.viz.panels import (
    ERROR_PERCENTILE,
    _bare,
    _dataset_count,
    _filter_spec,
    _first_items,
    _rgb,
    _run_model,
    _Scale,
    error_scale_top,
    spread_positions,
)
from img2img_filters.viz.style import (
    DPI,
    ERROR_CMAP,
    compact_ticks,
    figure_path,
    finish,
    new_figure,
    styled,
    title_width,
    wrap_title,
)

__all__ = [
    "ERROR_PERCENTILE",
    "error_scale_top",
    "preview_filter",
    "preview_filtered_dataset",
    "preview_predictions",
    "preview_validation_photo",
    "spread_positions",
]


# Over 80 lines for its docstring and the study's figure layout, drawn in one pass.
def preview_predictions(
    model: nn.Module,
    dataset: Any,
    num_images: int = 4,
    save_plot: bool | str | os.PathLike[str] = False,
    plot_save_path: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    device: DeviceLike = "auto",
) -> Figure:
    """A grid of dataset items: input | model output | target | absolute error.

    The items come from as many different photos as the dataset holds (see
    :func:`spread_positions`; the first items for a dataset that does not
    record its photos).

    Output and target share one colour scale (limits from both): a symmetric
    diverging map for signed filters (such as Sobel; decided by the dataset
    filter's output range, else by the sign of the values), grayscale for
    non-negative ones, with one colour bar under the two columns. Errors
    ``|output - target|`` (averaged over channels when ``C > 1``) share one
    scale from 0 to a high percentile of the errors shown (:func:`error_scale_top`),
    with their own colour bar; larger errors take its top colour. Three-channel outputs are shown as
    RGB images, clipped to the shared scale. The model runs in eval mode under
    ``torch.no_grad()`` and is left in its previous mode and on its device.

    The study's call ``preview_predictions(model, val, num_images=5, save_plot=True,
    plot_save_path="prediction_plot.png")`` works as written.

    Args:
        model: Maps ``(B, 3, H, W)`` to ``(B, C, H, W)``.
        dataset: A dataset with ``batch(positions, device)`` or ``(input,
            target)`` items (``input`` ``(3, H, W)`` RGB in [0, 1]).
        num_images: Rows to show (at most the dataset's length).
        save_plot: The study's flag: ``True`` saves to ``plot_save_path``. A
            path here is taken as ``path``.
        plot_save_path: The study's file for ``save_plot=True`` (default
            ``prediction_plot.png`` in the working directory).
        path: Where to save the figure as PNG (``None``: do not save); wins
            over ``save_plot``, with a logged notice.
        device: Where to run the model (``"auto"``: CUDA when available).

    Returns:
        The figure: ``4 * rows`` image axes plus the colour bars (two for
        single-channel outputs, one for RGB).

    Raises:
        TypeError: If ``save_plot`` is neither a bool nor a path.
        ValueError: If ``num_images < 1``, the dataset is empty, or the model
            output's shape differs from the targets'.
    """
    study_file = "prediction_plot.png" if plot_save_path is None else plot_save_path
    path = figure_path(save_plot, "save_plot", path, study_file)
    count = _dataset_count(dataset, num_images)
    target_device = resolve_device(device)
    inputs, targets = _first_items(dataset, count, target_device, spread_positions(dataset, count))
    outputs = _run_model(model, inputs, target_device)
    if outputs.shape != targets.shape:
        raise ValueError(
            "model output and targets must have the same shape; got output "
            f"{tuple(outputs.shape)} and targets {tuple(targets.shape)}"
        )
    inputs_np = inputs.detach().double().cpu().numpy()
    outputs_np = outputs.detach().double().cpu().numpy()
    targets_np = targets.detach().double().cpu().numpy()
    errors = np.abs(outputs_np - targets_np).mean(axis=1)
    scale = _Scale([outputs_np, targets_np], dataset)
    error_max = error_scale_top(errors)
    clipped = bool(np.isfinite(errors).any() and np.nanmax(errors) > error_max)
    arch = (
        getattr(model, "config", {}).get("arch")
        if isinstance(getattr(model, "config", None), dict)
        else None
    )
    spec = _filter_spec(dataset)
    with styled("white"):
        fig = new_figure(4 * 2.3, count * 2.3 + 1.3, "compressed")
        axes = fig.subplots(count, 4, squeeze=False)
        value_image = error_image = None
        column_titles = ("Input (RGB)", "Model output", "Target", "|Output − target|")
        for row in range(count):
            ax_in, ax_out, ax_target, ax_error = axes[row]
            ax_in.imshow(_rgb(inputs_np[row]))
            value_image = scale.show(ax_out, outputs_np[row])
            scale.show(ax_target, targets_np[row])
            error_image = ax_error.imshow(errors[row], cmap=ERROR_CMAP, vmin=0.0, vmax=error_max)
            for ax in axes[row]:
                _bare(ax)
            ax_in.set_ylabel(f"item {row}")
            ax_error.set_xlabel(f"mean {errors[row].mean():.3g}")
            if row == 0:
                for ax, text in zip(axes[row], column_titles, strict=True):
                    ax.set_title(text)
        if not scale.rgb:
            fig.colorbar(
                value_image,
                ax=list(axes[:, 1:3].ravel()),
                location="bottom",
                shrink=0.8,
                aspect=30,
                label=f"Output and target: {scale.label}",
            )
        error_label = "absolute error" + (",\nmean over channels" if scale.channels > 1 else "")
        error_bar = fig.colorbar(
            error_image,
            ax=list(axes[:, 3]),
            location="bottom",
            shrink=0.9,
            aspect=15,
            label=error_label,
            extend="max" if clipped else "neither",
        )
        compact_ticks(error_bar, error_max, error_label)
        heading = "Predictions"
        if arch:
            heading += f" of '{arch}'"
        if spec:
            heading += f" on '{spec}'"
        fig.suptitle(wrap_title(heading, title_width(fig)))
        return finish(fig, path)


def preview_filtered_dataset(
    dataset: Any,
    num_images: int = 5,
    save_plot: bool | str | os.PathLike[str] = False,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """The first items of a dataset: each input above its target, titled with the filter spec.

    Targets share one colour scale (see :func:`preview_predictions`) with a
    colour bar under them; three-channel targets are shown as RGB.

    Args:
        dataset: A dataset with ``batch(positions, device)`` or ``(input,
            target)`` items (``input`` ``(3, H, W)`` RGB in [0, 1]).
        num_images: Columns to show (at most the dataset's length).
        save_plot: The study's flag: ``True`` saves to ``preview_plot.png`` in
            the working directory. A path here is taken as ``path``.
        path: Where to save the figure as PNG (``None``: do not save); wins
            over ``save_plot``, with a logged notice.

    Returns:
        The figure: ``2 * columns`` image axes, plus one colour bar for
        single-channel targets.

    Raises:
        TypeError: If ``save_plot`` is neither a bool nor a path.
        ValueError: If ``num_images < 1`` or the dataset is empty.
    """
    path = figure_path(save_plot, "save_plot", path, "preview_plot.png")
    count = _dataset_count(dataset, num_images)
    inputs, targets = _first_items(dataset, count, torch.device("cpu"))
    inputs_np = inputs.double().numpy()
    targets_np = targets.double().numpy()
    scale = _Scale([targets_np], dataset)
    spec = _filter_spec(dataset)
    with styled("white"):
        fig = new_figure(max(4.0, count * 2.2), 2 * 2.2 + 1.4, "compressed")
        axes = fig.subplots(2, count, squeeze=False)
        image = None
        for column in range(count):
            axes[0, column].imshow(_rgb(inputs_np[column]))
            image = scale.show(axes[1, column], targets_np[column])
            axes[0, column].set_title(f"Input {column}")
            axes[1, column].set_title(f"Target {column}")
            _bare(axes[0, column])
            _bare(axes[1, column])
        if not scale.rgb:
            fig.colorbar(
                image,
                ax=list(axes[1]),
                location="bottom",
                shrink=0.8,
                aspect=30,
                label=f"Target: {scale.label}",
            )
        heading = f"Filter: {spec}" if spec else "Inputs and targets"
        fig.suptitle(wrap_title(heading, title_width(fig)))
        return finish(fig, path)


def preview_filter(filter: Any, image: Any, path: str | os.PathLike[str] | None = None) -> Figure:
    """What a filter does to one photo, at full size: the photo above its filtered version.

    Args:
        filter: A filter spec or :class:`~img2img_filters.filters.Filter`.
        image: A path to an image, or a uint8 array ``(H, W, 3)`` RGB.
        path: Where to save the figure as PNG (``None``: do not save).

    Returns:
        The figure (see :func:`preview_filtered_dataset`).
    """
    if isinstance(image, (str, os.PathLike)):
        array = read_image(image)
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(
                "image must be a path or a uint8 array of shape (H, W, 3); got "
                f"{array.dtype} {array.shape}"
            )
    dataset = FilteredDataset(np.ascontiguousarray(array.transpose(2, 0, 1)[None]), filter)
    return preview_filtered_dataset(dataset, 1, path)


def preview_validation_photo(
    model: nn.Module,
    dataset: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    device: DeviceLike = "auto",
) -> Figure:
    """One dataset item at full resolution: input | model output | target | absolute error.

    Every pixel of the item is one pixel of the figure (saved at
    :data:`~img2img_filters.viz.DPI`), with no axes, titles or resampling: the
    picture a report shows at full size. Output and target share one colour
    scale as in :func:`preview_predictions`; the error uses its colour map from
    0 to :func:`error_scale_top`. The item is the first of
    :func:`spread_positions`.

    Args:
        model: Maps ``(B, 3, H, W)`` to ``(B, C, H, W)``.
        dataset: A dataset with ``batch(positions, device)`` or ``(input,
            target)`` items.
        path: Where to save the figure as PNG (``None``: do not save).
        device: Where to run the model (``"auto"``: CUDA when available).

    Returns:
        The figure: ``H`` pixels high, ``4 W`` plus three gaps wide, no axes.

    Raises:
        ValueError: If the dataset is empty or the model output's shape differs
            from the targets'.
    """
    _dataset_count(dataset, 1)
    target_device = resolve_device(device)
    inputs, targets = _first_items(dataset, 1, target_device, spread_positions(dataset, 1))
    outputs = _run_model(model, inputs, target_device)
    if outputs.shape != targets.shape:
        raise ValueError(
            "model output and targets must have the same shape; got output "
            f"{tuple(outputs.shape)} and targets {tuple(targets.shape)}"
        )
    photo = inputs.detach().double().cpu().numpy()[0]
    output = outputs.detach().double().cpu().numpy()
    target = targets.detach().double().cpu().numpy()
    scale = _Scale([output, target], dataset)
    error = np.abs(output[0] - target[0]).mean(axis=0)

    def coloured(item: np.ndarray) -> np.ndarray:
        shown = scale.image(item)
        if scale.rgb:
            return shown
        normed = (shown - scale.vmin) / (scale.vmax - scale.vmin)
        return matplotlib.colormaps[scale.cmap](np.clip(np.nan_to_num(normed), 0, 1))[..., :3]

    error_rgb = matplotlib.colormaps[ERROR_CMAP](
        np.clip(np.nan_to_num(error / error_scale_top(error)), 0, 1)
    )[..., :3]
    panels = [_rgb(photo), coloured(output[0]), coloured(target[0]), error_rgb]
    height = error.shape[0]
    gap = np.ones((height, PHOTO_GAP, 3))
    strip = np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1)
    fig = new_figure(strip.shape[1] / DPI, height / DPI, "none")
    fig.figimage(strip, xo=0, yo=0, origin="upper")
    return finish(fig, path)


#: White pixels between the panels of :func:`preview_validation_photo`.
PHOTO_GAP = 4

"""Figures of a run: loss curves, predictions next to their targets, learned kernels.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas,
without pyplot, so no display is ever needed and no figure is left registered
in pyplot's global list. Seaborn's theme is applied inside
:func:`matplotlib.rc_context` while a figure is built and saved, so importing
or calling this module leaves the caller's matplotlib settings unchanged.
Figures are written with :func:`save_figure` (PNG at 120 dpi, atomically) when
a ``path`` is given, and returned in every case.

Images are tensors ``(B, C, H, W)`` as everywhere in img2img; they are shown
as ``(H, W)`` maps or ``(H, W, 3)`` RGB images.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from torch import nn

from img2img.devices import DeviceLike, resolve_device

__all__ = [
    "DPI",
    "align_kernels",
    "plot_kernel_comparison",
    "plot_kernels",
    "plot_losses",
    "preview_filter",
    "preview_filtered_dataset",
    "preview_predictions",
    "save_figure",
    "wrap_title",
]

#: Resolution of saved figures.
DPI = 120
#: Colour maps: signed filter responses, non-negative ones, errors.
SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "gray"
ERROR_CMAP = "magma"
#: Kernels up to this side get their values written in the cells.
MAX_ANNOTATED_KERNEL = 7


# -- infrastructure ----------------------------------------------------------------------------
@contextmanager
def _styled(style: str = "whitegrid") -> Iterator[None]:
    """Seaborn's theme for the duration of the block; matplotlib's settings restored after."""
    with matplotlib.rc_context():
        sns.set_theme(context="notebook", style=style, color_codes=False)
        yield


def _new_figure(width: float, height: float, layout: str = "constrained") -> Figure:
    """A figure with constrained layout on an Agg canvas (no pyplot, no display)."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = DPI) -> Path:
    """Write a figure atomically and close it.

    The figure is drawn into a temporary file next to ``path`` which then
    replaces ``path`` in one step (:func:`os.replace`), so a reader never sees
    a half-written image. The format follows the suffix (``.png`` when there is
    none); missing parent folders are created. "Closing" releases the figure
    from pyplot when pyplot manages it; the :class:`~matplotlib.figure.Figure`
    object itself stays usable (it can be saved again or displayed).

    Args:
        fig: The figure.
        path: Destination file.
        dpi: Resolution in dots per inch.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: If ``fig`` is not a matplotlib figure.
        ValueError: For an unsupported suffix (from matplotlib).
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure; got {type(fig).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix or ".png"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        fig.savefig(temporary, dpi=dpi, format=suffix[1:].lower())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    """Settle the layout, save when asked, return the figure."""
    # One layout pass before the first real draw: with fixed-aspect images the
    # layout needs it to converge (otherwise titles can touch the row above).
    fig.draw_without_rendering()
    if path is not None:
        save_figure(fig, path)
    return fig


def wrap_title(text: str, width: int) -> str:
    """Break a long title into lines of at most about ``width`` characters.

    Filter specs are broken after ``|`` between stages, then after ``,``
    between parameters, so a canonical spec stays readable inside the figure.

    Args:
        text: The title.
        width: The longest line wanted, in characters.

    Returns:
        The title with newlines inserted (unchanged when it is short enough).
    """
    lines = []
    for line in text.split("\n"):
        lines.extend(_wrap_line(line, max(8, width)))
    return "\n".join(lines)


def _wrap_line(line: str, width: int) -> list[str]:
    if len(line) <= width:
        return [line]
    pieces: list[str] = []
    for stage in _split_after(line, "|"):
        pieces.extend(_split_after(stage, ",") if len(stage) > width else [stage])
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return lines


def _split_after(text: str, separator: str) -> list[str]:
    """``"a|b|c"`` -> ``["a|", "b|", "c"]``."""
    parts = text.split(separator)
    return [part + separator for part in parts[:-1]] + [parts[-1]]


def _title_width(fig: Figure) -> int:
    """About how many characters of a figure title fit on one line."""
    return int(fig.get_figwidth() * 8)


def _compact_ticks(colorbar: Any, largest: float, label: str) -> None:
    """Few short tick labels on a narrow colour bar; a power of ten moves into its label.

    Matplotlib writes the common exponent of tiny values as a separate offset
    text at the end of the bar, where it collides with the bar's label; here
    ticks read ``0, 1, 2`` and the label ends with ``(×10⁻⁷)`` instead.

    Args:
        colorbar: The colour bar.
        largest: The top of its scale.
        label: Its label, without the power of ten.
    """
    exponent = 0
    if np.isfinite(largest) and largest > 0 and not 1e-2 <= largest < 1e4:
        exponent = int(np.floor(np.log10(largest)))
    factor = 10.0**exponent
    colorbar.locator = MaxNLocator(nbins=3)
    colorbar.formatter = FuncFormatter(lambda value, _: f"{value / factor:.3g}")
    colorbar.update_ticks()
    colorbar.set_label(f"{label} ($\\times 10^{{{exponent}}}$)" if exponent else label)


def _check_count(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{argument} must be a positive integer; got {value!r}")
    return int(value)


# -- loss curves -------------------------------------------------------------------------------
def _as_losses(values: Any, argument: str, *, allow_empty: bool) -> np.ndarray:
    if values is None:
        values = []
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{argument} must be a sequence of numbers; got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{argument} must be a sequence of numbers; got {values!r}") from None
    if array.ndim != 1:
        raise ValueError(
            f"{argument} must be a 1-D sequence (one loss per epoch); got shape {array.shape}"
        )
    if not allow_empty and array.size == 0:
        raise ValueError(f"{argument} must hold at least one loss; got an empty sequence")
    return array


def plot_losses(
    train_losses: Sequence[float],
    val_losses: Sequence[float] | None,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Training and validation L1 loss per epoch.

    Epochs are numbered from 1. The y axis is logarithmic when the positive
    finite losses span more than two decades (max / min > 100), linear
    otherwise. The best validation epoch is marked. Non-finite losses (a
    diverged run) are left out of the curves.

    Args:
        train_losses: Mean training L1 loss of each epoch, length ``E >= 1``.
        val_losses: Mean validation L1 loss of each epoch (may be ``None`` or
            empty when there was no validation).
        path: Where to save the figure as PNG (``None``: do not save).
        title: The figure title (default: "Training and validation loss").

    Returns:
        The figure (one axes).

    Raises:
        TypeError: If a loss sequence does not hold numbers.
        ValueError: If ``train_losses`` is empty or a sequence is not 1-D.
    """
    train = _as_losses(train_losses, "train_losses", allow_empty=False)
    val = _as_losses(val_losses, "val_losses", allow_empty=True)
    values = np.concatenate([train, val])
    positive = values[np.isfinite(values) & (values > 0)]
    log_scale = positive.size > 0 and positive.max() / positive.min() > 100.0
    with _styled("whitegrid"):
        fig = _new_figure(7.0, 4.2)
        ax = fig.add_subplot()
        epochs_shown = max(len(train), len(val))
        size = 3 if epochs_shown > 1 else 8  # one epoch (an exact fit): a single point
        ax.plot(np.arange(1, len(train) + 1), train, marker="o", markersize=size, label="training")
        if val.size:
            epochs = np.arange(1, len(val) + 1)
            ax.plot(epochs, val, marker="o", markersize=size, label="validation")
            if np.isfinite(val).any():
                best = int(np.nanargmin(np.where(np.isfinite(val), val, np.nan)))
                ax.scatter(
                    [epochs[best]],
                    [val[best]],
                    s=80,
                    facecolors="none",
                    edgecolors="black",
                    zorder=3,
                    label=f"best validation: {val[best]:.4g} (epoch {epochs[best]})",
                )
        if log_scale:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs_shown == 1:
            ax.set_xlim(0.5, 1.5)
            ax.set_xticks([1])
        ax.set_xlabel("Epoch")
        ax.set_ylabel("L1 loss (mean absolute error)")
        ax.set_title(title or "Training and validation loss")
        ax.legend(loc="best")
        return _finish(fig, path)


# -- images ------------------------------------------------------------------------------------
def _first_items(
    dataset: Any, count: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(n, 3, H, W)`` and targets ``(n, C, H, W)`` of the first ``count`` items."""
    if callable(getattr(dataset, "batch", None)):
        inputs, targets = dataset.batch(list(range(count)), device)
    else:
        pairs = [dataset[i] for i in range(count)]
        inputs = torch.stack([pair[0] for pair in pairs])
        targets = torch.stack([pair[1] for pair in pairs])
    return inputs.to(device), targets.to(device)


def _dataset_count(dataset: Any, num_images: Any) -> int:
    num_images = _check_count(num_images, "num_images")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: there are no images to show")
    return min(num_images, len(dataset))


def _filter_spec(dataset: Any) -> str | None:
    spec = getattr(getattr(dataset, "filter", None), "spec", None)
    return spec if isinstance(spec, str) else None


class _Scale:
    """One colour scale shared by the model output and the target.

    Single-channel maps use a symmetric diverging colour map for signed
    filters and grayscale for non-negative ones, with limits from both
    arrays. Three-channel images are shown as RGB: values are mapped from
    ``[vmin, vmax]`` to [0, 1] and clipped ([0, 1] is kept as is for
    non-negative filters whose values lie there).
    """

    def __init__(self, arrays: Sequence[np.ndarray], dataset: Any) -> None:
        finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 1.0
        output_range = getattr(getattr(dataset, "filter", None), "output_range", None)
        if output_range is not None:
            self.signed = float(output_range[0]) < 0
        else:
            self.signed = low < 0
        self.channels = arrays[0].shape[1]
        self.rgb = self.channels == 3
        if self.signed:
            limit = max(abs(low), abs(high)) or 1.0
            self.vmin, self.vmax = -limit, limit
            self.cmap = SIGNED_CMAP
        elif self.rgb and low >= 0 and high <= 1:
            self.vmin, self.vmax = 0.0, 1.0
            self.cmap = None
        else:
            self.vmin, self.vmax = (low, high) if high > low else (low - 0.5, low + 0.5)
            self.cmap = UNSIGNED_CMAP

    def image(self, item: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` -> ``(H, W, 3)`` in [0, 1] for RGB, else the first channel ``(H, W)``."""
        if self.rgb:
            scaled = (item - self.vmin) / (self.vmax - self.vmin)
            return np.clip(np.nan_to_num(scaled), 0.0, 1.0).transpose(1, 2, 0)
        return item[0]

    def show(self, ax: Any, item: np.ndarray) -> Any:
        if self.rgb:
            return ax.imshow(self.image(item))
        return ax.imshow(self.image(item), cmap=self.cmap, vmin=self.vmin, vmax=self.vmax)

    @property
    def label(self) -> str:
        if self.rgb:
            return ""
        kind = "signed" if self.signed else "non-negative"
        suffix = "" if self.channels == 1 else f", channel 0 of {self.channels}"
        return f"filter response ({kind}{suffix})"


def _rgb(item: np.ndarray) -> np.ndarray:
    """An input ``(3, H, W)`` in [0, 1] as ``(H, W, 3)``, clipped."""
    return np.clip(item.transpose(1, 2, 0), 0.0, 1.0)


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _run_model(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The model's outputs for ``inputs``, in eval mode, with its mode and device restored."""
    was_training = model.training
    first = next(iter(model.parameters()), None)
    old_device = None if first is None else first.device
    try:
        model.eval()
        if first is not None:
            model.to(device)
            inputs = inputs.to(first.dtype) if inputs.is_floating_point() else inputs
        with torch.no_grad():
            return model(inputs.to(device))
    finally:
        if old_device is not None:
            model.to(old_device)
        model.train(was_training)


def preview_predictions(
    model: nn.Module,
    dataset: Any,
    num_images: int = 4,
    path: str | os.PathLike[str] | None = None,
    *,
    device: DeviceLike = "auto",
) -> Figure:
    """A grid of the first dataset items: input | model output | target | absolute error.

    Output and target share one colour scale (limits from both): a symmetric
    diverging map for signed filters (such as Sobel; decided by the dataset
    filter's output range, else by the sign of the values), grayscale for
    non-negative ones, with one colour bar under the two columns. Errors
    ``|output - target|`` (averaged over channels when ``C > 1``) share one
    scale from 0 with their own colour bar. Three-channel outputs are shown as
    RGB images, clipped to the shared scale. The model runs in eval mode under
    ``torch.no_grad()`` and is left in its previous mode and on its device.

    Args:
        model: Maps ``(B, 3, H, W)`` to ``(B, C, H, W)``.
        dataset: A dataset with ``batch(positions, device)`` or ``(input,
            target)`` items (``input`` ``(3, H, W)`` RGB in [0, 1]).
        num_images: Rows to show (at most the dataset's length).
        path: Where to save the figure as PNG (``None``: do not save).
        device: Where to run the model (``"auto"``: CUDA when available).

    Returns:
        The figure: ``4 * rows`` image axes plus the colour bars (two for
        single-channel outputs, one for RGB).

    Raises:
        ValueError: If ``num_images < 1``, the dataset is empty, or the model
            output's shape differs from the targets'.
    """
    count = _dataset_count(dataset, num_images)
    target_device = resolve_device(device)
    inputs, targets = _first_items(dataset, count, target_device)
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
    error_max = float(np.nanmax(errors)) if np.isfinite(errors).any() else 0.0
    error_max = error_max if error_max > 0 else 1.0
    arch = (
        getattr(model, "config", {}).get("arch")
        if isinstance(getattr(model, "config", None), dict)
        else None
    )
    spec = _filter_spec(dataset)
    with _styled("white"):
        fig = _new_figure(4 * 2.3, count * 2.3 + 1.3, "compressed")
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
        )
        _compact_ticks(error_bar, error_max, error_label)
        heading = "Predictions"
        if arch:
            heading += f" of '{arch}'"
        if spec:
            heading += f" on '{spec}'"
        fig.suptitle(wrap_title(heading, _title_width(fig)))
        return _finish(fig, path)


def preview_filtered_dataset(
    dataset: Any, num_images: int = 5, path: str | os.PathLike[str] | None = None
) -> Figure:
    """The first items of a dataset: each input above its target, titled with the filter spec.

    Targets share one colour scale (see :func:`preview_predictions`) with a
    colour bar under them; three-channel targets are shown as RGB.

    Args:
        dataset: A dataset with ``batch(positions, device)`` or ``(input,
            target)`` items (``input`` ``(3, H, W)`` RGB in [0, 1]).
        num_images: Columns to show (at most the dataset's length).
        path: Where to save the figure as PNG (``None``: do not save).

    Returns:
        The figure: ``2 * columns`` image axes, plus one colour bar for
        single-channel targets.

    Raises:
        ValueError: If ``num_images < 1`` or the dataset is empty.
    """
    count = _dataset_count(dataset, num_images)
    inputs, targets = _first_items(dataset, count, torch.device("cpu"))
    inputs_np = inputs.double().numpy()
    targets_np = targets.double().numpy()
    scale = _Scale([targets_np], dataset)
    spec = _filter_spec(dataset)
    with _styled("white"):
        fig = _new_figure(max(4.0, count * 2.2), 2 * 2.2 + 1.4, "compressed")
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
        fig.suptitle(wrap_title(heading, _title_width(fig)))
        return _finish(fig, path)


def preview_filter(filter: Any, image: Any, path: str | os.PathLike[str] | None = None) -> Figure:
    """What a filter does to one photo, at full size: the photo above its filtered version.

    Args:
        filter: A filter spec or :class:`~img2img.filters.Filter`.
        image: A path to an image, or a uint8 array ``(H, W, 3)`` RGB.
        path: Where to save the figure as PNG (``None``: do not save).

    Returns:
        The figure (see :func:`preview_filtered_dataset`).
    """
    from img2img.data import FilteredDataset
    from img2img.imageio import read_image

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


# -- kernels -----------------------------------------------------------------------------------
def _as_kernel(kernel: Any, argument: str) -> np.ndarray:
    if isinstance(kernel, torch.Tensor):
        kernel = kernel.detach().cpu().double().numpy()
    if not isinstance(kernel, np.ndarray):
        raise TypeError(
            f"{argument} must be a numpy array or tensor (C, Cin, kh, kw); "
            f"got {type(kernel).__name__}"
        )
    if kernel.ndim != 4 or 0 in kernel.shape:
        raise ValueError(f"{argument} must have shape (C, Cin, kh, kw); got {kernel.shape}")
    return kernel.astype(np.float64, copy=False)


def align_kernels(learned: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad the smaller of two kernels, centred, so both have one spatial size.

    When the sizes differ by an odd number of pixels, the extra row or column
    of zeros goes at the end (bottom, right).

    Args:
        learned: ``(C, Cin, kh, kw)`` array or tensor.
        true: ``(C, Cin, kh2, kw2)`` array or tensor, same ``C`` and ``Cin``.

    Returns:
        Both as float64 arrays ``(C, Cin, max(kh, kh2), max(kw, kw2))``.

    Raises:
        ValueError: If the channel counts differ or an array is not 4-D.

    Example:
        >>> a, b = align_kernels(np.ones((1, 3, 3, 3)), np.ones((1, 3, 5, 5)))
        >>> a.shape, float(a[0, 0, 0, 0]), float(a[0, 0, 2, 2])
        ((1, 3, 5, 5), 0.0, 1.0)
    """
    learned = _as_kernel(learned, "learned")
    true = _as_kernel(true, "true")
    if learned.shape[:2] != true.shape[:2]:
        raise ValueError(
            "learned and true kernels must have the same (C, Cin); got learned "
            f"{learned.shape} and true {true.shape}"
        )
    height = max(learned.shape[2], true.shape[2])
    width = max(learned.shape[3], true.shape[3])

    def pad(kernel: np.ndarray) -> np.ndarray:
        dh, dw = height - kernel.shape[2], width - kernel.shape[3]
        return np.pad(kernel, ((0, 0), (0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)))

    return pad(learned), pad(true)


def _value_format(values: np.ndarray) -> str:
    """A short format for the cells of a heat map, from the largest magnitude shown."""
    largest = float(np.nanmax(np.abs(values))) if values.size else 0.0
    if largest == 0:
        return ".0f"
    if largest >= 100:
        return ".0f"
    if largest >= 10:
        return ".1f"
    if largest >= 1:
        return ".2f"
    if largest >= 0.01:
        return ".3f"
    return ".1e"


def _heatmap(
    ax: Any, kernel: np.ndarray, limit: float, annotate: bool, fmt: str, fontsize: float
) -> Any:
    """One kernel ``(kh, kw)`` as a heat map over offsets in pixels, values in the cells."""
    kh, kw = kernel.shape
    ry, rx = (kh - 1) / 2, (kw - 1) / 2
    image = ax.imshow(
        kernel,
        cmap=SIGNED_CMAP,
        vmin=-limit,
        vmax=limit,
        interpolation="nearest",
        extent=(-rx - 0.5, rx + 0.5, ry + 0.5, -ry - 0.5),
    )
    ax.grid(False)
    if kw <= MAX_ANNOTATED_KERNEL:
        ax.set_xticks(np.arange(kw) - rx)
        ax.set_yticks(np.arange(kh) - ry)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.tick_params(labelsize=8, length=0)
    if annotate:
        for y in range(kh):
            for x in range(kw):
                value = kernel[y, x]
                text = format(value, fmt)
                if float(text) == 0:  # no "-0.000"
                    text = format(0.0, fmt)
                dark = abs(value) / limit > 0.6
                ax.text(
                    x - rx,
                    y - ry,
                    text,
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if dark else "black",
                    in_layout=False,  # inside the cells; keeps the layout fast
                )
    return image


def plot_kernel_comparison(
    learned: np.ndarray,
    true: np.ndarray | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    titles: Sequence[str] = ("Learned", "True", "Learned − true"),
    channel_names: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Learned versus true kernels as annotated heat maps, one column per input channel.

    Rows: the learned kernel of each output channel, then the true ones, then
    the differences ``learned - true``. Learned and true share one symmetric
    diverging colour scale and one colour bar; the differences have their own.
    Values are written in the cells for kernels up to 7x7. Axes are offsets
    from the kernel centre in pixels.

    Args:
        learned: ``(C, Cin, kh, kw)`` float array (a tensor works too).
        true: ``(C, Cin, kh, kw)`` with the same shape, or ``None`` to show
            only the learned kernel (align sizes first with :func:`align_kernels`).
        path: Where to save the figure as PNG (``None``: do not save).
        titles: Names of the three row kinds: learned, true, difference.
        channel_names: One name per input channel (default ``R, G, B`` when
            ``Cin == 3``, else ``in 0, in 1, ...``).
        suptitle: The figure title (default: "Learned versus true kernel").

    Returns:
        The figure: ``Cin * C * (3 if true is given else 1)`` heat maps plus
        one colour bar (two with ``true``).

    Raises:
        TypeError: If a kernel is not an array.
        ValueError: For a kernel that is not 4-D, shapes that differ, or
            ``titles`` / ``channel_names`` of the wrong length.
    """
    learned = _as_kernel(learned, "learned")
    if true is not None:
        true = _as_kernel(true, "true")
        if true.shape != learned.shape:
            raise ValueError(
                "true must have the learned kernel's shape (align them with align_kernels); "
                f"got learned {learned.shape} and true {true.shape}"
            )
    titles = tuple(titles)
    if len(titles) != 3:
        raise ValueError(f"titles must hold 3 names (learned, true, difference); got {titles!r}")
    out_channels, in_channels, kh, kw = learned.shape
    if channel_names is None:
        channel_names = (
            ("R", "G", "B") if in_channels == 3 else [f"in {i}" for i in range(in_channels)]
        )
    channel_names = tuple(channel_names)
    if len(channel_names) != in_channels:
        raise ValueError(
            f"channel_names must hold {in_channels} names (one per input channel); "
            f"got {channel_names!r}"
        )
    annotate = max(kh, kw) <= MAX_ANNOTATED_KERNEL
    cell = 0.55 if annotate else 0.0
    panel = max(1.7, kw * cell) if annotate else min(3.5, max(1.8, kw * 0.12))
    fontsize = 8.0 if max(kh, kw) <= 5 else 7.0
    groups: list[tuple[str, np.ndarray]] = [(titles[0], learned)]
    if true is not None:
        groups += [(titles[1], true), (titles[2], learned - true)]
    rows = [(name, block[c], c) for name, block in groups for c in range(out_channels)]
    values = learned if true is None else np.concatenate([learned, true])
    limit = float(np.nanmax(np.abs(values))) or 1.0
    value_fmt = _value_format(values)
    with _styled("white"):
        fig = _new_figure(
            in_channels * (panel + 0.5) + 1.6, len(rows) * (panel + 0.55) + 0.8, "compressed"
        )
        axes = fig.subplots(len(rows), in_channels, squeeze=False)
        images = []
        difference_limit = 1.0
        if true is not None:
            difference = learned - true
            difference_limit = float(np.nanmax(np.abs(difference))) or 1.0
            difference_fmt = _value_format(difference)
        for row, (name, kernel, out) in enumerate(rows):
            is_difference = true is not None and row >= 2 * out_channels
            row_limit = difference_limit if is_difference else limit
            fmt = difference_fmt if is_difference else value_fmt
            for column in range(in_channels):
                ax = axes[row, column]
                images.append(_heatmap(ax, kernel[column], row_limit, annotate, fmt, fontsize))
                label = f"{name}, {channel_names[column]}"
                if out_channels > 1:
                    label += f" → out {out}"
                ax.set_title(label, fontsize=10)
                if column == 0:
                    ax.set_ylabel("dy (px)")
                if row == len(rows) - 1:
                    ax.set_xlabel("dx (px)")
                ax.label_outer()  # offsets on the outer edges only
        value_rows = out_channels * (2 if true is not None else 1)
        fig.colorbar(
            images[0],
            ax=list(axes[:value_rows].ravel()),
            location="right",
            shrink=0.9,
            label="kernel weight",
        )
        if true is not None:
            fig.colorbar(
                images[-1],
                ax=list(axes[value_rows:].ravel()),
                location="right",
                shrink=0.9,
                label="difference",
            )
        fig.suptitle(wrap_title(suptitle or "Learned versus true kernel", _title_width(fig)))
        return _finish(fig, path)


def plot_kernels(
    model: nn.Module, filter: Any, path: str | os.PathLike[str] | None = None
) -> Figure:
    """The kernel a linear model computes next to its filter's exact kernel.

    The model is folded into one kernel with :func:`img2img.solve.fold_linear`;
    the smaller of the two kernels is zero-padded, centred, to the other's
    size (:func:`align_kernels`), then drawn by :func:`plot_kernel_comparison`.
    For a non-linear filter (no exact kernel) only the learned one is shown.

    Args:
        model: A linear model (``model.is_linear``), e.g. ``create_img2img_model(3, 1, "linear")``.
        filter: A :class:`~img2img.filters.Filter` or a spec string.
        path: Where to save the figure as PNG (``None``: do not save).

    Returns:
        The figure (see :func:`plot_kernel_comparison`).

    Raises:
        ValueError: If the model cannot be folded (from ``fold_linear``) or
            the kernels' channel counts differ.
    """
    from img2img.filters import create_filter
    from img2img.solve import fold_linear

    resolved = create_filter(filter)
    kernel, bias = fold_linear(model)
    learned = _as_kernel(kernel, "learned kernel")
    true = resolved.kernel
    if true is not None:
        learned, true = align_kernels(learned, true)
    heading = f"Learned versus true kernel: {resolved.spec}"
    if bias is not None:
        bias_values = np.asarray(
            bias.detach().cpu().numpy() if isinstance(bias, torch.Tensor) else bias, dtype=float
        ).ravel()
        if bias_values.size:
            heading += "\nlearned bias " + ", ".join(f"{b:.3g}" for b in bias_values)
    return plot_kernel_comparison(learned, true, path, suptitle=heading)

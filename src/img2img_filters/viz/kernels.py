"""Learned and true kernels as annotated heat maps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from img2img_filters.filters import create_filter
from img2img_filters.solve import fold_linear
from img2img_filters.viz.style import (
    MAX_ANNOTATED_KERNEL,
    SIGNED_CMAP,
    finish,
    new_figure,
    styled,
    title_width,
    wrap_title,
)

__all__ = ["align_kernels", "plot_kernel_comparison", "plot_kernels"]


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


# Over 80 lines only for its docstring and its signature.
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
    with styled("white"):
        fig = new_figure(
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
        fig.suptitle(wrap_title(suptitle or "Learned versus true kernel", title_width(fig)))
        return finish(fig, path)


def plot_kernels(
    model: nn.Module, filter: Any, path: str | os.PathLike[str] | None = None
) -> Figure:
    """The kernel a linear model computes next to its filter's exact kernel.

    The model is folded into one kernel with :func:`img2img_filters.solve.fold_linear`;
    the smaller of the two kernels is zero-padded, centred, to the other's
    size (:func:`align_kernels`), then drawn by :func:`plot_kernel_comparison`.
    For a non-linear filter (no exact kernel) only the learned one is shown.

    Args:
        model: A linear model (``model.is_linear``), e.g. ``create_img2img_model(3, 1, "linear")``.
        filter: A :class:`~img2img_filters.filters.Filter` or a spec string.
        path: Where to save the figure as PNG (``None``: do not save).

    Returns:
        The figure (see :func:`plot_kernel_comparison`).

    Raises:
        ValueError: If the model cannot be folded (from ``fold_linear``) or
            the kernels' channel counts differ.
    """
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

"""The figures of a report: the PNG files of a run folder, drawn anew when missing.

A run folder's figures are embedded as they are: training draws them once,
from what it holds in memory. A report reads only the run folder: when the
loss curves or the kernels are missing (a run trained with ``--no-figures``, a
copied folder) they are drawn in memory from ``history.csv`` and from the
checkpoint of a linear model; the predictions, which need photos, are never
redrawn (the data paths a run folder records are not followed). Nothing is
written into the run folder. A figure that is missing or cannot be drawn
becomes a note.

:func:`plot_loss_comparison` draws the loss curves of several runs, one panel per loss.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import nn

from img2img_filters.checkpoint import load_model
from img2img_filters.filters import create_filter
from img2img_filters.report.folder import RunFiles, one_line
from img2img_filters.report.page import PNG_SIGNATURE
from img2img_filters.run.folder import (
    FIGURE_FILES,
    KERNELS_FIGURE,
    LOSSES_FIGURE,
    PREDICTIONS_FIGURE,
)
from img2img_filters.viz.losses import LOSS_NAMES, check_loss, loss_axes

__all__ = [
    "ReportFigure",
    "collect_figures",
    "figure_png",
    "mislabelled_losses",
    "plot_loss_comparison",
]

#: Rows of the predictions figure drawn for a report.
PREDICTION_ROWS = 4
#: Run names longer than this are cut (from the start) in the comparison plot's legend.
LEGEND_WIDTH = 40


@dataclass
class ReportFigure:
    """One figure of a report.

    Attributes:
        name: Its file name in the run folder (such as ``losses.png``).
        png: The PNG bytes.
        drawn: ``True`` when drawn for the report because the file is missing.
    """

    name: str
    png: bytes
    drawn: bool = False


def figure_png(fig: Figure) -> bytes:
    """A figure as PNG bytes, at the resolution of saved figures."""
    # matplotlib: loaded only when a figure is drawn
    from img2img_filters.viz import DPI

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


class _Drawer:
    """Draws a run's missing figures; loads its model and data at most once."""

    def __init__(self, run: RunFiles) -> None:
        self.run = run
        self._model: nn.Module | None = None
        self._model_error: str | None = None

    def model(self) -> nn.Module:
        if self._model is None and self._model_error is None:
            if self.run.checkpoint is None:
                self._model_error = "the run folder has no checkpoint"
            else:
                try:
                    self._model = load_model(self.run.checkpoint)
                except Exception as error:  # any unusable checkpoint: say why, go on
                    self._model_error = f"the checkpoint could not be loaded ({one_line(error)})"
        if self._model is None:
            raise _CannotDrawError(self._model_error or "no model")
        return self._model

    def losses(self) -> Figure:
        # matplotlib: loaded only when a figure is drawn
        from img2img_filters.viz import plot_losses

        if not self.run.has_history:
            raise _CannotDrawError("the run folder has no readable history.csv")
        return plot_losses(self.run.train_losses or [], self.run.val_losses, loss=self.run.loss)

    def kernels(self) -> Figure:
        # matplotlib: loaded only when a figure is drawn
        from img2img_filters.viz import plot_kernels

        spec = self.run.filter_spec
        if spec is None:
            raise _CannotDrawError("the run does not record its filter")
        model = self.model()
        if not getattr(model, "is_linear", False):
            raise _CannotDrawError("the model is not linear, so it computes no single kernel")
        return plot_kernels(model, create_filter(spec, allow_files=False))


class _CannotDrawError(Exception):
    """A missing figure that cannot be drawn; the message says why."""


def _wanted_drawings(run: RunFiles) -> dict[str, str]:
    """The run figures worth drawing when missing or unreadable: file name -> drawer method."""
    wanted = {} if run.method == "exact" else {LOSSES_FIGURE: "losses"}  # a fit: its residual
    if _is_linear_run(run):
        wanted[KERNELS_FIGURE] = "kernels"
    return wanted


def mislabelled_losses(run: RunFiles) -> bool:
    """Whether the run's ``losses.png`` predates the loss record and calls other losses L1."""
    return not run.loss_recorded and run.loss not in ("l1", None)


def _is_linear_run(run: RunFiles) -> bool:
    """Whether a run learned a linear filter with a linear model (so it has kernels to show)."""
    if run.metrics is not None and "kernel_error" in run.metrics:
        return isinstance(run.metrics["kernel_error"], dict)
    return run.method == "exact" or run.arch == "linear"


def collect_figures(
    run: RunFiles, *, names: Sequence[str] | None = None, draw_missing: bool = True
) -> tuple[dict[str, ReportFigure], list[str]]:
    """The figures of a run: its PNG files, and its missing figures drawn anew.

    Args:
        run: The run folder's contents.
        names: Only these file names (default: every PNG in the folder, plus
            the run's figures that are missing).
        draw_missing: Draw the run's missing figures from its files.

    Returns:
        ``(figures, notes)``: figures by file name, in report order; one note per
        figure that is unreadable or could not be drawn.
    """
    figures: dict[str, ReportFigure] = {}
    notes: list[str] = []
    for name, path in run.figures.items():
        if names is not None and name not in names:
            continue
        if name == LOSSES_FIGURE and mislabelled_losses(run):
            notes.append(
                f"{name} labels the run's {LOSS_NAMES[run.loss or 'l1']} losses as L1 "
                "(written before run folders recorded their loss); it is not shown"
            )
            continue
        try:
            png = path.read_bytes()
        except OSError as error:
            notes.append(f"{name} could not be read ({one_line(error)})")
            continue
        if not png.startswith(PNG_SIGNATURE):
            notes.append(f"{name} is not a PNG image; it is not shown")
            continue
        figures[name] = ReportFigure(name, png)
    wanted = names is None or PREDICTIONS_FIGURE in names
    if wanted and PREDICTIONS_FIGURE not in figures and PREDICTIONS_FIGURE not in run.figures:
        notes.append(
            f"{PREDICTIONS_FIGURE} is missing (training draws it; a report reads no photos)"
        )
    if not draw_missing:
        return figures, notes
    drawer = _Drawer(run)
    for name, method in _wanted_drawings(run).items():
        if (names is not None and name not in names) or name in figures:
            continue
        try:
            fig = getattr(drawer, method)()
        except _CannotDrawError as reason:
            if name not in run.figures:  # an unreadable file has its note already
                notes.append(f"{name} is missing and was not drawn: {reason}")
            continue
        except Exception as error:  # data or model trouble: the report still gets written
            notes.append(f"{name} could not be drawn ({one_line(error)})")
            continue
        figures[name] = ReportFigure(name, figure_png(fig), drawn=True)
    order = [*run.figures, *FIGURE_FILES]
    return {name: figures[name] for name in dict.fromkeys(order) if name in figures}, notes


# -- several runs on one plot ------------------------------------------------------------------
#: Horizontal distance between the single points of one-epoch runs, in epochs.
SINGLE_POINT_SPACING = 0.06


def _single_point_shifts(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Small x offsets that set the single points of one-epoch runs side by side."""
    singles = [name for name, (train, val) in series.items() if max(len(train), len(val)) == 1]
    if len(singles) < 2:
        return {}
    middle = (len(singles) - 1) / 2
    return {name: (i - middle) * SINGLE_POINT_SPACING for i, name in enumerate(singles)}


def _curve(values: Sequence[float] | None) -> np.ndarray:
    return np.asarray(list(values or []), dtype=np.float64)


# Over 80 lines only for its docstring.
def plot_loss_comparison(
    curves: Mapping[str, tuple[Sequence[float] | None, Sequence[float] | None]],
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    losses: Mapping[str, str | None] | None = None,
) -> Figure:
    """The loss curves of several runs: one panel per loss, never two losses on one axis.

    Each run has one colour: validation losses as a solid line with round
    markers, training losses dashed with square markers. A run of one epoch
    (an exact fit) is a single point, drawn as a large marker (several such
    points are set slightly apart around their epoch). Each panel's y axis is
    logarithmic when its positive finite losses span more than two decades;
    zero losses, which a log axis cannot show, are named in the legend.

    Args:
        curves: ``{run name: (train_losses, val_losses)}``, per epoch from epoch 1
            (either may be ``None`` or empty).
        path: Where to save the figure as PNG (``None``: do not save).
        title: The title (default: "Loss curves of N runs").
        losses: ``{run name: "l1" | "mse" | None}``: the loss each run's curves
            hold (``None``: not recorded). Runs not named here are L1, the study's.

    Returns:
        The figure: one axes per loss with a legend of the line styles, the
        runs' legend under them.

    Raises:
        ValueError: If no run has any loss, or a loss is not a known one.
    """
    # matplotlib: loaded only when a figure is drawn
    import seaborn as sns

    from img2img_filters.viz.style import finish, new_figure, styled, wrap_title

    kinds = {
        name: check_loss((losses or {}).get(name, "l1"), f"losses[{name!r}]") for name in curves
    }
    series = {name: (_curve(train), _curve(val)) for name, (train, val) in curves.items()}
    values = np.concatenate([np.concatenate(pair) for pair in series.values()] or [np.empty(0)])
    if values.size == 0:
        raise ValueError("plot_loss_comparison needs at least one run with losses; got none")
    panels: dict[str | None, list[str]] = {}
    for name, (train, val) in series.items():
        if train.size or val.size:
            panels.setdefault(kinds[name], []).append(name)
    with styled("whitegrid"):
        colours = dict(zip(series, sns.color_palette("tab10", max(len(series), 1)), strict=False))
        fig = new_figure(8.5 if len(panels) == 1 else 6.0 * len(panels), 4.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        handles: dict[str, Any] = {}
        for ax, (kind, names) in zip(axes, panels.items(), strict=True):
            _loss_panel(ax, {name: series[name] for name in names}, colours, handles, kind)
        heading = title or f"Loss curves of {len(series)} run{'s' if len(series) != 1 else ''}"
        if len(panels) == 1:
            axes[0].set_title(wrap_title(heading, 70))
        else:
            fig.suptitle(wrap_title(heading, 90))
            for ax, kind in zip(axes, panels, strict=True):
                ax.set_title(f"{LOSS_NAMES.get(kind or '', 'Unrecorded')} loss")
        styles = [
            Line2D([], [], color="0.3", linestyle="-", marker="o", label="validation"),
            Line2D(
                [],
                [],
                color="0.3",
                linestyle="--",
                marker="s",
                markerfacecolor="none",
                label="training",
            ),
        ]
        axes[0].legend(handles=styles, loc="best", fontsize="small")
        legend = [handles[name] for name in series if name in handles]  # in the runs' order
        longest_label = max(len(handle.get_label()) for handle in legend)
        columns = int(fig.get_figwidth() // (0.075 * longest_label + 0.8))
        fig.legend(
            handles=legend,
            loc="outside lower center",
            ncols=max(1, min(len(legend), columns)),
            fontsize="small",
            frameon=False,
        )
        return finish(fig, path)


def _loss_panel(
    ax: Any,
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    colours: Mapping[str, Any],
    handles: dict[str, Any],
    kind: str | None,
) -> None:
    """The curves of the runs of one loss on one axes; each run's legend handle into ``handles``."""
    values = np.concatenate([np.concatenate(pair) for pair in series.values()])
    positive = values[np.isfinite(values) & (values > 0)]
    log_scale = positive.size > 0 and positive.max() / positive.min() > 100.0
    longest = max(max(len(train), len(val)) for train, val in series.values())
    shifts = _single_point_shifts(series)
    for name, (train, val) in series.items():
        colour = colours[name]
        shift = shifts.get(name, 0.0)
        label = name if len(name) <= LEGEND_WIDTH else "…" + name[1 - LEGEND_WIDTH :]
        if log_scale and (np.concatenate([train, val]) <= 0).any():
            label += " (zero loss not shown)"
        # Training first, validation on top; a lone training point is a larger hollow
        # square around the validation dot, so both stay visible when they coincide.
        for losses, validation in ((train, False), (val, True)):
            if losses.size == 0:
                continue
            single = losses.size == 1
            if log_scale:  # a log axis cannot show zero: leave such points out
                losses = np.where(losses > 0, losses, np.nan)
            ax.plot(
                np.arange(1, losses.size + 1) + shift,
                losses,
                linestyle="-" if validation else "--",
                marker="o" if validation else "s",
                markersize=(8 if validation else 13) if single else 3.5,
                markerfacecolor=colour if validation else "none",
                markeredgewidth=1.0 if validation else 1.5,
                color=colour,
                alpha=1.0 if validation else 0.8,
                zorder=3 if validation else 2,
            )
        handles[name] = Line2D([], [], color=colour, marker="o", label=label)
    loss_axes(ax, longest, log_scale, loss=kind)

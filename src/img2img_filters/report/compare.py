"""One page comparing runs: a table of results, their loss curves overlaid, their predictions."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from img2img_filters import __version__
from img2img_filters.fileio import atomic_write_text, check_not_input
from img2img_filters.report.figures import collect_figures, figure_png, plot_loss_comparison
from img2img_filters.report.folder import REPORT_FILE, RunFiles, input_files, read_run, unique_names
from img2img_filters.report.page import (
    MISSING,
    Cell,
    Figure,
    Table,
    format_count,
    format_float,
    format_psnr,
    format_seconds,
)
from img2img_filters.report.render import render
from img2img_filters.run.folder import PREDICTIONS_FIGURE
from img2img_filters.viz.losses import LOSS_NAMES

__all__ = ["write_comparison_report"]

#: Columns of the comparison table.
COLUMNS = (
    "run",
    "filter",
    "arch",
    "loss",
    "params",
    "epochs",
    "val L1",
    "PSNR",
    "SSIM",
    "kernel max error",
    "time",
)


def write_comparison_report(
    run_dirs: Sequence[str | Path],
    path: str | Path,
    *,
    title: str | None = None,
    draw_missing: bool = True,
) -> Path:
    """Write one self-contained HTML page comparing runs.

    The page holds a table (run, linked to its own report when it has one;
    filter, architecture, training loss, parameters, epochs, validation L1,
    PSNR, SSIM, kernel max error, time; the best L1, PSNR and SSIM among runs of
    the same filter in bold), the loss curves of every run (one panel per kind
    of loss), and each run's predictions figure. Runs with missing files get a
    line saying so and ``—`` in the table.

    Args:
        run_dirs: The run folders, in the order to show them.
        path: The HTML file to write.
        title: The page title (default: "Comparison of N runs").
        draw_missing: Kept for compatibility: a report never redraws predictions (no photos are read).

    Returns:
        The path written.

    Raises:
        TypeError: If ``run_dirs`` is a single path rather than a sequence of them.
        ValueError: If ``run_dirs`` is empty or a folder holds none of a run's files.
        FileNotFoundError: If a run folder does not exist.
        NotADirectoryError: If a path is not a folder.
    """
    if isinstance(run_dirs, (str, Path)):
        raise TypeError(
            "run_dirs must be a sequence of run folders; got a single path "
            f"{str(run_dirs)!r} (use write_run_report for one run)"
        )
    if len(run_dirs) == 0:
        raise ValueError("run_dirs must hold at least one run folder; got none")
    runs = [read_run(run_dir) for run_dir in run_dirs]
    check_not_input(path, [f for run in runs for f in input_files(run)], "the report path")
    names = unique_names(runs)
    count = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    problems = [
        f"{name}: missing {', '.join(run.missing)}"
        for name, run in zip(names, runs, strict=True)
        if run.missing
    ] + [f"{name}: {note}" for name, run in zip(names, runs, strict=True) for note in run.notes]
    results = _results_table(runs, names, Path(path).absolute().parent)
    losses = _losses_figure(runs, names)
    cards = _thumbnails(runs, names, problems, draw_missing)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    folders = "; ".join(f"{name}: {run.path}" for name, run in zip(names, runs, strict=True))
    text = render(
        "comparison.html.j2",
        title=title or f"Comparison of {count}",
        subtitle=f"{count} · {stamp}",
        navigation=[
            ("results", "Results"),
            ("losses", "Loss curves"),
            ("predictions", "Predictions"),
        ],
        footer=f"{_version_line()} Run folders: {folders}.",
        problems=problems,
        results=results,
        results_note=(
            "Validation metrics; the best L1, PSNR and SSIM among runs of the same filter are "
            "in bold. Loss: what each run trained on (an exact fit's is its L1 residual). "
            "Kernel max error: the largest difference between the learned and the true "
            "kernel (linear models of linear filters). A run's name links to its own report."
        ),
        losses=losses,
        cards=cards,
    )
    return atomic_write_text(path, text)


def _version_line() -> str:
    return f"Written by img2img {__version__}."


# -- the table ---------------------------------------------------------------------------------
def _number(metrics: dict[str, Any] | None, key: str) -> float | None:
    value = (metrics or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


#: The metrics whose best value is marked: key -> (format, larger is better).
RANKED = {
    "l1": (lambda value: format_float(value, ".3e"), False),
    "psnr": (format_psnr, True),
    "ssim": (lambda value: format_float(value, ".6f"), True),
}


def _filter_key(run: RunFiles) -> str | None:
    """What makes two runs' results comparable: the same filter, in full when recorded."""
    return run.canonical_filter or run.filter_spec


def _best_texts(runs: Sequence[RunFiles]) -> dict[str | None, dict[str, str | None]]:
    """Per filter, the printed best value of each ranked metric (``None``: fewer than two values).

    Runs of different filters are never ranked against each other; runs whose filter is
    not recorded are not ranked at all. Cells that print the same text as the best are
    all marked, so ties in print are shown.
    """
    best: dict[str | None, dict[str, str | None]] = {}
    for key in dict.fromkeys(_filter_key(run) for run in runs):
        group = [run for run in runs if _filter_key(run) == key]
        best[key] = {}
        for metric, (write, larger) in RANKED.items():
            values = [v for run in group if (v := _number(run.metrics, metric)) is not None]
            ranked = key is not None and len(values) > 1
            best[key][metric] = write(max(values) if larger else min(values)) if ranked else None
    return best


def _report_link(run: RunFiles, page_folder: Path) -> str | None:
    """The run's own report as a path relative to the comparison page, when it has one."""
    own = run.path / REPORT_FILE
    if not own.is_file():
        return None
    return Path(os.path.relpath(own.absolute(), page_folder)).as_posix()


def _results_table(runs: Sequence[RunFiles], names: Sequence[str], page_folder: Path) -> Table:
    best = _best_texts(runs)
    rows = []
    for name, run in zip(names, runs, strict=True):
        m = run.metrics or {}
        error = m.get("kernel_error")
        kernel = format_float(error.get("max_abs"), ".3e") if isinstance(error, dict) else MISSING
        loss = LOSS_NAMES.get(run.loss or "", MISSING)
        rows.append(
            [
                Cell(name, href=_report_link(run, page_folder)),
                Cell(run.filter_spec or MISSING, code=run.filter_spec is not None),
                Cell(run.arch or MISSING, note="exact fit" if run.method == "exact" else ""),
                Cell(loss + (" residual" if run.method == "exact" else "")),
                Cell(format_count(m.get("parameters")), numeric=True),
                Cell(format_count(m.get("epochs")), numeric=True, note=str(m.get("stopped") or "")),
                *(_metric_cell(m, key, best[_filter_key(run)]) for key in RANKED),
                Cell(kernel, numeric=True),
                Cell(format_seconds(m.get("seconds")), numeric=True),
            ]
        )
    return Table(COLUMNS, rows)


def _metric_cell(m: dict[str, Any], key: str, best: dict[str, str | None]) -> Cell:
    text = RANKED[key][0](m.get(key))
    return Cell(text, numeric=True, best=best[key] is not None and text == best[key])


# -- figures -----------------------------------------------------------------------------------
def _losses_figure(runs: Sequence[RunFiles], names: Sequence[str]) -> Figure | None:
    with_history = [(name, run) for name, run in zip(names, runs, strict=True) if run.has_history]
    if not with_history:
        return None
    curves = {name: (run.train_losses, run.val_losses) for name, run in with_history}
    kinds = {name: run.loss for name, run in with_history}
    fig = plot_loss_comparison(curves, losses=kinds)
    left_out = [name for name, run in zip(names, runs, strict=True) if not run.has_history]
    shown = sorted({LOSS_NAMES.get(kind or "", "unrecorded") for kind in kinds.values()})
    caption = (
        "Validation (solid, round markers) and training (dashed, square markers) loss per "
        f"epoch; one colour per run, one panel per kind of loss ({', '.join(shown)}): "
        "losses of different kinds are never drawn on one axis."
    )
    if any(run.method == "exact" for _, run in with_history):
        caption += " An exact fit is a single point: its L1 residual."
    if left_out:
        caption += f" Without a loss history: {', '.join(left_out)}."
    return Figure(figure_png(fig), "Loss curves of the compared runs", caption)


def _thumbnails(
    runs: Sequence[RunFiles], names: Sequence[str], problems: list[str], draw_missing: bool
) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = []
    for name, run in zip(names, runs, strict=True):
        figures, notes = collect_figures(
            run, names=(PREDICTIONS_FIGURE,), draw_missing=draw_missing
        )
        problems.extend(f"{name}: {note}" for note in notes)
        item = figures.get(PREDICTIONS_FIGURE)
        if item is None:
            cards.append({"name": name, "figure": None})
            continue
        caption = f"{name}: {run.arch or MISSING} on {run.filter_spec or MISSING}"
        if item.drawn:
            caption += " (drawn for this report)"
        caption += ". Click to enlarge."
        figure = Figure(item.png, f"predictions of run {name}", caption)
        cards.append({"name": name, "figure": figure})
    return cards

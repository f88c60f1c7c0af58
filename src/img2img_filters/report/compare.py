"""One page comparing runs: a table of results, their loss curves overlaid, their predictions."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from img2img_filters import __version__
from img2img_filters.fileio import atomic_write_text, check_not_input
from img2img_filters.report.figures import collect_figures, figure_png, plot_loss_comparison
from img2img_filters.report.folder import RunFiles, input_files, read_run, unique_names
from img2img_filters.report.page import (
    MISSING,
    cell,
    document,
    escape,
    figure,
    format_count,
    format_float,
    format_psnr,
    format_seconds,
    notice,
    section,
    table,
)
from img2img_filters.run.folder import PREDICTIONS_FIGURE

__all__ = ["write_comparison_report"]

#: Columns of the comparison table.
COLUMNS = (
    "run",
    "filter",
    "arch",
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

    The page holds a table (run, filter, architecture, parameters, epochs,
    validation L1, PSNR, SSIM, kernel max error, time; the best L1, PSNR and
    SSIM in bold), the validation and training losses of every run on one plot,
    and each run's predictions figure. Runs with missing files get a line
    saying so and ``—`` in the table.

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
    heading = title or f"Comparison of {count}"
    body: list[str] = []
    problems = [
        f"{name}: missing {', '.join(run.missing)}"
        for name, run in zip(names, runs, strict=True)
        if run.missing
    ] + [f"{name}: {note}" for name, run in zip(names, runs, strict=True) for note in run.notes]
    navigation = [("results", "Results"), ("losses", "Loss curves"), ("predictions", "Predictions")]
    body.append(section("results", "Results", _results_table(runs, names)))
    body.append(section("losses", "Loss curves", _losses_block(runs, names)))
    body.append(
        section("predictions", "Predictions", _thumbnails(runs, names, problems, draw_missing))
    )
    if problems:
        body.insert(0, notice("Missing or unreadable in the run folders:", problems))
    stamp = time.strftime("%Y-%m-%d %H:%M")
    folders = "; ".join(f"{name}: {run.path}" for name, run in zip(names, runs, strict=True))
    text = document(
        heading,
        body,
        subtitle=f"{count} · {stamp}",
        navigation=navigation,
        footer=f"{_version_line()} Run folders: {folders}.",
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


def _best_texts(runs: Sequence[RunFiles]) -> dict[str, str | None]:
    """The printed best value of each ranked metric (``None`` with fewer than two values).

    Cells that print the same text as the best are all marked, so ties in print are shown.
    """
    best: dict[str, str | None] = {}
    for key, (write, larger) in RANKED.items():
        values = [v for run in runs if (v := _number(run.metrics, key)) is not None]
        best[key] = write(max(values) if larger else min(values)) if len(values) > 1 else None
    return best


def _results_table(runs: Sequence[RunFiles], names: Sequence[str]) -> str:
    best = _best_texts(runs)
    rows = []
    for name, run in zip(names, runs, strict=True):
        m = run.metrics or {}
        error = m.get("kernel_error")
        kernel = format_float(error.get("max_abs"), ".3e") if isinstance(error, dict) else MISSING
        filter_html = f"<code>{escape(run.filter_spec or MISSING)}</code>"
        arch = escape(run.arch or MISSING)
        if run.method == "exact":
            arch += " <small>(exact fit)</small>"
        epochs = escape(format_count(m.get("epochs")))
        if m.get("stopped"):
            epochs += f"<br><small>{escape(m['stopped'])}</small>"
        rows.append(
            [
                cell(name),
                cell(filter_html, raw=True),
                cell(arch, raw=True),
                cell(format_count(m.get("parameters")), numeric=True),
                cell(epochs, numeric=True, raw=True),
                *(_metric_cell(m, key, best) for key in RANKED),
                cell(kernel, numeric=True),
                cell(format_seconds(m.get("seconds")), numeric=True),
            ]
        )
    note = (
        "<p><small>Validation metrics; the best L1, PSNR and SSIM are in bold. Kernel max "
        "error: the largest difference between the learned and the true kernel (linear "
        "models of linear filters).</small></p>"
    )
    return table(COLUMNS, rows) + "\n" + note


def _metric_cell(m: dict[str, Any], key: str, best: dict[str, str | None]) -> str:
    text = RANKED[key][0](m.get(key))
    return cell(text, numeric=True, best=best[key] is not None and text == best[key])


# -- figures -----------------------------------------------------------------------------------
def _losses_block(runs: Sequence[RunFiles], names: Sequence[str]) -> str:
    curves = {
        name: (run.train_losses, run.val_losses)
        for name, run in zip(names, runs, strict=True)
        if run.has_history
    }
    if not curves:
        return f"<p>{escape('No run has a readable history.csv: there are no loss curves.')}</p>"
    fig = plot_loss_comparison(curves)
    left_out = [name for name, run in zip(names, runs, strict=True) if not run.has_history]
    caption = (
        "Validation (solid, round markers) and training (dashed, square markers) L1 loss per "
        "epoch; one colour per run. A run of one epoch (an exact fit) is a single point."
    )
    if left_out:
        caption += f" Without a loss history: {', '.join(left_out)}."
    return figure(figure_png(fig), "Loss curves of the compared runs", caption)


def _thumbnails(
    runs: Sequence[RunFiles], names: Sequence[str], problems: list[str], draw_missing: bool
) -> str:
    cards = []
    for name, run in zip(names, runs, strict=True):
        figures, notes = collect_figures(
            run, names=(PREDICTIONS_FIGURE,), draw_missing=draw_missing
        )
        problems.extend(f"{name}: {note}" for note in notes)
        item = figures.get(PREDICTIONS_FIGURE)
        if item is None:
            cards.append(
                f"<div><h3>{escape(name)}</h3>\n<p>{escape('No predictions figure.')}</p></div>"
            )
            continue
        caption = f"{name}: {run.arch or MISSING} on {run.filter_spec or MISSING}"
        if item.drawn:
            caption += " (drawn for this report)"
        cards.append(f"<div>\n{figure(item.png, f'predictions of run {name}', caption)}\n</div>")
    return '<div class="grid">\n' + "\n".join(cards) + "\n</div>"

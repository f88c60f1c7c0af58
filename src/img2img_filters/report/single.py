"""The report of one run: configuration, metrics, loss curves, predictions and kernels."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from img2img_filters import __version__
from img2img_filters.fileio import atomic_write_text, check_not_input
from img2img_filters.filters import create_filter
from img2img_filters.report.certificate import certificate_section
from img2img_filters.report.figures import ReportFigure, collect_figures
from img2img_filters.report.folder import REPORT_FILE, RunFiles, input_files, lookup, read_run
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
    key_value_table,
    notice,
    section,
    table,
)
from img2img_filters.run.folder import KERNELS_FIGURE, LOSSES_FIGURE, PREDICTIONS_FIGURE

__all__ = ["metric_rows", "write_run_report"]

#: What each of the run's figures shows.
CAPTIONS = {
    LOSSES_FIGURE: "Mean L1 loss per epoch on the training and validation photos "
    "(a log scale when the losses span more than two decades); the circle marks the best "
    "validation epoch, whose weights the model keeps.",
    PREDICTIONS_FIGURE: "The first validation photos: input, model output, target and "
    "absolute error. Output and target share one colour scale; errors have their own.",
    KERNELS_FIGURE: "The kernel the model computes next to the filter's exact kernel, per "
    "input channel, and their difference (its own colour scale).",
}
#: Section titles of the run's figures.
TITLES = {
    LOSSES_FIGURE: ("losses", "Loss curves"),
    PREDICTIONS_FIGURE: ("predictions", "Predictions"),
    KERNELS_FIGURE: ("kernels", "Kernels"),
}


def write_run_report(
    run_dir: str | Path,
    path: str | Path | None = None,
    *,
    title: str | None = None,
    draw_missing: bool = True,
) -> Path:
    """Write a run's report: one self-contained HTML page.

    The page holds the summary metrics, the loss curves, the predictions, the
    learned and true kernels (linear filters), the other PNG figures of the
    folder and the configuration. Figures are embedded as PNG ``data:`` URIs;
    the page loads nothing from elsewhere. Missing or unreadable files are
    listed at the top and their sections left out; the run's missing figures
    are drawn from its files when possible (see
    :func:`img2img_filters.report.figures.collect_figures`).

    Args:
        run_dir: The run folder.
        path: The HTML file (default ``run_dir/report.html``).
        title: The page title (default: "Run report: <folder name>").
        draw_missing: Draw the run's missing figures (loss curves, predictions,
            kernels) from its history, checkpoint and data.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: If ``run_dir`` does not exist.
        NotADirectoryError: If ``run_dir`` is not a folder.
        ValueError: If it holds none of a run's files.
    """
    run = read_run(run_dir)
    target = Path(path) if path is not None else run.path / REPORT_FILE
    check_not_input(target, input_files(run), "the report path")
    figures, figure_notes = collect_figures(run, draw_missing=draw_missing)
    text = render_run_page(run, figures, [*run.notes, *figure_notes], title=title)
    return atomic_write_text(target, text)


def render_run_page(
    run: RunFiles,
    figures: dict[str, ReportFigure],
    notes: list[str],
    *,
    title: str | None = None,
) -> str:
    """The HTML of a run's report (see :func:`write_run_report`)."""
    body: list[str] = []
    if run.missing:
        body.append(
            notice(
                "Missing from this run folder (the sections that need them are left out):",
                run.missing,
            )
        )
    if notes:
        body.append(notice("Notes:", notes))
    navigation = [("summary", "Summary")]
    body.append(section("summary", "Summary", _summary(run)))
    if (certificate := certificate_section(run.metrics)) is not None:
        navigation.append(("certificate", "Fidelity certificate"))
        body.append(section("certificate", "Fidelity certificate", certificate))
    for name, (anchor, heading) in TITLES.items():
        if name in figures:
            navigation.append((anchor, heading))
            body.append(section(anchor, heading, _figure_block(figures[name], run)))
        elif name == KERNELS_FIGURE and (line := _no_kernel_line(run)):
            body.append(section(anchor, heading, f"<p>{escape(line)}</p>"))
    others = [item for name, item in figures.items() if name not in TITLES]
    if others:
        navigation.append(("figures", "Other figures"))
        body.append(
            section("figures", "Other figures", "\n".join(_figure_block(f, run) for f in others))
        )
    if run.config is not None:
        navigation.append(("config", "Configuration"))
        body.append(section("config", "Configuration", _config_tables(run.config)))
    subtitle = " · ".join(
        part
        for part in (
            run.filter_spec and f"filter {run.filter_spec}",
            run.arch and f"arch {run.arch}",
            str(run.path),
        )
        if part
    )
    return document(
        title or f"Run report: {run.name}",
        body,
        subtitle=subtitle,
        navigation=navigation,
        footer=_footer(run),
    )


# -- summary -----------------------------------------------------------------------------------
def metric_rows(metrics: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The metrics of ``metrics.json`` as ``(label, text)`` rows, values formatted for reading.

    Formats: L1 and MSE ``.3e``; PSNR ``.2f`` dB (``∞ dB`` for exact outputs);
    SSIM ``.6f``; kernel errors ``.3e``; time in seconds (minutes past two).
    Missing values read ``—``.
    """
    m = metrics or {}
    rows = [
        ("Validation L1 (mean absolute error)", format_float(m.get("l1"), ".3e")),
        ("Validation MSE", format_float(m.get("mse"), ".3e")),
        ("Validation PSNR", _psnr_text(m)),
        ("Validation SSIM", format_float(m.get("ssim"), ".6f")),
    ]
    error = m.get("kernel_error")
    if isinstance(error, dict):
        rows += [
            ("Kernel max error (learned − true)", format_float(error.get("max_abs"), ".3e")),
            ("Kernel relative error (Frobenius)", format_float(error.get("relative"), ".3e")),
            ("Largest learned bias", format_float(error.get("bias_max_abs"), ".3e")),
        ]
    rows += [
        ("Parameters", format_count(m.get("parameters"))),
        ("Epochs", _epochs_text(m)),
        ("Stopped", str(m.get("stopped") or MISSING)),
        ("Time (data, training, evaluation)", format_seconds(m.get("seconds"))),
        ("Validation images", format_count(m.get("images"))),
    ]
    return rows


def _psnr_text(m: dict[str, Any]) -> str:
    text = format_psnr(m.get("psnr"))
    if m.get("data_range") is not None:
        source = m.get("data_range_source")
        text += f" (data range {format_float(m.get('data_range'), '.4g')}"
        text += f", from the {source})" if source else ")"
    infinite = m.get("psnr_infinite_images")
    if isinstance(infinite, int) and infinite > 0:
        text += f"; {infinite} of {format_count(m.get('images'))} images are reproduced exactly"
    return text


def _epochs_text(m: dict[str, Any]) -> str:
    epochs = m.get("epochs")
    if epochs is None:
        return MISSING
    best = m.get("best_epoch")
    return f"{epochs} (best validation epoch {best})" if best is not None else str(epochs)


def _summary(run: RunFiles) -> str:
    rows: list[tuple[str, str]] = []
    spec, canonical = run.filter_spec, run.canonical_filter
    if spec is not None:
        text = f"<code>{escape(spec)}</code>"
        if canonical and canonical != spec:
            text += f"<br><small>in full: <code>{escape(canonical)}</code></small>"
        rows.append(("Filter", text))
    data = lookup(run.config, "data")
    if isinstance(data, dict):
        rows.append(("Photos", escape(_data_text(data))))
    if run.arch is not None:
        method = {"exact": "exact least-squares fit", "gradient": "gradient training"}
        text = escape(run.arch)
        if run.method in method:
            text += f" <small>({escape(method[run.method])})</small>"
        rows.append(("Architecture", text))
    if run.metrics is not None:
        rows += [(label, escape(value)) for label, value in metric_rows(run.metrics)]
    if run.has_history:
        rows += [(label, escape(value)) for label, value in _loss_rows(run)]
    if not rows:
        return f"<p>{escape('Nothing to summarise: the run folder has no configuration and no metrics.')}</p>"
    return key_value_table(rows, raw_values=True)


def _data_text(data: dict[str, Any]) -> str:
    parts = [str(data.get("data", MISSING))]
    if data.get("crop_size"):
        parts.append(f"crops of {data['crop_size']}x{data['crop_size']}")
    if data.get("limit"):
        parts.append(f"at most {data['limit']} training images")
    if data.get("val_fraction") is not None:
        parts.append(f"validation fraction {data['val_fraction']}")
    if data.get("seed") is not None:
        parts.append(f"seed {data['seed']}")
    return ", ".join(parts)


def _loss_rows(run: RunFiles) -> list[tuple[str, str]]:
    train, val = run.train_losses or [], run.val_losses or []
    rows = [("Final training loss", format_float(train[-1], ".4e"))]
    if val:
        rows.append(("Final validation loss", format_float(val[-1], ".4e")))
    return rows


# -- figures and configuration -----------------------------------------------------------------
def _figure_block(item: ReportFigure, run: RunFiles) -> str:
    caption = CAPTIONS.get(item.name, item.name)
    if item.drawn:
        caption += (
            f" (Drawn for this report: {item.name} is missing from the run folder or unreadable.)"
        )
    html_text = figure(item.png, f"{item.name} of run {run.name}", caption)
    if item.name == LOSSES_FIGURE and run.has_history:
        html_text += "\n" + _history_details(run)
    return html_text


def _history_details(run: RunFiles) -> str:
    """The losses per epoch in a folded table."""
    train, val = run.train_losses or [], run.val_losses or []
    rows = [
        [
            cell(str(epoch), numeric=True),
            cell(format_float(train[epoch - 1], ".6g"), numeric=True),
            cell(
                format_float(val[epoch - 1], ".6g") if epoch <= len(val) else MISSING, numeric=True
            ),
        ]
        for epoch in range(1, len(train) + 1)
    ]
    return (
        f"<details><summary>Losses per epoch ({len(train)})</summary>\n"
        + table(["epoch", "training loss", "validation loss"], rows)
        + "\n</details>"
    )


def _no_kernel_line(run: RunFiles) -> str | None:
    """Why a run of a linear filter shows no kernels, or ``None`` when it has no linear filter."""
    spec = run.filter_spec
    if spec is None or run.metrics is None:
        return None
    try:
        linear = create_filter(spec, allow_files=False).linear
    except (ValueError, TypeError):
        return None
    if not linear:
        return None
    if run.metrics.get("kernel_error") is None:
        return (
            f"The filter is linear but the model ({run.arch or 'unknown'}) is not, "
            "so it computes no single kernel to compare with the filter's."
        )
    return "The kernels figure is missing and could not be drawn (see the notes above)."


def _config_tables(config: dict[str, Any]) -> str:
    """``config.json``: one table per group (data, model, train, resolved), scalars first."""
    scalars = [
        (key, _value_text(value)) for key, value in config.items() if not isinstance(value, dict)
    ]
    parts = [key_value_table(scalars)] if scalars else []
    for key, value in config.items():
        if isinstance(value, dict):
            rows = [(name, _value_text(item)) for name, item in value.items()]
            parts.append(
                f"<h3>{escape(key)}</h3>\n" + (key_value_table(rows) if rows else "<p>(empty)</p>")
            )
    return "\n".join(parts)


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _footer(run: RunFiles) -> str:
    files = sorted(item.name for item in run.path.iterdir() if not item.name.startswith("."))
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        f"Written by img2img {__version__} on {stamp}. Files in the run folder: {', '.join(files)}."
    )

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
    Cell,
    Figure,
    Table,
    format_count,
    format_float,
    format_psnr,
    format_seconds,
)
from img2img_filters.report.render import render
from img2img_filters.run.folder import (
    KERNELS_FIGURE,
    LOSSES_FIGURE,
    PREDICTIONS_FIGURE,
    VALIDATION_FIGURE,
)
from img2img_filters.viz.losses import LOSS_LABELS, LOSS_NAMES

__all__ = ["metric_rows", "write_run_report"]

#: What each of the run's figures shows.
CAPTIONS = {
    LOSSES_FIGURE: "Mean {loss} per epoch on the training and validation photos "
    "(a log scale when the losses span more than two decades); the circle marks the best "
    "validation epoch, whose weights the model keeps.",
    PREDICTIONS_FIGURE: "Validation photos (one crop from each of several photos): input, "
    "model output, target and absolute error. Output and target share one colour scale; "
    "errors have their own, which ends at a high percentile of the errors so that small "
    "ones stay visible (larger errors show in its top colour). Click to enlarge.",
    KERNELS_FIGURE: "The kernel the model computes next to the filter's exact kernel, per "
    "input channel, and their difference (its own colour scale).",
    VALIDATION_FIGURE: "One validation photo at its full resolution, every pixel shown: "
    "input, model output, target and absolute error, left to right (output and target on "
    "one colour scale). Click to enlarge.",
}
#: Section titles of the run's figures, in page order.
TITLES = {
    LOSSES_FIGURE: ("losses", "Loss curves"),
    PREDICTIONS_FIGURE: ("predictions", "Predictions"),
    VALIDATION_FIGURE: ("photo", "One validation photo at full size"),
    KERNELS_FIGURE: ("kernels", "Kernels"),
}
#: How many times a raw image's pixels are enlarged on the page at most.
PIXEL_ZOOM = 6
#: The widest a raw image is shown, in CSS pixels.
PAGE_WIDTH = 1100


def write_run_report(
    run_dir: str | Path,
    path: str | Path | None = None,
    *,
    title: str | None = None,
    draw_missing: bool = True,
) -> Path:
    """Write a run's report: one self-contained HTML page.

    The page holds the summary metrics, the loss curves (an exact fit: its
    residual), the predictions, one validation photo at full size, the learned
    and true kernels (linear filters), the other PNG figures of the folder and
    the configuration. Figures are embedded as PNG ``data:`` URIs; the page
    loads nothing from elsewhere. Missing or unreadable files are listed at
    the top and their sections left out; the run's missing figures are drawn
    from its files when possible (see
    :func:`img2img_filters.report.figures.collect_figures`).

    Args:
        run_dir: The run folder.
        path: The HTML file (default ``run_dir/report.html``).
        title: The page title (default: "Run report: <folder name>").
        draw_missing: Draw the run's missing figures (loss curves, kernels)
            from its history and checkpoint.

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
    exact = run.method == "exact"
    if exact:  # one point is no curve: the fit's residual is shown instead
        figures = {name: item for name, item in figures.items() if name != LOSSES_FIGURE}
    navigation = [("summary", "Summary")]
    certificate = certificate_section(run.metrics)
    if certificate is not None:
        navigation.append(("certificate", "Fidelity certificate"))
    sections: list[dict[str, Any]] = []
    for name, (anchor, heading) in TITLES.items():
        if name == LOSSES_FIGURE and exact and run.has_history:
            sections.append(_residual_section(run))
        elif name in figures:
            section = {
                "anchor": anchor,
                "heading": heading,
                "figures": [_figure(figures[name], run)],
            }
            if name == LOSSES_FIGURE and run.has_history:
                section["details"] = _history_details(run)
            sections.append(section)
        elif name == KERNELS_FIGURE and (line := _no_kernel_line(run)):
            sections.append({"anchor": anchor, "heading": heading, "lines": [line]})
    others = [_figure(item, run) for name, item in figures.items() if name not in TITLES]
    if others:
        sections.append({"anchor": "figures", "heading": "Other figures", "figures": others})
    navigation += [
        (s["anchor"], s["heading"]) for s in sections if s.get("figures") or s.get("table")
    ]
    config = _config_tables(run.config) if run.config is not None else None
    if config is not None:
        navigation.append(("config", "Configuration"))
    subtitle = " · ".join(
        part
        for part in (
            run.filter_spec and f"filter {run.filter_spec}",
            run.arch and f"arch {run.arch}",
            str(run.path),
        )
        if part
    )
    return render(
        "run.html.j2",
        title=title or f"Run report: {run.name}",
        subtitle=subtitle,
        navigation=navigation,
        footer=_footer(run),
        missing=run.missing,
        notes=notes,
        summary=_summary(run),
        certificate=certificate,
        sections=[
            {"lines": [], "table": None, "figures": [], "details": None, **s} for s in sections
        ],
        config=config,
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


def _summary(run: RunFiles) -> list[tuple[str, Cell]]:
    rows: list[tuple[str, Cell]] = []
    spec, canonical = run.filter_spec, run.canonical_filter
    if spec is not None:
        note = canonical if canonical and canonical != spec else ""
        rows.append(("Filter", Cell(spec, code=True, note=note)))
    data = lookup(run.config, "data")
    if isinstance(data, dict):
        rows.append(("Photos", Cell(_data_text(data))))
    if run.arch is not None:
        method = {"exact": "exact least-squares fit", "gradient": "gradient training"}
        rows.append(("Architecture", Cell(run.arch, note=method.get(run.method or "", ""))))
    if run.metrics is not None:
        rows += [(label, Cell(value)) for label, value in metric_rows(run.metrics)]
    if run.has_history:
        rows += [(label, Cell(value)) for label, value in _loss_rows(run)]
    return rows


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


def _loss_name(run: RunFiles) -> str:
    """The run's loss as a short name, ``"loss of unrecorded kind"`` when it cannot be told."""
    return LOSS_NAMES.get(run.loss or "", "unrecorded kind")


def _loss_rows(run: RunFiles) -> list[tuple[str, str]]:
    train, val = run.train_losses or [], run.val_losses or []
    if run.method == "exact":  # the residual section says it
        return []
    name = _loss_name(run)
    rows = [("Training loss", LOSS_LABELS.get(run.loss or "", "not recorded"))]
    rows.append((f"Final training loss ({name})", format_float(train[-1], ".4e")))
    if val:
        rows.append((f"Final validation loss ({name})", format_float(val[-1], ".4e")))
    return rows


# -- figures and configuration -----------------------------------------------------------------
def _figure(item: ReportFigure, run: RunFiles) -> Figure:
    caption = CAPTIONS.get(item.name, item.name)
    if item.name == LOSSES_FIGURE:
        caption = caption.format(loss=f"{_loss_name(run)} loss")
    if item.drawn:
        caption += (
            f" (Drawn for this report: {item.name} is missing from the run folder or unreadable.)"
        )
    figure = Figure(item.png, f"{item.name} of run {run.name}", caption)
    if item.name == VALIDATION_FIGURE and (width := _png_width(item.png)):
        figure.pixels = True
        figure.width = width * max(1, min(PIXEL_ZOOM, PAGE_WIDTH // width))
    return figure


def _png_width(png: bytes) -> int | None:
    """The width of a PNG image from its header, ``None`` when the header is short."""
    if len(png) < 24:
        return None
    width = int.from_bytes(png[16:20], "big")
    return width if width > 0 else None


def _history_details(run: RunFiles) -> tuple[str, Table]:
    """The losses per epoch, for a folded table."""
    train, val = run.train_losses or [], run.val_losses or []
    rows = [
        [
            Cell(str(epoch), numeric=True),
            Cell(format_float(train[epoch - 1], ".6g"), numeric=True),
            Cell(
                format_float(val[epoch - 1], ".6g") if epoch <= len(val) else MISSING, numeric=True
            ),
        ]
        for epoch in range(1, len(train) + 1)
    ]
    name = _loss_name(run)
    header = ["epoch", f"training loss ({name})", f"validation loss ({name})"]
    return f"Losses per epoch ({len(train)})", Table(header, rows)


def _residual_section(run: RunFiles) -> dict[str, Any]:
    """An exact fit's residual: what remains of the least-squares solve on both sides."""
    train, val = run.train_losses or [], run.val_losses or []
    stopped = lookup(run.metrics, "stopped")
    rows = [("Training residual (L1, mean absolute error)", Cell(format_float(train[-1], ".4e")))]
    if val:
        rows.append(
            ("Validation residual (L1, mean absolute error)", Cell(format_float(val[-1], ".4e")))
        )
    line = (
        f"The model was solved in closed form ({stopped or 'a least-squares fit'}), not "
        "trained epoch by epoch: there is no loss curve, only what the solve leaves over "
        "the training photos and the validation photos."
    )
    return {"anchor": "losses", "heading": "Residual of the fit", "lines": [line], "table": rows}


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


def _config_tables(config: dict[str, Any]) -> dict[str, Any]:
    """``config.json``: one table per group (data, model, train, resolved), scalars first."""
    scalars = [
        (key, Cell(_value_text(value), breaks=True))
        for key, value in config.items()
        if not isinstance(value, dict)
    ]
    groups = [
        (key, [(name, Cell(_value_text(item), breaks=True)) for name, item in value.items()])
        for key, value in config.items()
        if isinstance(value, dict)
    ]
    return {"scalars": scalars, "groups": groups}


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

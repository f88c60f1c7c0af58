"""What a finished run reports: its metrics record, its figures and its terminal summary.

Split from :mod:`img2img_filters.run.train`, which calls these once training is done.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from img2img_filters.certificate import certificate_for_model
from img2img_filters.run.folder import (
    KERNELS_FIGURE,
    LOSSES_FIGURE,
    PREDICTIONS_FIGURE,
    VALIDATION_FIGURE,
    RunFolder,
)
from img2img_filters.solve import kernel_error
from img2img_filters.solve.refine import RefineReport
from img2img_filters.train.config import TrainResult

__all__ = [
    "CERTIFICATE_IMAGES",
    "SUMMARY_WIDTH",
    "count_parameters",
    "draw_figures",
    "evaluate_run",
    "format_summary",
    "target_bit_depth",
]

#: Validation images the fidelity certificate measures at most (it keeps every error value).
CERTIFICATE_IMAGES = 2000


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def evaluate_run(
    network: nn.Module,
    val_set: Any,
    filter: Any,
    seconds: float,
    compute_metrics: Callable[..., dict[str, Any]],
    device: str,
    result: TrainResult,
    polish: RefineReport | None,
) -> dict[str, Any]:
    """A finished run's ``metrics.json`` record: the validation metrics and the certificate.

    Args:
        network: The trained model; ``(B, C_in, H, W) -> (B, C_out, H, W)``.
        val_set: The validation pairs.
        filter: The operator the targets come from (its spec and range are recorded).
        seconds: The run's wall time so far.
        compute_metrics: The metrics function (the caller's, so that it can be replaced).
        device: Where the model runs.
        result: The training outcome (epochs, stop reason, time).
        polish: The finish after gradient training, if any.

    Returns:
        The record: PSNR, SSIM and L1, the run's facts and ``"certificate"``.
    """
    metrics = dict(compute_metrics(network, val_set, device=device))
    summary = result.summary()
    refine = polish.as_dict() if polish is not None else None
    metrics.update(
        {
            # the fit or the training and its polish, without loading data
            "train_seconds": summary.get("seconds", 0.0) + (refine or {}).get("seconds", 0.0),
            "arch": network.config["arch"],
            "filter": filter.canonical,
            "filter_spec": filter.spec,
            "parameters": count_parameters(network),
            "seconds": seconds,
            "epochs": summary.get("epochs"),
            "best_epoch": summary.get("best_epoch"),
            "stopped": summary.get("stopped"),
            "refine": refine,
            "kernel_error": None,
        }
    )
    metrics["certificate"] = certificate_for_model(
        network,
        val_set,
        data_range=metrics["data_range"],
        bit_depth=target_bit_depth(filter),
        device=device,
        max_images=CERTIFICATE_IMAGES,
    )
    if filter.linear and getattr(network, "is_linear", False):
        metrics["kernel_error"] = kernel_error(network, filter)
    return metrics


def target_bit_depth(filter: Any) -> int | None:
    """The bits per value of a filter's targets, for the certificate's exact share.

    16 for a teacher's (or pairs') 16-bit outputs, ``None`` for float ones (no rounding
    step), else 8: the depth a filtered image is saved at.
    """
    dtype = getattr(filter, "output_dtype", None)
    if dtype is None:
        return 8
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return None
    return 16 if dtype.itemsize == 2 else 8


def draw_figures(
    folder: RunFolder,
    network: nn.Module,
    val_set: Any,
    filter: Any,
    train_losses: list[float],
    val_losses: list[float],
    loss: str,
    device: str,
) -> None:
    """The run's figures, from what training holds in memory (a report only reads them)."""
    from img2img_filters import viz  # matplotlib: loaded only when figures are drawn

    folder.write_figure(LOSSES_FIGURE, viz.plot_losses(train_losses, val_losses, loss=loss))
    if len(val_set):
        figure = viz.preview_predictions(network, val_set, num_images=4, device=device)
        folder.write_figure(PREDICTIONS_FIGURE, figure)
        photo = viz.preview_validation_photo(network, val_set, device=device)
        folder.write_figure(VALIDATION_FIGURE, photo)
    if filter.linear and getattr(network, "is_linear", False):
        folder.write_figure(KERNELS_FIGURE, viz.plot_kernels(network, filter))


#: Columns the summary table fits in (a classic terminal).
SUMMARY_WIDTH = 80


def _wrap(value: str, room: int) -> list[str]:
    """``value`` cut into lines of at most ``room`` characters; joined, they give ``value``.

    Lines end after a ``|``, ``,``, ``/`` or space where they can, anywhere where they must.
    """
    pieces = re.findall(r"[^|,/ ]*[|,/ ]?", value)
    lines = [""]
    for piece in filter(None, pieces):
        while len(piece) > room:  # longer than a line: cut anywhere
            if lines[-1]:
                lines.append("")
            lines[-1], piece = piece[:room], piece[room:]
            lines.append("")
        if len(lines[-1]) + len(piece) > room:
            lines.append("")
        lines[-1] += piece
    return [line for line in lines if line] or [""]


def format_summary(folder: Path, metrics: dict[str, Any], width: int = SUMMARY_WIDTH) -> str:
    """A small table of a run's results, for the terminal: ``width`` columns at most.

    Long values (the run folder's path, a chained filter) continue on the next lines.
    """
    rows = [
        ("run folder", str(folder)),
        ("filter", str(metrics.get("filter"))),
        ("architecture", f"{metrics.get('arch')} ({metrics.get('parameters')} parameters)"),
        ("epochs", f"{metrics.get('epochs')} ({metrics.get('stopped')})"),
        ("validation L1", f"{metrics.get('l1', float('nan')):.3e}"),
        (
            "validation PSNR",
            f"{metrics.get('psnr', float('nan')):.2f} dB (data range {metrics.get('data_range', 0):.4g})",
        ),
        ("validation SSIM", f"{metrics.get('ssim', float('nan')):.6f}"),
        ("time", f"{metrics.get('seconds', 0):.1f} s"),
    ]
    error = metrics.get("kernel_error")
    if error:
        rows.append(("kernel max error", f"{error['max_abs']:.3e}"))
    names = max(len(name) for name, _ in rows)
    room = max(8, width - names - 4)
    lines = []
    for name, value in rows:
        for number, part in enumerate(_wrap(value, room)):
            lines.append(f"  {(name if number == 0 else '').ljust(names)}  {part}".rstrip())
    rule = "  " + "-" * (max(len(line) for line in lines) - 2)
    return "\n".join([rule, *lines, rule])

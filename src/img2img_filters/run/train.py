"""A training run, end to end, in its own folder: data, model, training, metrics, figures.

:func:`train_run` writes a complete run folder (see :mod:`img2img_filters.run.folder`);
its figures are drawn here, once, from what training holds in memory. It never
imports the report package: :func:`img2img_filters.runs.train_run` adds the report.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from img2img_filters.auto import AutoChoice, choose_arch, default_model, fit_auto
from img2img_filters.certificate import certificate_for_model
from img2img_filters.checkpoint import save_model
from img2img_filters.data import load_filtered_dataset
from img2img_filters.distributed import setup_distributed
from img2img_filters.filters import CommandFilter, create_filter
from img2img_filters.metrics import compute_metrics
from img2img_filters.run.config import DataConfig, ModelConfig, config_record, resolved_train
from img2img_filters.run.folder import (
    CONFIG_FILE,
    KERNELS_FIGURE,
    LOSSES_FIGURE,
    METRICS_FILE,
    MODEL_FILE,
    PREDICTIONS_FIGURE,
    STATE_FILE,
    VALIDATION_FIGURE,
    RunFolder,
)
from img2img_filters.run.resume import RESUME_OVERRIDES, resume_config
from img2img_filters.solve import gauss_newton, kernel_error, lbfgs_refine
from img2img_filters.solve.refine import RefineReport
from img2img_filters.train import train_model
from img2img_filters.train.batches import all_reduce
from img2img_filters.train.config import TrainResult

__all__ = ["RESUME_OVERRIDES", "RunResult", "count_parameters", "format_summary", "train_run"]

_log = logging.getLogger(__name__)

#: Files whose presence means a folder already holds (part of) a run.
RUN_MARKERS = (MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE)

#: Validation images the fidelity certificate measures at most (it keeps every error value).
CERTIFICATE_IMAGES = 2000


@dataclass
class RunResult:
    """What a run produced."""

    folder: Path
    model: nn.Module
    train_losses: list[float]
    val_losses: list[float]
    metrics: dict[str, Any]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_run(
    out: str | Path,
    data: DataConfig | None = None,
    model: ModelConfig | None = None,
    train: dict[str, Any] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    figures: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train (or fit) a model for a filter and write a run folder (without its report).

    Args:
        out: The run folder.
        data: Photos and filter (default: the built-in photos, the study's Sobel).
        model: Architecture (default ``auto``).
        train: Options of :func:`img2img_filters.train_model` (``max_epochs``, ``batch_size``...).
        resume: Continue the interrupted run in ``out`` from its ``state.pt`` with the
            configuration in its ``config.json``; ``data`` and ``model`` are then
            ignored and of ``train`` only :data:`RESUME_OVERRIDES` apply. A finished
            run is continued only when ``max_epochs`` is above its own.
        overwrite: Replace the run in ``out``. Its files are set aside while the new run
            trains and restored if it fails; the folder's other files stay.
        figures: Draw the loss curves, predictions and kernels.
        log: Where the run's notices and its summary table go (default: notices to this
            module's logger at ``INFO``, the table to stdout with ``print``).

    Returns:
        The run's folder, model, losses and metrics.

    Raises:
        RuntimeError: If ``out`` holds a run (without ``overwrite``/``resume``), if a
            resumed run is finished, or if another process is writing to it.
        FileNotFoundError: If a file that a resume needs is missing (named).
        RunFolderError: If ``config.json`` or ``metrics.json`` of a resumed run is malformed.
    """
    folder = RunFolder(out)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other; choose one")
    if resume:
        data, model, train = resume_config(folder, train or {})
    data = data or DataConfig()
    model_config = model or ModelConfig()
    train = dict(train or {})
    rank, world, device = setup_distributed(train.get("device", "auto"))
    if world > 1:
        train["device"] = str(device)
    writer = rank == 0
    present = [name for name in RUN_MARKERS if folder.has(name)]
    if writer and present and not (resume or overwrite):
        raise RuntimeError(
            f"run folder {str(folder.path)!r} already holds a model or the start of a run "
            f"({', '.join(present)}); "
            "pass --resume to continue it, --overwrite to replace it, or choose another --out"
        )
    with (
        folder.lock() if writer else nullcontext(),
        folder.set_aside() if writer and overwrite else nullcontext(),
    ):
        return _train(
            folder, data, model_config, train, resume, figures, writer, device, log or _log.info,
            log or print,
        )  # fmt: skip


def _train(
    folder: RunFolder,
    data: DataConfig,
    model_config: ModelConfig,
    train: dict[str, Any],
    resume: bool,
    figures: bool,
    writer: bool,
    device: torch.device,
    log: Callable[[str], None],
    show: Callable[[str], None],
) -> RunResult:
    started = time.perf_counter()
    # a `cmd:` filter runs only when given in this call; a resumed run's recorded one reads its cache
    filter = None if data.targets else create_filter(data.filter, allow_commands=not resume)
    if isinstance(filter, CommandFilter):
        filter.timeout = float(data.teacher_timeout)
    train_set, val_set = load_filtered_dataset(
        data=data.data,
        filter=filter,
        targets=data.targets,
        val_fraction=data.val_fraction,
        seed=data.seed,
        crop_size=data.crop_size,
        limit=data.limit,
        download=data.download,
        progress=bool(train.get("progress", True)),
    )
    filter = filter or train_set.filter
    log(
        f"data: {len(train_set)} training and {len(val_set)} validation images "
        f"{train_set.image_size[0]}x{train_set.image_size[1]} from {data.data!r}; "
        f"filter {filter.describe()}"
    )
    if writer:
        folder.write_json(CONFIG_FILE, config_record(data, model_config, train))
    choice = None
    if model_config.arch == "auto":
        choice = choose_arch(filter, train_set)
        if choice.probe_line:
            log(choice.probe_line)
        log(f"arch auto: {choice.reason}")
        arch, options = choice.arch, {**choice.options, **model_config.options}
    else:
        arch, options = model_config.arch, dict(model_config.options)
    metadata = {
        "filter": filter.canonical,
        "data": data.data,
        "data_config": asdict(data),
        "method": choice.method if choice else "gradient",
    }
    polish: RefineReport | None = None  # the finish after gradient training, if any
    budget = train.get("time_budget")  # seconds for the whole run, counted from `started`
    if choice is not None and choice.method == "exact":
        network, result = fit_auto(
            train_set, val_set, choice, device=str(device), progress=train.get("progress", True),
            seconds=_time_left(budget, started),
        )  # fmt: skip
    else:
        network, result, polish = _gradient(
            folder, train_set, val_set, filter, arch, options, choice, train, metadata, resume,
            writer, device, log, started,
        )  # fmt: skip
    train_losses, val_losses = result.train_losses, result.val_losses
    seconds = time.perf_counter() - started
    if not writer:
        return RunResult(folder.path, network, train_losses, val_losses, {})
    metrics = _evaluate(
        network, val_set, filter, seconds, compute_metrics, str(device), result, polish
    )
    if choice is not None and choice.probe is not None:
        metrics["probe"] = {"line": choice.probe_line, **choice.probe}
        metrics["certificate"]["probe"] = metrics["probe"]
    save_model(network, folder.file(MODEL_FILE), **metadata, metrics=metrics)
    record = config_record(data, model_config, train)
    record["resolved"] = {
        "arch": arch,
        "options": network.config["options"],
        "method": metadata["method"],
        "loss": "l1" if metadata["method"] == "exact" else train.get("loss", "l1"),  # history's
        "filter": filter.canonical,
        "engine": result.engine,
        "engine_reason": result.engine_reason,
        "train": resolved_train(train),  # the options given over TrainConfig's defaults
    }
    if choice is not None:
        record["resolved"]["auto"] = choice.to_dict()
    folder.write_json(CONFIG_FILE, record)
    folder.write_history(train_losses, val_losses)
    if figures:
        losses = (train_losses, val_losses, record["resolved"]["loss"])
        _draw_figures(folder, network, val_set, filter, *losses, str(device))
    folder.write_json(METRICS_FILE, metrics)  # last: its presence marks a finished run
    show(format_summary(folder.path, metrics))
    return RunResult(folder.path, network, train_losses, val_losses, metrics)


def _gradient(
    folder: RunFolder,
    train_set: Any,
    val_set: Any,
    filter: Any,
    arch: str,
    options: dict[str, Any],
    choice: AutoChoice | None,
    train: dict[str, Any],
    metadata: dict[str, Any],
    resume: bool,
    writer: bool,
    device: torch.device,
    log: Callable[[str], None],
    started: float,
) -> tuple[nn.Module, TrainResult, RefineReport | None]:
    """Train by gradient (with its polish): the network, the training's result, the polish's.

    A time budget covers the whole run from ``started`` (``time.perf_counter()`` when the
    run began, data loading included): training gets what is left of it less the
    polish's share, and the polish what training leaves.
    """
    if choice is not None:
        for key, value in choice.train.items():
            train.setdefault(key, value)
    torch.manual_seed(int(train.get("seed", 0)))  # the same start for every process count
    network = default_model(filter, arch, options)
    refine = _refine_plan(network, choice)
    budget = train.get("time_budget")
    settings = dict(train)
    left = _time_left(budget, started)
    if left is not None:  # the polish takes the end of the budget
        # every process trains under the same budget (the least left), or they would part ways
        left = -all_reduce([-left], device, op="max")[0]
        share = refine["share"] if refine else 0.0
        settings["time_budget"] = max(left * (1.0 - share), _MIN_SECONDS)
    result = train_model(
        network,
        train_set,
        val_set,
        save_best=writer,
        save_path=folder.file(MODEL_FILE) if writer else None,
        state_path=str(folder.file(STATE_FILE)) if writer else None,
        resume=str(folder.file(STATE_FILE)) if resume else None,
        metadata=metadata,
        return_result=True,
        **settings,
    )
    polish = None
    if refine and writer:  # one process polishes the model it writes
        finish = gauss_newton if refine["method"] == "gauss-newton" else lbfgs_refine
        polish = finish(
            network,
            train_set,
            steps=refine["steps"],
            images=refine["images"],
            device=str(device),
            seconds=_time_left(budget, started),
            progress=bool(train.get("progress", True)),
        )
        log(
            "{method} polish: MSE {loss_before:.3e} -> {loss_after:.3e} in {iterations} "
            "iterations, {seconds:.1f} s".format(**polish.as_dict())
            + (" (time budget reached)" if polish.out_of_time else "")
        )
    return network, result, polish


#: The finish of a linear model trained by gradient: its MSE is a quadratic whose weakest
#: directions (how the kernel splits between the correlated R, G and B) first-order methods
#: in float32 never resolve; a Gauss-Newton step in float64 lands on its exact minimum.
#: ``share``: the fraction of what a time budget leaves after data loading that it keeps.
LINEAR_REFINE = {"method": "gauss-newton", "steps": 3, "images": 16, "share": 0.1}

#: The least time budget training is given when the run has (nearly) none left: it then
#: stops after its first step.
_MIN_SECONDS = 1e-3


def _time_left(budget: float | None, started: float) -> float | None:
    """Seconds left of a run's ``budget`` begun at ``started`` (``None``: no budget)."""
    if budget is None:
        return None
    return max(0.0, float(budget) - (time.perf_counter() - started))


def _refine_plan(network: nn.Module, choice: AutoChoice | None) -> dict[str, Any]:
    """The polish after gradient training: always for linear models, else as ``auto`` chose."""
    if getattr(network, "is_linear", False):
        plan = dict(LINEAR_REFINE)
        if count_parameters(network) > 1000:  # large kernels: fewer photos bound the Jacobian
            plan["images"] = 4
        return plan
    if choice is not None and choice.refine:
        return {"method": "l-bfgs", "share": 0.0, **choice.refine}
    return {}


def _evaluate(
    network: nn.Module,
    val_set: Any,
    filter: Any,
    seconds: float,
    compute_metrics: Callable[..., dict[str, Any]],
    device: str,
    result: TrainResult,
    polish: RefineReport | None,
) -> dict[str, Any]:
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


def _draw_figures(
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

"""A training run, end to end, in its own folder: data, model, training, metrics, figures.

:func:`train_run` writes a complete run folder (see :mod:`img2img_filters.run.folder`);
its figures are drawn once (:mod:`img2img_filters.run.outcome`), from what training holds
in memory. It never imports the report package: :func:`img2img_filters.runs.train_run`
adds the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from img2img_filters.auto import AutoChoice, choose_arch, default_model, fit_auto
from img2img_filters.checkpoint import save_model
from img2img_filters.data import load_filtered_dataset
from img2img_filters.distributed import setup_distributed
from img2img_filters.filters import CommandFilter, create_filter
from img2img_filters.metrics import compute_metrics
from img2img_filters.run.config import DataConfig, ModelConfig, config_record, resolved_train
from img2img_filters.run.folder import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    RunFolder,
)
from img2img_filters.run.outcome import (
    SUMMARY_WIDTH,
    count_parameters,
    draw_figures,
    evaluate_run,
    format_summary,
    target_bit_depth,
)
from img2img_filters.run.resume import RESUME_OVERRIDES, resume_config
from img2img_filters.run.start import start_network
from img2img_filters.solve import gauss_newton, lbfgs_refine
from img2img_filters.solve.refine import RefineReport
from img2img_filters.train import train_model
from img2img_filters.train.batches import all_reduce
from img2img_filters.train.config import TrainResult

__all__ = [
    "RESUME_OVERRIDES",
    "SUMMARY_WIDTH",
    "RunResult",
    "count_parameters",
    "format_summary",
    "target_bit_depth",
    "train_run",
]

_log = logging.getLogger(__name__)

#: Files whose presence means a folder already holds (part of) a run.
RUN_MARKERS = (MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE)


@dataclass
class RunResult:
    """What a run produced."""

    folder: Path
    model: nn.Module
    train_losses: list[float]
    val_losses: list[float]
    metrics: dict[str, Any]


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


def _load_data(
    data: DataConfig, resume: bool, progress: bool, log: Callable[[str], None]
) -> tuple[Any, Any, Any]:
    """The filter (or teacher), the training and the validation datasets; logs one line."""
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
        progress=progress,
    )
    filter = filter or train_set.filter
    log(
        f"data: {len(train_set)} training and {len(val_set)} validation images "
        f"{train_set.image_size[0]}x{train_set.image_size[1]} from {data.data!r}; "
        f"filter {filter.describe()}"
    )
    return filter, train_set, val_set


def _choose(
    model_config: ModelConfig, filter: Any, train_set: Any, log: Callable[[str], None]
) -> tuple[AutoChoice | None, str, dict[str, Any]]:
    """``(auto's choice or None, arch, options)``; ``auto`` logs what it chose and why."""
    if model_config.arch != "auto":
        return None, model_config.arch, dict(model_config.options)
    choice = choose_arch(filter, train_set)
    if choice.probe_line:
        log(choice.probe_line)
    log(f"arch auto: {choice.reason}")
    if choice.method == "exact" and model_config.options:  # they would be ignored
        raise ValueError(
            f"options {sorted(model_config.options)}: arch auto fits {filter.describe()} "
            f"exactly ({choice.reason}) and takes no options; name an architecture "
            f"(e.g. ModelConfig(arch={choice.arch!r}, ...)) to set them"
        )
    return choice, choice.arch, {**choice.options, **model_config.options}


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
    filter, train_set, val_set = _load_data(data, resume, bool(train.get("progress", True)), log)
    if writer:
        folder.write_json(CONFIG_FILE, config_record(data, model_config, train))
    choice, arch, options = _choose(model_config, filter, train_set, log)
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
    metrics = evaluate_run(
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
        draw_figures(folder, network, val_set, filter, *losses, str(device))
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
    budget = train.get("time_budget")
    if not resume:  # the head's start is auto's; a stretch is always pretrained
        left = _time_left(budget, started)
        seed = int(train.get("seed", 0))
        start_network(network, train_set, left, seed, log, head=choice is not None, device=device)
    refine = _refine_plan(network, choice)
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

"""The training loop: the study's recipe (L1, Adam, cosine annealing, early stopping), done right.

:func:`fit` reads top to bottom: the optimiser and schedule, an engine chosen once
(:func:`~img2img_filters.train.engines.choose_engine`: how each step runs), then epochs of
steps, a validation pass, the best weights kept, early stopping, and the
checkpointer's files (:class:`~img2img_filters.train.checkpointer.Checkpointer`).
:func:`train_model` is the study's function around it.

Datasets with a ``batch`` method (:class:`~img2img_filters.data.FilteredDataset`,
:class:`~img2img_filters.data.FolderCrops`) are drawn a whole batch at a time from their
uint8 photos and filtered on the training device; any other ``Dataset`` of
``(input, target)`` pairs goes through a ``DataLoader``. Every epoch's order is
drawn from ``(seed, epoch)`` alone, so a run resumed from the state saved at the
end of an epoch continues exactly as if it had never stopped. The next batch is
made in a background thread while the model trains (when the process has a core
to spare and the engine allows it). On a GPU the loss is read back every few
steps, not every step, so the device is never made to wait. Under ``torchrun``
each process trains on its shard of every batch; losses are all-reduced, and
only rank 0 writes.

What it tells goes through :mod:`logging` (the ``img2img_filters.train.loop`` logger): one
line per epoch at ``INFO`` whatever ``progress`` says, and notices; ``progress`` adds a
bar per epoch, shown only when stderr is a terminal.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import closing
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from img2img_filters.backends.engine import Engine, process_group
from img2img_filters.devices import resolve_device
from img2img_filters.train.batches import (
    all_reduce,
    check_pair,
    iterate_batches,
    model_channels,
    plan_epoch,
    set_epoch,
)
from img2img_filters.train.checkpointer import Checkpointer
from img2img_filters.train.config import (
    Progress,
    TrainConfig,
    TrainingDivergedError,
    TrainResult,
)
from img2img_filters.train.engines import choose_engine
from img2img_filters.train.losses import LOSSES
from img2img_filters.train.monitor import EpochLosses

__all__ = ["fit", "train_model"]

log = logging.getLogger(__name__)


# -- the loop ------------------------------------------------------------------------------------


# Over 80 lines on purpose: the study's recipe read top to bottom in one place (epochs,
# steps, validation, early stopping, checkpoints); the engines and the checkpointer do the rest.
def fit(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    config: TrainConfig,
    *,
    save_path: str | Path | None = None,
) -> TrainResult:
    """Train ``model`` in place by ``config``; the study's recipe with its best weights kept.

    Args:
        model: The network; ends with the weights of its best validation epoch, in eval mode.
        train_dataset: ``(input, target)`` pairs: ``(3, H, W)`` and ``(C, H, W)`` float32.
        val_dataset: Same, for validation and early stopping.
        config: The settings.
        save_path: Save the best model here whenever the validation loss improves.

    Returns:
        The losses per epoch, how training ended and which engine ran the steps.
    """
    _check_inputs(model, train_dataset, val_dataset)
    _check_save_path(save_path)
    device = resolve_device(config.device)
    rank, world = process_group()
    if config.batch_size < world:
        raise ValueError(
            f"batch_size ({config.batch_size}) must be at least the number of processes ({world})"
        )
    if config.amp and device.type != "cuda":
        log.warning("amp='bf16' applies on CUDA only; training in float32")
    channels = model_channels(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _adam(model, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.max_epochs, eta_min=config.min_learning_rate
    )
    checkpointer = Checkpointer(config, train_dataset, save_path, writer=rank == 0)
    progress, best_state = checkpointer.resume(model, optimizer, scheduler, device)
    model.to(device)
    steps_per_epoch = math.ceil(len(train_dataset) / config.batch_size)
    photos_per_step = min(config.batch_size, len(train_dataset)) // world  # in each process
    engine = choose_engine(
        model,
        optimizer,
        LOSSES[config.loss],
        config,
        device,
        world,
        planned_steps=config.max_epochs * steps_per_epoch,  # the whole run's: a resume agrees
        pixels_per_step=photos_per_step * _pixels(train_dataset),
    )
    if rank == 0:
        log.info("training engine: %s (%s)", engine.name, engine.reason)
    started = time.perf_counter()
    show, first = config.progress and rank == 0, progress.epoch + 1
    with engine.threads():
        try:
            while progress.epoch < config.max_epochs and not progress.stopped:
                epoch = progress.epoch + 1
                check = channels if epoch == first else None  # the data against the model
                train_loss = _train_epoch(
                    engine, train_dataset, config, epoch, progress, started, check, show
                )
                scheduler.step()
                val_loss = _evaluate(engine, val_dataset, config)
                if not math.isfinite(val_loss):
                    raise TrainingDivergedError(
                        f"the validation loss became {val_loss} at epoch {epoch}"
                    )
                progress.train_losses.append(train_loss)
                progress.val_losses.append(val_loss)
                progress.epoch = epoch
                if val_loss < progress.best_val:
                    progress.best_val, progress.best_epoch, progress.bad_epochs = val_loss, epoch, 0
                    best_state = {
                        k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                    }
                    checkpointer.save_best(model, epoch, val_loss)
                else:
                    progress.bad_epochs += 1
                    patience = config.early_stopping_patience
                    if patience and progress.bad_epochs >= patience:
                        progress.stopped = (
                            "early stopping: no better validation loss for "
                            f"{progress.bad_epochs} epochs"
                        )
                checkpointer.save_state(engine, scheduler, progress, best_state)
                if rank == 0:  # a plain line per epoch, bars or not (a log of batch jobs)
                    log.info(
                        "epoch %3d/%d  train %.6g  val %.6g  lr %.3g",
                        epoch,
                        config.max_epochs,
                        train_loss,
                        val_loss,
                        scheduler.get_last_lr()[0],
                    )
        except KeyboardInterrupt:
            message = checkpointer.interrupted(progress)
            if message:
                log.warning(message)
            raise
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        train_losses=list(progress.train_losses),
        val_losses=list(progress.val_losses),
        epochs=progress.epoch,
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_val,
        stopped=progress.stopped or "max_epochs reached",
        seconds=time.perf_counter() - started,
        engine=engine.name,
        engine_reason=engine.reason,
    )


def _train_epoch(
    engine: Engine,
    dataset: Any,
    config: TrainConfig,
    epoch: int,
    progress: Progress,
    started: float,
    check: tuple[int, int] | None,
    show: bool,
) -> float:
    """One epoch of steps; returns its mean training loss over all processes.

    Checks the first batch against the model's ``check`` channels (unless ``None``), and
    sets ``progress.stopped`` when the time budget runs out (checked when losses are read).
    """
    device = engine.device
    engine.train()
    set_epoch(dataset, epoch)
    steps = plan_epoch(len(dataset), config.batch_size, config.seed, epoch, shuffle=True)
    bar = tqdm(
        total=len(steps),
        desc=f"epoch {epoch}/{config.max_epochs}",
        disable=None if show else True,  # None: a bar only when stderr is a terminal
        leave=False,
        unit="batch",
    )
    losses = EpochLosses(device, epoch, bar)
    # closing: stops the batch thread or DataLoader workers at once, whatever happens.
    batches = iterate_batches(dataset, config, device, steps, background=not engine.inline_batches)
    with closing(batches):
        for number, (step, (inputs, targets)) in enumerate(zip(steps, batches, strict=True), 1):
            if number == 1 and check is not None:
                check_pair(inputs, targets, check)
            loss = engine.step(inputs, targets, step.scale)
            if losses.add(number, loss, step.count) or number == len(steps):
                losses.read()
                if config.time_budget is not None:
                    (elapsed,) = all_reduce([time.perf_counter() - started], device, op="max")
                    if elapsed > config.time_budget:
                        progress.stopped = f"time budget of {config.time_budget:g} s reached"
                        break
    losses.read()
    bar.close()
    total, count = all_reduce([losses.total, float(losses.count)], device)
    return total / max(count, 1)


def _evaluate(engine: Engine, dataset: Any, config: TrainConfig) -> float:
    """The mean validation loss over all processes (each evaluates its shard)."""
    engine.eval()
    set_epoch(dataset, 0)
    steps = plan_epoch(len(dataset), config.batch_size, config.seed, 0, shuffle=False)
    losses: list[torch.Tensor] = []
    count = 0
    with closing(iterate_batches(dataset, config, engine.device, steps)) as batches:
        for step, (inputs, targets) in zip(steps, batches, strict=True):
            if step.count:
                losses.append(engine.evaluate(inputs, targets).double() * step.count)
                count += step.count
    total = float(torch.stack(losses).sum()) if losses else 0.0
    total, count = all_reduce([total, float(count)], engine.device)
    return total / max(count, 1)


def _adam(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, in its fused form (one kernel for all parameters) where this PyTorch has it."""
    parameters = list(model.parameters())
    try:
        return torch.optim.Adam(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )


def _pixels(dataset: Any) -> int:
    """Pixels of one photo of ``dataset`` (its ``image_size``, else its first item's; 0: unknown)."""
    size = getattr(dataset, "image_size", None)
    if size is None:
        shape = getattr(dataset[0][0], "shape", ())  # checked against the model later
        size = tuple(shape[-2:]) if len(shape) >= 2 else (0, 0)
    return int(size[0]) * int(size[1])


def _check_inputs(model: nn.Module, train_dataset: Any, val_dataset: Any) -> None:
    """The model's and the datasets' types, and that the datasets are not empty."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    for name, dataset in (("train_dataset", train_dataset), ("val_dataset", val_dataset)):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"{name} must be a torch Dataset of (input, target); got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError(f"{name} is empty")


def _check_save_path(save_path: str | Path | None) -> None:
    """A model file's suffix: ``.safetensors``, ``.pt`` or ``.pth``."""
    if save_path is not None and Path(save_path).suffix.lower() not in (
        ".safetensors",
        ".pt",
        ".pth",
    ):
        raise ValueError(f"save_path must end in .safetensors, .pt or .pth; got {str(save_path)!r}")


# -- the study's function ------------------------------------------------------------------------


def train_model(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    max_epochs: int = TrainConfig.max_epochs,
    early_stopping_patience: int = TrainConfig.early_stopping_patience,
    batch_size: int = TrainConfig.batch_size,
    learning_rate: float = TrainConfig.learning_rate,
    save_best: bool = False,
    save_path: str | Path | None = None,
    return_result: bool = False,
    **options: Any,
) -> tuple[list[float], list[float]] | TrainResult:
    """Train a model to imitate a filter: L1 loss, Adam, cosine annealing, early stopping.

    The study's function: it builds a :class:`TrainConfig` and calls :func:`fit`.

    Args:
        model: The network (e.g. from :func:`img2img_filters.create_img2img_model`); trained in place.
        train_dataset: ``(input, target)`` pairs: ``(3, H, W)`` and ``(C, H, W)`` float32.
        val_dataset: Same, for validation and early stopping.
        max_epochs: Epochs at most; the cosine schedule spans them.
        early_stopping_patience: Stop after this many epochs without a better
            validation loss (0: never stop early).
        batch_size: Images per optimisation step (across all processes under ``torchrun``).
        learning_rate: Adam's initial learning rate.
        save_best: Save the model whenever the validation loss improves.
        save_path: Where (``.safetensors`` native, ``.pt``/``.pth`` accepted);
            required with ``save_best``.
        return_result: Return the whole :class:`TrainResult` instead of the two loss lists.
        **options: Fields of :class:`TrainConfig`: ``device="auto"``, ``seed=0``,
            ``progress=True``, ``num_workers=0``, ``worker_start``, ``loss="l1"``,
            ``time_budget``, ``state_path`` (resumable state after every epoch),
            ``resume`` (a state file or run folder), ``metadata`` (saved with the
            best model), ``amp``, ``channels_last``, ``compile``, ``engine``
            (``"auto"``, ``"eager"``, ``"ddp"``, ``"opencv"``, ``"fused"``,
            ``"compile"``), ``weight_decay``, ``min_learning_rate``.

    Returns:
        ``(train_losses, val_losses)``: per-epoch mean losses, weighted by batch size
        (the :class:`TrainResult` with ``return_result=True``). The model ends with the
        weights of its best validation epoch, in eval mode; ``model.training_summary``
        (kept for the study's notebook) is the result's :meth:`~TrainResult.summary`.

    Raises:
        ValueError: For a bad argument or incompatible data (message names it), a forced
            ``engine`` this run cannot use, or a resume whose architecture, filter, data or
            settings differ (named).
        TrainingDivergedError: When the loss becomes NaN or Inf (epoch and step named);
            the last good state and best model stay on disk.
        KeyboardInterrupt: After saving the state of the last finished epoch.
    """
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"train_model got an unknown option {unknown[0]!r}; options are {sorted(known)}"
        )
    config = TrainConfig(
        max_epochs=max_epochs,
        early_stopping_patience=early_stopping_patience,
        batch_size=batch_size,
        learning_rate=learning_rate,
        **options,
    )
    if save_best and save_path is None:
        raise ValueError("save_path is required when save_best=True")
    _check_save_path(save_path)
    result = fit(
        model, train_dataset, val_dataset, config, save_path=save_path if save_best else None
    )
    model.training_summary = result.summary()
    return result if return_result else (result.train_losses, result.val_losses)

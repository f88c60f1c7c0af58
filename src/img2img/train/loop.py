"""The training loop: the study's recipe (L1, Adam, cosine annealing, early stopping), done right.

The loop reads top to bottom in :func:`train_model`. Datasets with a ``batch``
method (:class:`~img2img.data.FilteredDataset`, :class:`~img2img.data.FolderCrops`)
are drawn a whole batch at a time from their uint8 photos and filtered on the
training device; any other ``Dataset`` of ``(input, target)`` pairs goes through
a ``DataLoader``. Every epoch's order is drawn from ``(seed, epoch)`` alone, so a
run resumed from the state saved at the end of an epoch continues exactly as if
it had never stopped.

Speed on the CPU comes from choices that change nothing of what is computed:
convolutions with very few channels run through OpenCV (:mod:`img2img.cpuconv`:
PyTorch's own are slow there), the targets are made by the filters' OpenCV
paths, the next batch is made in a background thread while the model trains
(when the process has a core to spare: not for ``torchrun`` processes that
already share out the cores),
the L1 loss and Adam run fused, and a network made only of such convolutions
trains with one PyTorch thread (its OpenMP threads would spin on the cores
OpenCV and the batch thread use). With ``compile=True`` on the CPU, such a
network made as a plain chain (the study's) trains instead as fused loops compiled
from it (:mod:`img2img.flatconv`), with all threads and batches made inline
(under ``torchrun``, gradients averaged after each backward pass). On
a GPU the loss is read back every few steps, not every step, so the device is
never made to wait. Under ``torchrun`` each process trains on its shard of every
batch with ``DistributedDataParallel``; losses are all-reduced, and only rank 0
writes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from img2img.checkpoint import save_model
from img2img.cpuconv import only_tiny_convs, tiny_conv_mode, torch_threads
from img2img.devices import resolve_device
from img2img.flatconv import SUM_LOSSES, FusedTrainer, fusable_chain
from img2img.train.batches import (
    all_reduce,
    average_gradients,
    broadcast_parameters,
    check_pair,
    iterate_batches,
    model_channels,
    plan_epoch,
    process_group,
    set_epoch,
)
from img2img.train.config import CUDA_CHECK_EVERY, Progress, TrainConfig, TrainingDivergedError
from img2img.train.losses import LOSSES
from img2img.train.state import describe_data, load_state, save_state, state_file

__all__ = ["train_model"]


# -- the running loss ----------------------------------------------------------------------------


class _Losses:
    """The training losses of one epoch, read back from the device in groups of steps.

    Reading a loss forces the device to finish its queue; on a GPU that is done
    every :data:`CUDA_CHECK_EVERY` steps, on the CPU (where it costs nothing)
    every step. Each read checks for NaN and Inf (the first bad step is named) and
    the time budget, with the same outcome on every process.
    """

    def __init__(self, device: torch.device, epoch: int, bar: Any) -> None:
        self.device, self.epoch, self.bar = device, epoch, bar
        self.every = CUDA_CHECK_EVERY if device.type == "cuda" else 1
        self.pending: list[tuple[int, torch.Tensor, int]] = []
        self.total, self.count = 0.0, 0

    def add(self, step: int, loss: torch.Tensor, count: int) -> bool:
        """Record a step's mean loss over ``count`` items; ``True`` when it is time to :meth:`read`."""
        self.pending.append((step, loss.detach(), count))
        return len(self.pending) >= self.every

    def read(self) -> None:
        """Bring the pending losses back, add them up and check them; update the bar."""
        if not self.pending:
            return
        values = torch.stack([loss for _, loss, _ in self.pending]).double()
        counts = [count for _, _, count in self.pending]
        bad = (~torch.isfinite(values)).double()
        _, world = process_group()
        if world > 1:
            dist.all_reduce(bad)
        flags = bad.tolist()
        if any(flags):
            index = next(i for i, flag in enumerate(flags) if flag)
            step = self.pending[index][0]
            raise TrainingDivergedError(
                f"the training loss became {float(values[index])} at epoch {self.epoch}, "
                f"step {step}; lower the learning rate. The last good state and best model "
                "are kept."
            )
        self.total += float(sum(v * c for v, c in zip(values.tolist(), counts, strict=True)))
        self.count += sum(counts)
        self.bar.update(len(self.pending))
        if self.count:
            self.bar.set_postfix(loss=f"{self.total / self.count:.4g}", refresh=False)
        self.pending.clear()


# -- evaluation ----------------------------------------------------------------------------------


def _evaluate(
    model: nn.Module,
    dataset: Any,
    config: TrainConfig,
    device: torch.device,
    loss_fn: Callable,
    fast: bool,
) -> float:
    """The mean validation loss over all processes (each evaluates its shard)."""
    model.eval()
    set_epoch(dataset, 0)
    steps = plan_epoch(len(dataset), config.batch_size, config.seed, 0, shuffle=False)
    totals = [0.0, 0.0]
    losses: list[torch.Tensor] = []
    with torch.no_grad(), closing(iterate_batches(dataset, config, device, steps)) as batches:
        for step, (inputs, targets) in zip(steps, batches, strict=True):
            if step.count:
                with tiny_conv_mode(fast):
                    outputs = model(inputs).float()
                losses.append(loss_fn(outputs, targets).double() * step.count)
                totals[1] += step.count
    if losses:
        totals[0] = float(torch.stack(losses).sum())
    total, count = all_reduce(totals, device)
    return total / max(count, 1)


# -- the loop ------------------------------------------------------------------------------------


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


def train_model(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    max_epochs: int = 100,
    early_stopping_patience: int = 5,
    batch_size: int = 128,
    learning_rate: float = 0.001,
    save_best: bool = False,
    save_path: str | Path | None = None,
    **options: Any,
) -> tuple[list[float], list[float]]:
    """Train a model to imitate a filter: L1 loss, Adam, cosine annealing, early stopping.

    Args:
        model: The network (e.g. from :func:`img2img.create_img2img_model`); trained in place.
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
        **options: Fields of :class:`TrainConfig`: ``device="auto"``, ``seed=0``,
            ``progress=True``, ``num_workers=0``, ``worker_start``, ``loss="l1"``,
            ``time_budget``, ``state_path`` (resumable state after every epoch),
            ``resume`` (a state file or run folder), ``metadata`` (saved with the
            best model), ``amp``, ``channels_last``, ``compile``, ``weight_decay``,
            ``min_learning_rate``.

    Returns:
        ``(train_losses, val_losses)``: per-epoch mean losses, weighted by batch size.
        The model ends with the weights of its best validation epoch, in eval mode;
        ``model.training_summary`` says how training ended.

    Raises:
        ValueError: For a bad argument or incompatible data (message names it), or a
            resume whose architecture, filter, data or settings differ (named).
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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    for name, dataset in (("train_dataset", train_dataset), ("val_dataset", val_dataset)):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"{name} must be a torch Dataset of (input, target); got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError(f"{name} is empty")
    if save_best and save_path is None:
        raise ValueError("save_path is required when save_best=True")
    if save_path is not None and Path(save_path).suffix.lower() not in (
        ".safetensors",
        ".pt",
        ".pth",
    ):
        raise ValueError(f"save_path must end in .safetensors, .pt or .pth; got {str(save_path)!r}")

    device = resolve_device(config.device)
    rank, world = process_group()
    if config.batch_size < world:
        raise ValueError(
            f"batch_size ({config.batch_size}) must be at least the number of processes ({world})"
        )
    on_cuda = device.type == "cuda"
    if config.amp and not on_cuda:
        warnings.warn("amp='bf16' applies on CUDA only; training in float32", stacklevel=2)
    channels = model_channels(model)
    data_record = describe_data(train_dataset)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _adam(model, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.max_epochs, eta_min=config.min_learning_rate
    )
    progress = Progress(train_losses=[], val_losses=[])
    best_state: dict[str, torch.Tensor] | None = None
    if config.resume:
        progress, best_state = load_state(
            state_file(config.resume), model, optimizer, scheduler, config, data_record, device
        )
        model.to(device)
    # compile=True on the CPU: a chain of tiny convolutions trains as fused loops
    # (img2img.flatconv); any other network is handed to torch.compile whole.
    chain = (
        fusable_chain(model)
        if config.compile and device.type == "cpu" and config.loss in SUM_LOSSES
        else None
    )
    network: nn.Module = model
    if world > 1 and chain is None:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if on_cuda else None
        )
    elif world > 1:  # fused loops: gradients averaged by hand after each backward pass
        broadcast_parameters(model)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=bool(config.amp) and on_cuda
    )
    loss_fn = LOSSES[config.loss]
    if config.compile and chain is None:
        network = torch.compile(network)
    evaluator = network if world == 1 else model  # evaluation needs no gradient exchange
    # Few-channel convolutions run through OpenCV on the CPU (not under torch.compile).
    fast = device.type == "cpu" and (chain is not None or not config.compile)

    def eager_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with tiny_conv_mode(fast), autocast:
            outputs = network(inputs)
        return loss_fn(outputs.float(), targets)

    fused = FusedTrainer(chain, config.loss, eager_loss) if chain is not None else None
    metadata = dict(config.metadata or {})
    state_path = Path(config.state_path) if config.state_path else None
    writer = rank == 0
    started = time.perf_counter()
    checked = False

    from tqdm.auto import tqdm

    # A network of tiny convolutions trains with one PyTorch thread (see torch_threads);
    # its fused loops (compile=True) with all of them.
    with torch_threads(1 if fast and fused is None and only_tiny_convs(model) else None):
        try:
            while progress.epoch < config.max_epochs and not progress.stopped:
                epoch = progress.epoch + 1
                network.train()
                set_epoch(train_dataset, epoch)
                steps = plan_epoch(len(train_dataset), config.batch_size, config.seed, epoch, True)
                bar = tqdm(
                    total=len(steps),
                    desc=f"epoch {epoch}/{config.max_epochs}",
                    disable=None
                    if config.progress and writer
                    else True,  # None: only on a terminal
                    leave=False,
                    unit="batch",
                )
                losses = _Losses(device, epoch, bar)
                # closing: stops the batch thread or DataLoader workers at once, whatever happens.
                # The fused loops hold the interpreter lock and use every core: no batch thread.
                inline = fused is not None and fused.failed is None
                batches = iterate_batches(
                    train_dataset, config, device, steps, background=not inline
                )
                with closing(batches):
                    for number, (step, (inputs, targets)) in enumerate(
                        zip(steps, batches, strict=True), start=1
                    ):
                        if not checked:
                            check_pair(inputs, targets, channels)
                            checked = True
                        if config.channels_last:
                            inputs = inputs.contiguous(memory_format=torch.channels_last)
                        loss = (fused or eager_loss)(inputs, targets)
                        optimizer.zero_grad(set_to_none=True)
                        (loss if step.scale == 1.0 else loss * step.scale).backward()
                        if chain is not None:
                            average_gradients(model)
                        optimizer.step()
                        if losses.add(number, loss, step.count) or number == len(steps):
                            losses.read()
                            if config.time_budget is not None:
                                (elapsed,) = all_reduce(
                                    [time.perf_counter() - started], device, op="max"
                                )
                                if elapsed > config.time_budget:
                                    progress.stopped = (
                                        f"time budget of {config.time_budget:g} s reached"
                                    )
                                    break
                losses.read()
                bar.close()
                scheduler.step()
                total, count = all_reduce([losses.total, float(losses.count)], device)
                train_loss = total / max(count, 1)
                val_loss = _evaluate(evaluator, val_dataset, config, device, loss_fn, fast)
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
                    if save_best and writer:
                        save_model(
                            model,
                            save_path,
                            **metadata,
                            epoch=epoch,
                            val_loss=val_loss,
                            train_config={
                                k: v
                                for k, v in asdict(config).items()
                                if k not in ("metadata", "resume")
                            },
                        )
                else:
                    progress.bad_epochs += 1
                    if (
                        config.early_stopping_patience
                        and progress.bad_epochs >= config.early_stopping_patience
                    ):
                        progress.stopped = (
                            "early stopping: no better validation loss for "
                            f"{progress.bad_epochs} epochs"
                        )
                if state_path is not None and writer:
                    save_state(
                        state_path,
                        model,
                        optimizer,
                        scheduler,
                        progress,
                        config,
                        best_state,
                        data_record,
                        device,
                    )
                if config.progress and writer:
                    tqdm.write(
                        f"epoch {epoch:3d}/{config.max_epochs}  train {train_loss:.6g}  "
                        f"val {val_loss:.6g}  lr {scheduler.get_last_lr()[0]:.3g}"
                    )
        except KeyboardInterrupt:
            if writer and state_path is not None:
                tqdm.write(
                    f"interrupted: the state of epoch {progress.epoch} is saved in {state_path}; "
                    "resume with resume=<that file> (`img2img train --resume RUN_DIR`)"
                )
            raise
    model.training_summary = {
        "epochs": progress.epoch,
        "best_epoch": progress.best_epoch,
        "best_val_loss": progress.best_val,
        "stopped": progress.stopped or "max_epochs reached",
        "seconds": time.perf_counter() - started,
    }
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return list(progress.train_losses), list(progress.val_losses)

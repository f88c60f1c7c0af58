"""Gradient training: the study's recipe (L1, Adam, cosine annealing, early stopping), done right.

The loop reads top to bottom in :func:`train_model`. Datasets with a ``batch``
method (``FilteredDataset``) are drawn a whole batch at a time from their uint8
photos and filtered on the training device; any other ``Dataset`` of
``(input, target)`` pairs goes through a ``DataLoader``. Every epoch's order is
drawn from ``(seed, epoch)`` alone, so a run resumed from the state saved at the
end of an epoch continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from img2img.checkpoint import atomic_write, safe_torch_load, save_model
from img2img.devices import resolve_device

__all__ = ["TrainConfig", "TrainingDivergedError", "train_model"]

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "mse": F.mse_loss,
}


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the message names the epoch and step."""


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained (written into each run and checkpoint)."""

    max_epochs: int = 100  # epochs at most; cosine annealing spans them
    early_stopping_patience: int = 5  # epochs without a better validation loss before stopping
    batch_size: int = 128  # images per optimisation step (the global batch across processes)
    learning_rate: float = 0.001  # Adam's initial learning rate
    loss: str = "l1"  # "l1" (the study's) or "mse"
    weight_decay: float = 0.0  # Adam's weight decay
    min_learning_rate: float = 0.0  # the cosine schedule's floor
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
    seed: int = 0  # initialisation (when reset), epoch order
    progress: bool = True  # a tqdm bar per epoch with the running loss
    num_workers: int = 0  # processes that make batches (useful for OpenCV filters)
    time_budget: float | None = None  # seconds of training at most (checked every step)
    amp: str | None = None  # "bf16": mixed precision on CUDA
    channels_last: bool = False  # memory format on CUDA
    compile: bool = False  # torch.compile the model
    state_path: str | None = None  # resumable state written after every epoch
    resume: str | None = None  # a state file (or a run folder holding state.pt) to resume from
    metadata: dict | None = None  # extras saved with the best model (filter spec, data, ...)

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if (
            isinstance(self.early_stopping_patience, bool)
            or not isinstance(self.early_stopping_patience, int)
            or self.early_stopping_patience < 0
        ):
            raise ValueError(
                "early_stopping_patience must be a non-negative integer; "
                f"got {self.early_stopping_patience!r}"
            )
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be a positive number; got {self.learning_rate!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {self.loss!r}")
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be None or 'bf16'; got {self.amp!r}")


@dataclass
class _Progress:
    """What a resumable state holds besides the model and optimiser."""

    epoch: int = 0  # epochs completed
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    train_losses: list | None = None
    val_losses: list | None = None
    stopped: str = ""  # why training ended early, if it did


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    _, world = _world()
    if world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class _Batches(Dataset):
    """Whole batches of a dataset with ``batch()``, as items, for a DataLoader with workers."""

    def __init__(self, dataset: Any, chunks: list[np.ndarray]) -> None:
        self.dataset = dataset
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.batch(self.chunks[index])


def _epoch_order(length: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(length)
    return np.random.default_rng([seed, epoch]).permutation(length)


def _iterate(
    dataset: Any,
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    shuffle: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield this process's share of every batch of one epoch, on ``device``."""
    rank, world = _world()
    order = _epoch_order(len(dataset), config.seed, epoch, shuffle)
    chunks = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    chunks = [chunk[rank::world] for chunk in chunks]
    chunks = [chunk for chunk in chunks if len(chunk)]
    if hasattr(dataset, "batch"):
        if config.num_workers > 0:
            loader = DataLoader(
                _Batches(dataset, chunks),
                batch_size=None,
                num_workers=config.num_workers,
                pin_memory=device.type == "cuda",
            )
            for inputs, targets in loader:
                yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        else:
            for chunk in chunks:
                yield dataset.batch(chunk, device)
        return
    loader = DataLoader(
        dataset,
        batch_sampler=[chunk.tolist() for chunk in chunks],
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    for inputs, targets in loader:
        yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def _check_pair(
    inputs: torch.Tensor, targets: torch.Tensor, model_channels: tuple[int, int]
) -> None:
    if inputs.dim() != 4 or targets.dim() != 4:
        raise ValueError(
            "datasets must yield (input, target) tensors of shape (C, H, W); got batches "
            f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if inputs.shape[1] != model_channels[0] or targets.shape[1] != model_channels[1]:
        raise ValueError(
            f"the model maps {model_channels[0]} -> {model_channels[1]} channels, but the dataset "
            f"gives inputs with {inputs.shape[1]} and targets with {targets.shape[1]} channels"
        )
    if inputs.shape[-2:] != targets.shape[-2:]:
        raise ValueError(
            f"inputs {tuple(inputs.shape[-2:])} and targets {tuple(targets.shape[-2:])} differ in size"
        )


def _model_channels(model: nn.Module) -> tuple[int, int]:
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "in_channels" in config:
        return config["in_channels"], config["out_channels"]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"model {type(model).__name__} has no convolution to infer its channels from"
        )
    return convs[0].in_channels, convs[-1].out_channels


def _state_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "state.pt" if path.is_dir() else path


def _save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: _Progress,
    config: TrainConfig,
    best_state: dict[str, torch.Tensor] | None,
) -> None:
    meta = {
        key: value for key, value in asdict(config).items() if key not in ("resume", "metadata")
    }
    state = {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": json.dumps(asdict(progress)),
        "train_config": json.dumps(meta),
        "torch_rng": torch.get_rng_state(),
    }
    if best_state is not None:
        state["best_model"] = best_state
    config_record = getattr(model, "config", None)
    if isinstance(config_record, dict):
        state["model_config"] = json.dumps(
            {**config_record, **(config.metadata or {})}, default=str
        )
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _canonical(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _load_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
) -> tuple[_Progress, dict[str, torch.Tensor] | None]:
    if not path.is_file():
        raise FileNotFoundError(f"resume: no training state at {str(path)!r}")
    state = safe_torch_load(path)
    saved = json.loads(state["train_config"])
    for key in ("batch_size", "loss", "learning_rate", "seed"):
        if saved.get(key) != getattr(config, key):
            raise ValueError(
                f"resume: {key} differs from the interrupted run ({saved.get(key)!r} there, "
                f"{getattr(config, key)!r} now)"
            )
    if "model_config" in state and isinstance(getattr(model, "config", None), dict):
        recorded = json.loads(state["model_config"])
        current = {**model.config, **(config.metadata or {})}
        for key in ("arch", "in_channels", "out_channels", "options", "filter", "data"):
            if (
                key in recorded
                and key in current
                and _canonical(recorded[key]) != _canonical(current[key])
            ):
                raise ValueError(
                    f"resume: {key} differs from the interrupted run "
                    f"({recorded[key]!r} there, {current[key]!r} now)"
                )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"resume: the saved weights do not fit this model ({error})") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    progress = _Progress(**json.loads(state["progress"]))
    return progress, state.get("best_model")


def _evaluate(
    model: nn.Module, dataset: Any, config: TrainConfig, device: torch.device, loss_fn: Callable
) -> float:
    model.eval()
    totals = [0.0, 0.0]
    with torch.no_grad():
        for inputs, targets in _iterate(dataset, config, device, epoch=0, shuffle=False):
            outputs = model(inputs).float()
            totals[0] += float(loss_fn(outputs, targets)) * len(inputs)
            totals[1] += len(inputs)
    total, count = _all_reduce_sum(totals, device)
    return total / max(count, 1)


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
        batch_size: Images per optimisation step.
        learning_rate: Adam's initial learning rate.
        save_best: Save the model whenever the validation loss improves.
        save_path: Where (``.safetensors`` native, ``.pt``/``.pth`` accepted);
            required with ``save_best``.
        **options: Fields of :class:`TrainConfig`: ``device="auto"``, ``seed=0``,
            ``progress=True``, ``num_workers=0``, ``loss="l1"``, ``time_budget``,
            ``state_path`` (resumable state after every epoch), ``resume`` (a state
            file or run folder), ``metadata`` (saved with the best model), ``amp``,
            ``channels_last``, ``compile``, ``weight_decay``, ``min_learning_rate``.

    Returns:
        ``(train_losses, val_losses)``: per-epoch mean losses, weighted by batch size.
        The model ends with the weights of its best validation epoch, in eval mode;
        ``model.training_summary`` says how training ended.

    Raises:
        ValueError: For a bad argument or incompatible data (message names it).
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
    rank, world = _world()
    if config.batch_size < world:
        raise ValueError(
            f"batch_size ({config.batch_size}) must be at least the number of processes ({world})"
        )
    channels = _model_channels(model)
    model.to(device)
    if config.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.max_epochs, eta_min=config.min_learning_rate
    )
    progress = _Progress(train_losses=[], val_losses=[])
    best_state: dict[str, torch.Tensor] | None = None
    if config.resume:
        progress, best_state = _load_state(
            _state_file(config.resume), model, optimizer, scheduler, config
        )
        model.to(device)
    network: nn.Module = model
    if world > 1:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        network = torch.compile(network)
    loss_fn = LOSSES[config.loss]
    metadata = dict(config.metadata or {})
    state_path = Path(config.state_path) if config.state_path else None
    writer = rank == 0
    started = time.perf_counter()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp == "bf16")

    from tqdm.auto import tqdm

    try:
        while progress.epoch < config.max_epochs and not progress.stopped:
            epoch = progress.epoch + 1
            network.train()
            totals = [0.0, 0.0]
            steps = math.ceil(len(train_dataset) / config.batch_size)
            bar = tqdm(
                total=steps,
                desc=f"epoch {epoch}/{config.max_epochs}",
                disable=not (config.progress and writer),
                leave=False,
                unit="batch",
            )
            for step, (inputs, targets) in enumerate(
                _iterate(train_dataset, config, device, epoch, shuffle=True), start=1
            ):
                if step == 1 and epoch == 1:
                    _check_pair(inputs, targets, channels)
                if config.channels_last and device.type == "cuda":
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with autocast:
                    outputs = network(inputs)
                loss = loss_fn(outputs.float(), targets)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"the training loss became {loss.item()} at epoch {epoch}, step {step}; "
                        "lower the learning rate. The last good state and best model are kept."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                totals[0] += loss.detach().item() * len(inputs)
                totals[1] += len(inputs)
                bar.update(1)
                bar.set_postfix(loss=f"{totals[0] / totals[1]:.4g}")
                if (
                    config.time_budget is not None
                    and time.perf_counter() - started > config.time_budget
                ):
                    progress.stopped = f"time budget of {config.time_budget:g} s reached"
                    break
            bar.close()
            scheduler.step()
            total, count = _all_reduce_sum(totals, device)
            train_loss = total / max(count, 1)
            val_loss = _evaluate(network, val_dataset, config, device, loss_fn)
            if not math.isfinite(val_loss):
                raise TrainingDivergedError(f"the validation loss became {val_loss} at epoch {epoch}")
            progress.train_losses.append(train_loss)
            progress.val_losses.append(val_loss)
            progress.epoch = epoch
            if val_loss < progress.best_val:
                progress.best_val, progress.best_epoch, progress.bad_epochs = val_loss, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
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
                        f"early stopping: no better validation loss for {progress.bad_epochs} epochs"
                    )
            if state_path is not None and writer:
                _save_state(state_path, model, optimizer, scheduler, progress, config, best_state)
            if config.progress and writer:
                tqdm.write(
                    f"epoch {epoch:3d}/{config.max_epochs}  train {train_loss:.6g}  val {val_loss:.6g}"
                    f"  lr {scheduler.get_last_lr()[0]:.3g}"
                )
    except KeyboardInterrupt:
        if writer and state_path is not None:
            message = f"interrupted: the state of epoch {progress.epoch} is saved in {state_path}"
            tqdm.write(message)
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

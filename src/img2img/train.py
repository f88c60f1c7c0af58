"""Gradient training: the study's recipe (L1, Adam, cosine annealing, early stopping), done right.

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
paths, the next batch is made in a background thread while the model trains,
and the L1 loss and Adam run fused. On a GPU the loss is read back every few
steps, not every step, so the device is never made to wait. Under ``torchrun``
each process trains on its shard of every batch with ``DistributedDataParallel``;
losses are all-reduced, and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.data import DataLoader, Dataset

from img2img.checkpoint import atomic_write, safe_torch_load, save_model
from img2img.cpuconv import tiny_conv_mode
from img2img.data.filtered import FilteredDataset
from img2img.data.stream import FolderCrops
from img2img.devices import resolve_device

__all__ = ["TrainConfig", "TrainingDivergedError", "train_model"]


class _L1(torch.autograd.Function):
    """``F.l1_loss`` (mean) with the same value and gradient, in fewer passes over memory."""

    @staticmethod
    def forward(ctx: Any, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        diff = outputs - targets
        ctx.save_for_backward(diff)
        return diff.abs().sum() / diff.numel()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (diff,) = ctx.saved_tensors
        return torch.sign(diff).mul_(grad / diff.numel()), None


def _l1_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean absolute error: :class:`_L1` for the usual case, ``F.l1_loss`` otherwise."""
    if outputs.shape != targets.shape or targets.requires_grad:
        return F.l1_loss(outputs, targets)
    return _L1.apply(outputs, targets)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": _l1_loss,
    "mse": F.mse_loss,
}

_WORKER_CONTEXTS = (None, "fork", "spawn", "forkserver")
_CUDA_CHECK_EVERY = 16  # steps between reading the loss back from a GPU


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
    worker_start: str | None = (
        None  # how workers start: "fork", "spawn", "forkserver" (None: default)
    )
    time_budget: float | None = None  # seconds of training at most (checked every step)
    amp: str | None = None  # "bf16": mixed precision on CUDA (ignored on the CPU)
    channels_last: bool = (
        False  # NHWC memory format: faster for wide networks (can) on CUDA and CPU
    )
    compile: bool = False  # torch.compile the model
    state_path: str | None = None  # resumable state written after every epoch
    resume: str | None = None  # a state file (or a run folder holding state.pt) to resume from
    metadata: dict | None = None  # extras saved with the best model (filter spec, data, ...)

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("early_stopping_patience", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
        if (
            isinstance(self.learning_rate, bool)
            or not isinstance(self.learning_rate, (int, float))
            or not (self.learning_rate > 0 and math.isfinite(self.learning_rate))
        ):
            raise ValueError(
                f"learning_rate must be a positive, finite number; got {self.learning_rate!r}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {self.loss!r}")
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be None or 'bf16'; got {self.amp!r}")
        if self.worker_start not in _WORKER_CONTEXTS:
            raise ValueError(
                f"worker_start must be one of {list(_WORKER_CONTEXTS)}; got {self.worker_start!r}"
            )
        if self.time_budget is not None and not (
            isinstance(self.time_budget, (int, float)) and self.time_budget > 0
        ):
            raise ValueError(
                f"time_budget must be a positive number of seconds or None; got {self.time_budget!r}"
            )


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


# -- processes -----------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Sum (or max) ``values`` over the processes; unchanged in a single process."""
    _, world = _world()
    if world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


# -- batches -------------------------------------------------------------------------------------


@dataclass
class _Step:
    """One optimisation step's share for this process.

    Attributes:
        positions: Dataset positions this process draws.
        count: Items that count in the loss (0 for a stand-in when the shard is empty).
        scale: Factor on the local mean loss so that averaging gradients over the
            processes gives the gradient of the mean over the whole batch.
    """

    positions: np.ndarray
    count: int
    scale: float


def _epoch_order(length: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(length)
    return np.random.default_rng([seed, epoch]).permutation(length)


def _plan(length: int, batch_size: int, seed: int, epoch: int, shuffle: bool) -> list[_Step]:
    """This process's share of every batch of one epoch.

    Each batch of ``batch_size`` positions is dealt to the processes round-robin.
    Every process takes the same number of steps (``DistributedDataParallel``
    needs it): a process whose share of the last batch is empty draws one stand-in
    item whose loss counts zero.
    """
    rank, world = _world()
    order = _epoch_order(length, seed, epoch, shuffle)
    steps = []
    for start in range(0, length, batch_size):
        chunk = order[start : start + batch_size]
        local = chunk[rank::world]
        if len(local) == 0:
            steps.append(_Step(chunk[:1], 0, 0.0))
        else:
            steps.append(_Step(local, len(local), len(local) * world / len(chunk)))
    return steps


class _Batches(Dataset):
    """Whole batches of a dataset with ``batch()``, as items, for a DataLoader with workers.

    With ``raw``, a worker only gathers the uint8 photos (``dataset.uint8``) and
    the filter runs on the training device (``dataset.from_uint8``).
    """

    def __init__(self, dataset: Any, steps: list[_Step], raw: bool) -> None:
        self.dataset = dataset
        self.positions = [step.positions for step in steps]
        self.raw = raw

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> Any:
        if self.raw:
            return torch.from_numpy(self.dataset.uint8(self.positions[index]))
        return self.dataset.batch(self.positions[index])


def _worker_init(_: int, opencv: bool) -> None:
    """One thread per worker for PyTorch (and OpenCV when ``opencv``): the workers are the parallelism."""
    torch.set_num_threads(1)
    if opencv:
        import cv2

        cv2.setNumThreads(1)


def _forks(config: TrainConfig) -> bool:
    """Whether the DataLoader workers start by ``fork``."""
    method = (
        config.worker_start
        or multiprocessing.get_start_method(allow_none=True)  # (asking never sets it)
        or multiprocessing.get_all_start_methods()[0]  # the platform's default
    )
    return method == "fork"


@contextmanager
def _opencv_threads_off(active: bool) -> Iterator[None]:
    """Stop OpenCV's thread pool while workers are forked, and restart it after.

    A forked child inherits the pool's locks but not its threads: touching the
    pool there (even ``cv2.setNumThreads``) can wait forever. Children forked
    while the pool is off run OpenCV in their own thread, which is what a worker
    wants anyway.
    """
    if not active:
        yield
        return
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(0)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _batches_from(loader: DataLoader, config: TrainConfig) -> Iterator[Any]:
    """Iterate a DataLoader, starting its worker processes safely."""
    with _opencv_threads_off(config.num_workers > 0 and _forks(config)):
        iterator = iter(loader)  # the workers start here
    yield from iterator


def _loader(dataset: Any, config: TrainConfig, device: torch.device, **options: Any) -> DataLoader:
    workers = config.num_workers
    return DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=partial(_worker_init, opencv=not _forks(config)) if workers else None,
        multiprocessing_context=config.worker_start if workers else None,
        **options,
    )


def _iterate(
    dataset: Any,
    config: TrainConfig,
    device: torch.device,
    steps: list[_Step],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(inputs, targets)`` on ``device`` for each of ``steps``."""
    if hasattr(dataset, "batch"):
        if config.num_workers == 0:
            if device.type == "cpu" and isinstance(dataset, (FilteredDataset, FolderCrops)):
                # photos stored channel by channel: the first convolution needs no copy
                batches = (
                    dataset.from_uint8(dataset.uint8(step.positions), device, channel_major=True)
                    for step in steps
                )
            else:
                batches = (dataset.batch(step.positions, device) for step in steps)
            yield from _ahead(batches) if device.type == "cpu" and len(steps) > 1 else batches
            return
        raw = (
            device.type != "cpu"
            and hasattr(dataset, "uint8")
            and hasattr(dataset, "from_uint8")
            and getattr(getattr(dataset, "filter", None), "backend", "") == "pytorch"
        )
        loader = _loader(_Batches(dataset, steps, raw), config, device, batch_size=None)
        for item in _batches_from(loader, config):
            if raw:
                yield dataset.from_uint8(item, device)
            else:
                inputs, targets = item
                yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        return
    batches = [step.positions.tolist() for step in steps]
    loader = _loader(dataset, config, device, batch_sampler=batches)
    for inputs, targets in _batches_from(loader, config):
        yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def _ahead(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Yield ``items`` as a background thread makes them, up to ``depth`` ahead.

    On the CPU the next batch (gathering, converting, filtering: OpenCV and NumPy,
    which release the GIL) is made on one core while the model trains on the
    other. The order and the contents do not change; an exception raised while
    making an item (``KeyboardInterrupt`` included) is raised here, in its place.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put((False, error))
            return
        put((True, done))

    thread = threading.Thread(target=work, name="img2img-batches", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _set_epoch(dataset: Any, epoch: int) -> None:
    """Tell a dataset whose items depend on the epoch (random crops) which epoch it is."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


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


# -- the running loss ----------------------------------------------------------------------------


class _Losses:
    """The training losses of one epoch, read back from the device in groups of steps.

    Reading a loss forces the device to finish its queue; on a GPU that is done
    every :data:`_CUDA_CHECK_EVERY` steps, on the CPU (where it costs nothing)
    every step. Each read checks for NaN and Inf (the first bad step is named) and
    the time budget, with the same outcome on every process.
    """

    def __init__(self, device: torch.device, epoch: int, bar: Any) -> None:
        self.device, self.epoch, self.bar = device, epoch, bar
        self.every = _CUDA_CHECK_EVERY if device.type == "cuda" else 1
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
        _, world = _world()
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


# -- resumable state -----------------------------------------------------------------------------


def _state_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "state.pt" if path.is_dir() else path


def _describe_data(dataset: Any) -> dict[str, Any]:
    """What identifies a training set across a resume: its filter, source and size."""
    record: dict[str, Any] = {"size": len(dataset)}
    spec = getattr(getattr(dataset, "filter", None), "canonical", None)
    if isinstance(spec, str):
        record["filter"] = spec
    source = getattr(dataset, "source", None)
    if isinstance(source, str) and source:
        record["data"] = source
    return record


def _save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: _Progress,
    config: TrainConfig,
    best_state: dict[str, torch.Tensor] | None,
    data: dict[str, Any],
    device: torch.device,
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
        "data_record": json.dumps(data, default=str),
        "torch_rng": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
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


def _differs(key: str, there: Any, now: Any) -> ValueError:
    return ValueError(
        f"resume: {key} differs from the interrupted run ({there!r} there, {now!r} now); "
        "resume with the same settings, or start a new run"
    )


def _load_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    data: dict[str, Any],
    device: torch.device,
) -> tuple[_Progress, dict[str, torch.Tensor] | None]:
    if not path.is_file():
        raise FileNotFoundError(f"resume: no training state at {str(path)!r}")
    try:
        state = safe_torch_load(path)
        saved = json.loads(state["train_config"])
    except Exception as error:  # a damaged file: say which and why
        raise ValueError(
            f"resume: {str(path)!r} is not a readable training state ({error})"
        ) from None
    for key in ("batch_size", "loss", "learning_rate", "seed"):
        if saved.get(key) != getattr(config, key):
            raise _differs(key, saved.get(key), getattr(config, key))
    if "model_config" in state and isinstance(getattr(model, "config", None), dict):
        recorded = json.loads(state["model_config"])
        current = {**model.config, **(config.metadata or {})}
        for key in ("arch", "in_channels", "out_channels", "options", "filter", "data"):
            if (
                key in recorded
                and key in current
                and _canonical(recorded[key]) != _canonical(current[key])
            ):
                raise _differs(key, recorded[key], current[key])
    if "data_record" in state:
        recorded = json.loads(state["data_record"])
        for key, label in (("filter", "filter"), ("data", "data"), ("size", "training data size")):
            if key in recorded and key in data and recorded[key] != data[key]:
                raise _differs(label, recorded[key], data[key])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"resume: the saved weights do not fit this model ({error})") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    progress = _Progress(**json.loads(state["progress"]))
    return progress, state.get("best_model")


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
    _set_epoch(dataset, 0)
    steps = _plan(len(dataset), config.batch_size, config.seed, 0, shuffle=False)
    totals = [0.0, 0.0]
    losses: list[torch.Tensor] = []
    with torch.no_grad(), closing(_iterate(dataset, config, device, steps)) as batches:
        for step, (inputs, targets) in zip(steps, batches, strict=True):
            if step.count:
                with tiny_conv_mode(fast):
                    outputs = model(inputs).float()
                losses.append(loss_fn(outputs, targets).double() * step.count)
                totals[1] += step.count
    if losses:
        totals[0] = float(torch.stack(losses).sum())
    total, count = _all_reduce(totals, device)
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
    rank, world = _world()
    if config.batch_size < world:
        raise ValueError(
            f"batch_size ({config.batch_size}) must be at least the number of processes ({world})"
        )
    on_cuda = device.type == "cuda"
    if config.amp and not on_cuda:
        warnings.warn("amp='bf16' applies on CUDA only; training in float32", stacklevel=2)
    channels = _model_channels(model)
    data_record = _describe_data(train_dataset)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _adam(model, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.max_epochs, eta_min=config.min_learning_rate
    )
    progress = _Progress(train_losses=[], val_losses=[])
    best_state: dict[str, torch.Tensor] | None = None
    if config.resume:
        progress, best_state = _load_state(
            _state_file(config.resume), model, optimizer, scheduler, config, data_record, device
        )
        model.to(device)
    network: nn.Module = model
    if world > 1:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if on_cuda else None
        )
    if config.compile:
        network = torch.compile(network)
    evaluator = network if world == 1 else model  # evaluation needs no gradient exchange
    loss_fn = LOSSES[config.loss]
    metadata = dict(config.metadata or {})
    state_path = Path(config.state_path) if config.state_path else None
    writer = rank == 0
    started = time.perf_counter()
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=bool(config.amp) and on_cuda
    )
    # Few-channel convolutions run through OpenCV on the CPU (not under torch.compile).
    fast = device.type == "cpu" and not config.compile
    checked = False

    from tqdm.auto import tqdm

    try:
        while progress.epoch < config.max_epochs and not progress.stopped:
            epoch = progress.epoch + 1
            network.train()
            _set_epoch(train_dataset, epoch)
            steps = _plan(len(train_dataset), config.batch_size, config.seed, epoch, True)
            bar = tqdm(
                total=len(steps),
                desc=f"epoch {epoch}/{config.max_epochs}",
                disable=not (config.progress and writer),
                leave=False,
                unit="batch",
            )
            losses = _Losses(device, epoch, bar)
            # closing: stops the batch thread or DataLoader workers at once, whatever happens
            with closing(_iterate(train_dataset, config, device, steps)) as batches:
                for number, (step, (inputs, targets)) in enumerate(
                    zip(steps, batches, strict=True), start=1
                ):
                    if not checked:
                        _check_pair(inputs, targets, channels)
                        checked = True
                    if config.channels_last:
                        inputs = inputs.contiguous(memory_format=torch.channels_last)
                    with tiny_conv_mode(fast), autocast:
                        outputs = network(inputs)
                    loss = loss_fn(outputs.float(), targets)
                    optimizer.zero_grad(set_to_none=True)
                    (loss if step.scale == 1.0 else loss * step.scale).backward()
                    optimizer.step()
                    if losses.add(number, loss, step.count) or number == len(steps):
                        losses.read()
                        if config.time_budget is not None:
                            (elapsed,) = _all_reduce(
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
            total, count = _all_reduce([losses.total, float(losses.count)], device)
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
                        "early stopping: no better validation loss for "
                        f"{progress.bad_epochs} epochs"
                    )
            if state_path is not None and writer:
                _save_state(
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

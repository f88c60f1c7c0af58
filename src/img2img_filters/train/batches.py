"""Each epoch's batches: the order drawn from ``(seed, epoch)``, each process's share, workers."""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from img2img_filters.backends.engine import process_group
from img2img_filters.data.filtered import PhotoPairs
from img2img_filters.train.config import TrainConfig

__all__ = [
    "Step",
    "all_reduce",
    "check_pair",
    "iterate_batches",
    "model_channels",
    "plan_epoch",
    "process_group",
    "set_epoch",
    "spare_core",
]


# -- processes -----------------------------------------------------------------------------------


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Sum (or max) ``values`` over the processes; unchanged in a single process."""
    _, world = process_group()
    if world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


# -- batches -------------------------------------------------------------------------------------


@dataclass
class Step:
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


def plan_epoch(length: int, batch_size: int, seed: int, epoch: int, shuffle: bool) -> list[Step]:
    """This process's share of every batch of one epoch.

    Each batch of ``batch_size`` positions is dealt to the processes round-robin.
    Every process takes the same number of steps (``DistributedDataParallel``
    needs it): a process whose share of the last batch is empty draws one stand-in
    item whose loss counts zero.
    """
    rank, world = process_group()
    order = _epoch_order(length, seed, epoch, shuffle)
    steps = []
    for start in range(0, length, batch_size):
        chunk = order[start : start + batch_size]
        local = chunk[rank::world]
        if len(local) == 0:
            steps.append(Step(chunk[:1], 0, 0.0))
        else:
            steps.append(Step(local, len(local), len(local) * world / len(chunk)))
    return steps


class _Batches(Dataset):
    """Whole batches of a dataset with ``batch()``, as items, for a DataLoader with workers.

    With ``raw``, a worker only gathers the uint8 photos (``dataset.uint8``) and
    the filter runs on the training device (``dataset.from_uint8``).
    """

    def __init__(self, dataset: Any, steps: list[Step], raw: bool) -> None:
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


def iterate_batches(
    dataset: Any,
    config: TrainConfig,
    device: torch.device,
    steps: list[Step],
    background: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(inputs, targets)`` on ``device`` for each of ``steps``.

    With ``background`` (and a core to spare, :func:`spare_core`), batches made in
    this process on the CPU are made one ahead in a thread.
    """
    if hasattr(dataset, "batch"):
        if config.num_workers == 0:
            if device.type == "cpu" and isinstance(dataset, PhotoPairs):
                # photos stored channel by channel: the first convolution needs no copy
                batches = (
                    dataset.from_uint8(dataset.uint8(step.positions), device, channel_major=True)
                    for step in steps
                )
            else:
                batches = (dataset.batch(step.positions, device) for step in steps)
            ahead = background and device.type == "cpu" and len(steps) > 1 and spare_core()
            yield from _ahead(batches) if ahead else batches
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


def spare_core() -> bool:
    """Whether this process has a core to spare for making the next batch in a thread.

    It has unless the processes started on this machine (``LOCAL_WORLD_SIZE``,
    set by ``torchrun``) leave it fewer than two of the cores it may run on: two
    processes on two cores each keep one core busy training, and a batch thread
    would only take turns with them.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return cores // local >= 2


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


def set_epoch(dataset: Any, epoch: int) -> None:
    """Tell a dataset whose items depend on the epoch (random crops) which epoch it is."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def check_pair(
    inputs: torch.Tensor, targets: torch.Tensor, model_channels: tuple[int, int]
) -> None:
    """Check a first batch against the model: 4-D, matching channels and sizes (else ValueError)."""
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


def model_channels(model: nn.Module) -> tuple[int, int]:
    """``(in, out)`` channels of a model: from its ``config``, else its first and last convolution."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "in_channels" in config:
        return config["in_channels"], config["out_channels"]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"model {type(model).__name__} has no convolution to infer its channels from"
        )
    return convs[0].in_channels, convs[-1].out_channels

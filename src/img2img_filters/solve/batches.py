"""Batches of (input, target) pairs for the solvers, from any dataset, and argument checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from img2img_filters.filters import Filter

__all__ = [
    "accumulation_device",
    "check_dataset",
    "check_int",
    "check_seconds",
    "dataset_filter",
    "iter_batches",
]


def check_int(argument: str, value: Any, minimum: int, *, odd: bool = False) -> int:
    """``value`` as an int, checked: at least ``minimum`` (and odd); errors name ``argument``."""
    kind = "a positive odd integer" if odd else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be {kind}; got {value!r}")
    if value < minimum or (odd and value % 2 == 0):
        raise ValueError(f"{argument} must be {kind}; got {value!r}")
    return int(value)


def check_seconds(seconds: Any) -> None:
    """``seconds`` (a solver's time limit): a non-negative number or ``None``; else ``ValueError``."""
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0
    ):
        raise ValueError(f"seconds must be a non-negative number or None; got {seconds!r}")


def check_dataset(dataset: Any, solver: str) -> None:
    """Refuse what is not a non-empty dataset of ``(input, target)`` pairs, naming ``solver``.

    Raises:
        TypeError: If ``dataset`` has no length, or neither ``batch()`` nor items.
        ValueError: If it is empty.
    """
    if not hasattr(dataset, "__len__") or not (
        callable(getattr(dataset, "batch", None)) or hasattr(dataset, "__getitem__")
    ):
        raise TypeError(
            "dataset must be a FilteredDataset or a Dataset of (input, target) pairs; got "
            f"{type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise ValueError(f"dataset is empty: {solver} needs at least one photo")


def accumulation_device(device: torch.device) -> torch.device:
    """Where the float64 sums live: the batch's device, except MPS (no float64)."""
    return torch.device("cpu") if device.type == "mps" else device


def dataset_filter(dataset: Any) -> Filter | None:
    """The dataset's :class:`~img2img_filters.filters.Filter`, or ``None`` when it has none."""
    filt = getattr(dataset, "filter", None)
    return filt if isinstance(filt, Filter) else None


def iter_batches(
    dataset: Any,
    batch_size: int,
    device: torch.device,
    max_images: int | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(inputs (B, C_in, H, W), targets (B, C, H, W))`` float batches on ``device``.

    Datasets with a ``batch(positions, device)`` method (``FilteredDataset``)
    make whole batches at once; any other ``Dataset`` of ``(input, target)``
    pairs ``(C_in, H, W)``, ``(C, H, W)`` is read item by item and stacked,
    consecutive items of equal size together.
    """
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    batch = getattr(dataset, "batch", None)
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        if callable(batch):
            yield batch(np.arange(start, stop), device)
            continue
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        for position in range(start, stop):
            item = dataset[position]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"dataset items must be (input, target) pairs; item {position} is "
                    f"{type(item).__name__}"
                )
            pair = (torch.as_tensor(item[0]), torch.as_tensor(item[1]))
            for name, tensor in zip(("input", "target"), pair, strict=True):
                if tensor.dim() != 3:
                    raise ValueError(
                        f"dataset item {position}: {name} must be (C, H, W); got shape "
                        f"{tuple(tensor.shape)}"
                    )
            if pair[0].shape[-2:] != pair[1].shape[-2:]:
                raise ValueError(
                    f"dataset item {position}: input {tuple(pair[0].shape)} and target "
                    f"{tuple(pair[1].shape)} differ in size"
                )
            if group and (group[0][0].shape != pair[0].shape or group[0][1].shape != pair[1].shape):
                yield _stack(group, device)
                group = []
            group.append(pair)
        if group:
            yield _stack(group, device)


def _stack(
    group: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.stack([x for x, _ in group]).to(device=device, dtype=torch.float32)
    targets = torch.stack([y for _, y in group]).to(device=device, dtype=torch.float32)
    return inputs, targets

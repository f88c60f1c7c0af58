"""(input, target) pairs made on the fly: compact uint8 photos plus a filter."""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from img2img_filters.filters import Filter, create_filter

__all__ = ["FilteredDataset", "PhotoPairs", "to_float"]

#: ``u / 255`` in float32 for every uint8 ``u``: the same numbers as ``u.float() / 255``.
_UNIT = (np.arange(256, dtype=np.float32) / np.float32(255.0)).reshape(1, 256)


def to_float(
    images: np.ndarray | torch.Tensor,
    device: torch.device | str | None = None,
    *,
    channel_major: bool = False,
) -> torch.Tensor:
    """uint8 images ``(B, 3, H, W)`` -> float32 in [0, 1] on ``device``.

    The division happens on the device, so only uint8 bytes cross to a GPU; on
    the CPU a 256-entry table (``cv2.LUT``) gives the same numbers in one pass.

    Args:
        images: uint8 ``(B, C, H, W)``, a NumPy array or a tensor.
        device: Where the result goes (default: where ``images`` are).
        channel_major: On the CPU, store the result channel by channel
            (``(C, B, H, W)`` in memory; the tensor is still ``(B, C, H, W)``, not
            contiguous). Each colour plane is then one tall image, which the
            OpenCV convolutions of :mod:`img2img_filters.backends.cpu.opencv_conv` use without a copy.

    Returns:
        float32 ``(B, C, H, W)``: ``images / 255``, exactly.
    """
    tensor = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if device is not None:
        tensor = tensor.to(device, non_blocking=True)
    if tensor.device.type == "cpu" and tensor.dtype == torch.uint8 and tensor.dim() >= 2:
        array = tensor.numpy()
        planar = channel_major and array.ndim == 4
        array = np.ascontiguousarray(array.transpose(1, 0, 2, 3) if planar else array)
        if array.size:
            flat = array.reshape(-1, array.shape[-1])
            values = torch.from_numpy(cv2.LUT(flat, _UNIT).reshape(array.shape))
            return values.transpose(0, 1) if planar else values
    return tensor.float().div_(255.0)


class PhotoPairs(Dataset):
    """What datasets of uint8 photos and a filter share: batches made on the device.

    A subclass sets ``filter`` and implements ``uint8(positions)`` (the photos at
    those positions, uint8 ``(B, 3, H, W)``) and ``__len__``; items are then
    ``(input (3, H, W), target (C, H, W))`` float32 pairs, and :meth:`batch` makes
    many at once, filtering them as one batch on the training device.
    """

    filter: Filter

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        """Channels of the targets."""
        return self.filter.out_channels

    def uint8(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The uint8 photos at ``positions``, ``(B, 3, H, W)``."""
        raise NotImplementedError

    def batch(
        self, positions: Sequence[int] | np.ndarray, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets for many items at once, made on ``device``.

        Args:
            positions: Item positions in this dataset.
            device: Where to put the batch (and run the filter).

        Returns:
            ``inputs`` ``(B, 3, H, W)`` and ``targets`` ``(B, C, H, W)``, float32.
        """
        return self.from_uint8(self.uint8(positions), device)

    def from_uint8(
        self,
        images: np.ndarray | torch.Tensor,
        device: torch.device | str | None = None,
        *,
        channel_major: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets from uint8 photos ``(B, 3, H, W)`` (as :meth:`uint8` gives them).

        Args:
            images: uint8 ``(B, 3, H, W)``, a NumPy array or a tensor on any device.
            device: Where to put the batch (and run the filter).
            channel_major: Inputs stored channel by channel (see :func:`to_float`).

        Returns:
            ``inputs`` ``(B, 3, H, W)`` and ``targets`` ``(B, C, H, W)``, float32.
        """
        inputs = to_float(images, device, channel_major=channel_major)
        with torch.no_grad():
            targets = self.filter(inputs)
        return inputs, targets.float()

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= position < len(self):
            raise IndexError(f"index {position} is out of range for a dataset of {len(self)} items")
        inputs, targets = self.batch([position % len(self)])
        return inputs[0], targets[0]


class FilteredDataset(PhotoPairs):
    """Photos stored as uint8 with a filter that makes each target when it is drawn.

    Items are ``(input, target)``: ``input`` float32 ``(3, H, W)`` RGB in [0, 1],
    ``target`` float32 ``(C, H, W)`` = ``filter(input)``. Photos are never held
    as a list of float tensors: 100,000 64x64 photos take 1.2 GB as uint8.
    :meth:`batch` gathers many items at once and filters them as one batch on
    the training device; that is the path :func:`img2img_filters.train_model` takes.

    Args:
        images: uint8 array ``(N, 3, H, W)`` (a ``numpy.memmap`` works and stays on disk).
        filter: The filter (a spec string or a :class:`~img2img_filters.filters.Filter`).
        indices: The rows of ``images`` this dataset uses (default: all), so that
            train and validation splits share one array.
        groups: Per-row group ids (the photo each crop came from), length ``N``.
        labels: Per-row class labels, length ``N``, or ``None``.
        source: A short description of where the photos came from.
    """

    def __init__(
        self,
        images: np.ndarray,
        filter: str | Filter,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        groups: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        source: str = "",
        skipped: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                "images must be a uint8 numpy array of shape (N, 3, H, W); got "
                f"{type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
            )
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 channels (N, 3, H, W); got shape {images.shape}")
        self.images = images
        self.filter = create_filter(filter)
        self.indices = (
            np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        )
        self.groups = groups
        self.labels = labels
        self.source = source
        self.skipped = [(str(path), str(reason)) for path, reason in skipped]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every item."""
        return tuple(self.images.shape[-2:])

    def uint8(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The uint8 photos at ``positions`` of this dataset, ``(B, 3, H, W)``."""
        rows = self.indices[np.asarray(positions, dtype=np.int64)]
        order = np.argsort(rows, kind="stable")
        gathered = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        gathered[order] = self.images[rows[order]]  # sorted reads are kind to memory maps
        return gathered

    def __getstate__(self) -> dict[str, Any]:
        """Pickle a memory-mapped photo array as its file, not its bytes (for worker processes)."""
        state = dict(self.__dict__)
        images = self.images
        filename = getattr(images, "filename", None)
        if (
            isinstance(images, np.memmap)
            and isinstance(images.base, mmap.mmap)  # the whole mapping, not a view of it
            and images.flags.c_contiguous
            and filename
        ):
            state["images"] = None
            state["_memmap"] = (str(filename), int(images.offset), images.shape, images.dtype.str)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        mapped = state.pop("_memmap", None)
        if mapped is not None:
            filename, offset, shape, dtype = mapped
            state["images"] = np.memmap(
                Path(filename), dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape
            )
        self.__dict__.update(state)

    def with_filter(self, filter: str | Filter) -> FilteredDataset:
        """The same photos with another filter."""
        return FilteredDataset(
            self.images,
            filter,
            indices=self.indices,
            groups=self.groups,
            labels=self.labels,
            source=self.source,
            skipped=self.skipped,
        )

    def __repr__(self) -> str:
        height, width = self.image_size
        return (
            f"FilteredDataset({len(self)} images {height}x{width}, filter={self.filter.spec!r}, "
            f"source={self.source!r})"
        )

"""Tiled inference: split an image into tiles with a halo, filter each, keep the centres.

Why the result equals whole-image inference: an output pixel depends only on the
inputs within ``halo = receptive_field(model) // 2`` pixels of it. Each tile is
cut from the image together with a halo of that width, clipped to the image; the
model runs on the crop with its own padding, and only the tile's centre is kept.
Where the crop was cut inside the image, the model's padding corrupts at most
``halo`` pixels next to the cut (each layer's padding spreads inwards by that
layer's own radius), and those pixels are thrown away. Where the crop reaches the
image's real border, the model pads exactly as it pads the whole image. The
``wrap`` border is the exception, because it reads the opposite side of the image:
its halo is taken circularly from the image instead, which is exact because a
network with circular padding is a function on the torus. (A model that mixes
``wrap`` with another border has no exact halo and runs untiled.)

Memory: the image stays in its own dtype (uint8, uint16) and only the crop being
filtered is converted to float32, so a run holds the image, the float32 output
and one tile's activations. Tiles smaller than the receptive field are refused
(:func:`check_tile`): their halos would cost more than the tiles.

How the tile size is chosen when none is given (:func:`choose_tile`): a tile,
with its halo, may use ``min(available * MEMORY_FRACTION, cap)`` bytes, where
``available`` is ``MemAvailable`` of ``/proc/meminfo`` on the CPU (or what
``torch.cuda.mem_get_info`` reports free on a GPU), ``cap`` is
:data:`CPU_TILE_BUDGET` or :data:`CUDA_TILE_BUDGET`, and a pixel costs
:func:`bytes_per_pixel`: the widest layer's channels x 4 bytes x
:data:`ACTIVATION_FACTOR`. The CPU cap is small on purpose: tiles whose
activations fit the processor's caches run faster than large ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from img2img_filters.models import BorderConv2d, receptive_field

__all__ = [
    "ACTIVATION_FACTOR",
    "CPU_TILE_BUDGET",
    "CUDA_TILE_BUDGET",
    "MEMORY_FRACTION",
    "available_memory",
    "bytes_per_pixel",
    "check_tile",
    "choose_tile",
    "model_borders",
    "plan_axis",
    "run_tiled",
]

#: float32 feature maps of the widest layer counted per pixel of a tile: a forward pass holds
#: a padded input, an output and the activation in between, and the allocator keeps some
#: freed blocks (measured 4 to 10 on the CPU, peak resident memory over tile pixels).
ACTIVATION_FACTOR = 10

#: The share of the available memory one tile may use.
MEMORY_FRACTION = 0.25

#: The most memory one tile may use on the CPU (bytes): small tiles stay in cache.
CPU_TILE_BUDGET = 64 * 2**20

#: The most memory one tile may use on a GPU (bytes).
CUDA_TILE_BUDGET = 2 * 2**30

#: Tile sides chosen automatically are multiples of this.
TILE_MULTIPLE = 32

_PADDING_MODES = {
    "zeros": "constant",
    "reflect": "reflect101",
    "replicate": "replicate",
    "circular": "wrap",
}


def model_borders(model: nn.Module) -> set[str]:
    """The border modes with which a model pads (OpenCV's names).

    Counted: every :class:`BorderConv2d` that pads, every padded ``nn.Conv2d``
    (by its ``padding_mode``), and every other module with a ``border`` string
    attribute (a layer that pads with :func:`img2img_filters.border.pad2d` itself).

    Args:
        model: The network.

    Returns:
        The set of border names (empty for a model that never pads).
    """
    borders: set[str] = set()
    for module in model.modules():
        if isinstance(module, BorderConv2d):
            if module.halo:
                borders.add(module.border)
        elif isinstance(getattr(module, "border", None), str):
            borders.add(module.border)
        elif isinstance(module, nn.Conv2d):
            padding = module.padding
            if padding != "valid" if isinstance(padding, str) else any(padding):
                borders.add(_PADDING_MODES.get(module.padding_mode, module.padding_mode))
    return borders


def bytes_per_pixel(model: nn.Module) -> int:
    """Estimated memory of one pixel of a tile during a forward pass, in bytes.

    ``4 * widest * ACTIVATION_FACTOR``, ``widest`` being the most channels any
    convolution reads or writes (at least 3, the RGB input).

    Args:
        model: The network.

    Returns:
        Bytes per pixel.
    """
    widest = 3
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            widest = max(widest, module.in_channels, module.out_channels)
    return 4 * widest * ACTIVATION_FACTOR


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes, or ``None`` where there is none."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory(device: torch.device | str = "cpu") -> int:
    """Memory available for a tile's activations on ``device``, in bytes.

    CPU: ``MemAvailable`` of ``/proc/meminfo``; elsewhere the free physical pages
    (``os.sysconf``); 2 GiB when neither is known. CUDA: the free memory that
    ``torch.cuda.mem_get_info`` reports.

    Args:
        device: A ``torch.device`` or its name.

    Returns:
        Bytes.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 2 * 2**30
    return int(available)


def check_tile(tile: object, minimum: int, *, argument: str = "tile") -> int | None:
    """Validate a tile side: ``None`` (choose automatically) or an integer >= ``minimum``.

    Tiles smaller than the receptive field are refused rather than enlarged: their
    halos would cost more than the tiles themselves, and a silently changed
    setting hides a mistake.

    Args:
        tile: The requested side in pixels.
        minimum: The smallest side allowed (the model's receptive field).
        argument: The argument's name, for errors.

    Returns:
        The tile side, or ``None``.

    Raises:
        TypeError: If ``tile`` is not an integer.
        ValueError: If ``tile`` is smaller than ``minimum``.
    """
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise TypeError(f"{argument} must be an integer or None; got {type(tile).__name__}")
    if tile < minimum:
        raise ValueError(
            f"{argument} must be at least the model's receptive field ({minimum} pixels); "
            f"got {int(tile)}"
        )
    return int(tile)


def choose_tile(
    model: nn.Module,
    device: torch.device | str = "cpu",
    *,
    memory: int | None = None,
) -> int:
    """The tile side for ``model`` on ``device``, from the memory available.

    Args:
        model: The network (its receptive field and widest layer count).
        device: Where it runs.
        memory: Bytes available (default: :func:`available_memory`).

    Returns:
        A side in pixels: a multiple of :data:`TILE_MULTIPLE`, or the receptive
        field when the memory allows no more.
    """
    device = torch.device(device)
    field = receptive_field(model)
    cap = CUDA_TILE_BUDGET if device.type == "cuda" else CPU_TILE_BUDGET
    free = available_memory(device) if memory is None else int(memory)
    budget = min(free * MEMORY_FRACTION, cap)
    with_halo = math.isqrt(max(int(budget // bytes_per_pixel(model)), 1))
    side = (with_halo - 2 * (field // 2)) // TILE_MULTIPLE * TILE_MULTIPLE
    return max(side, field)


def plan_axis(size: int, tile: int) -> list[tuple[int, int]]:
    """Split ``range(size)`` into ``ceil(size / tile)`` nearly equal parts.

    Args:
        size: Length of the axis.
        tile: Largest part.

    Returns:
        ``(start, stop)`` pairs covering ``0 .. size`` in order.

    Example:
        >>> plan_axis(100, 40)
        [(0, 34), (34, 68), (68, 100)]
    """
    parts = max(1, -(-size // tile))
    step = -(-size // parts)
    return [(start, min(size, start + step)) for start in range(0, size, step)]


def _crop_index(start: int, stop: int, size: int, halo: int, wrap: bool) -> tuple[object, int]:
    """The crop along one axis for part ``[start, stop)`` and the part's offset inside it."""
    if wrap:
        return np.arange(start - halo, stop + halo) % size, halo
    low, high = max(0, start - halo), min(size, stop + halo)
    return slice(low, high), start - low


def run_tiled(
    image: np.ndarray,
    process: Callable[[np.ndarray], np.ndarray],
    *,
    tile: tuple[int, int],
    halo: tuple[int, int],
    wrap: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Apply ``process`` to an image tile by tile and assemble the centres.

    Along an axis that one tile covers, the crop is the whole axis (no halo).

    Args:
        image: ``(H, W, C)``, any dtype: each crop is passed to ``process`` as is.
        process: ``(h, w, C)`` crop -> ``(h, w, C_out)`` float32 result.
        tile: ``(rows, cols)`` of a tile.
        halo: ``(rows, cols)`` of context added on each side of a tile.
        wrap: Take the halo circularly from the image (the ``wrap`` border).
        progress: Show a progress bar over the tiles.

    Returns:
        ``(H, W, C_out)`` float32.
    """
    height, width = image.shape[:2]
    rows_plan, cols_plan = plan_axis(height, tile[0]), plan_axis(width, tile[1])
    output: np.ndarray | None = None
    with tqdm(
        total=len(rows_plan) * len(cols_plan),
        unit="tile",
        disable=None if progress else True,
        leave=False,
    ) as bar:
        for y0, y1 in rows_plan:
            rows, top = (
                (slice(0, height), 0)
                if len(rows_plan) == 1
                else _crop_index(y0, y1, height, halo[0], wrap)
            )
            for x0, x1 in cols_plan:
                cols, left = (
                    (slice(0, width), 0)
                    if len(cols_plan) == 1
                    else _crop_index(x0, x1, width, halo[1], wrap)
                )
                result = process(image[rows][:, cols])
                if output is None:
                    output = np.empty((height, width, result.shape[-1]), dtype=np.float32)
                output[y0:y1, x0:x1] = result[top : top + y1 - y0, left : left + x1 - x0]
                bar.update()
    if output is None:
        raise ValueError(f"image has a dimension of zero: {image.shape}")
    return output

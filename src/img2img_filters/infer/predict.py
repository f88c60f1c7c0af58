"""Filter images of any size with a model: the fast path or the network, tile by tile."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from img2img_filters.devices import DeviceLike, resolve_device
from img2img_filters.filters import create_filter
from img2img_filters.imageio import read_image
from img2img_filters.infer.convert import check_image, crops_to_tensor
from img2img_filters.infer.fast import FoldedFilter, folds_exactly
from img2img_filters.infer.optimize import prepare_for_inference
from img2img_filters.infer.tiling import (
    CPU_TILE_BUDGET,
    available_memory,
    bytes_per_pixel,
    check_tile,
    choose_tile,
    model_borders,
    run_tiled,
)
from img2img_filters.models import receptive_field

__all__ = ["Predictor", "apply_filter", "model_output_range"]

#: Rows of a strip of the fast path hold at most this many bytes per float32 plane.
FAST_STRIP_BYTES = CPU_TILE_BUDGET // 32


def model_output_range(model: nn.Module) -> tuple[float, float] | None:
    """The output range of the filter a model learned, from its checkpoint metadata.

    Args:
        model: A model loaded by :func:`img2img_filters.checkpoint.load_model` (its
            ``metadata["filter"]`` is the filter's spec).

    Returns:
        ``(low, high)`` of the filter (``Filter.output_range``), or ``None`` when the
        model carries no filter spec.
    """
    spec = (getattr(model, "metadata", None) or {}).get("filter")
    return create_filter(spec, allow_files=False).output_range if spec else None


class Predictor:
    """A model made ready to filter images of any size; build once, call per image.

    Decided once: the path (the folded fast path or the network), the device and
    the tile size. The network path runs an inference copy of the model (eval
    mode, so BatchNorm uses its running statistics; normalisations folded into
    the convolutions, see :func:`~img2img_filters.infer.optimize.prepare_for_inference`)
    under ``torch.inference_mode``, in ``channels_last`` memory format on the CPU,
    tile by tile (see :mod:`img2img_filters.infer.tiling`). The fast path runs on the CPU
    with OpenCV whatever ``device`` says.

    Args:
        model: A network ``(B, 3, H, W) -> (B, C_out, H, W)`` that declares its
            receptive field (every registered architecture does).
        tile: Side of a square tile in pixels, at least the receptive field;
            ``None`` chooses it from the memory available
            (:func:`~img2img_filters.infer.tiling.choose_tile`; full-width strips for the
            fast path). An image no larger than a tile is filtered in one piece.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        fast: ``None`` (automatic): the folded fast path when it is exact (a
            depth-1 ``"linear"`` model, see :func:`~img2img_filters.infer.fast.folds_exactly`);
            ``True``: fold any linear model (a deeper stack is then exact only at
            least ``receptive_field // 2`` pixels from the borders); ``False``: the network.

    Raises:
        TypeError: For a model that is not an ``nn.Module``, or a bad ``tile`` or ``fast``.
        ValueError: For a tile smaller than the receptive field, a model that does
            not take RGB, or ``fast=True`` with a model that is not linear.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tile: int | None = None,
        device: DeviceLike = "auto",
        fast: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if fast is not None and not isinstance(fast, bool):
            raise TypeError(f"fast must be None, True or False; got {fast!r}")
        in_channels = (getattr(model, "config", None) or {}).get("in_channels", 3)
        if in_channels != 3:
            raise ValueError(f"model must take 3 (RGB) input channels; it takes {in_channels}")
        self.receptive_field = receptive_field(model)
        self.halo = self.receptive_field // 2
        self.tile = check_tile(tile, self.receptive_field)
        self.device = resolve_device(device)
        borders = model_borders(model)
        self.wrap = "wrap" in borders
        # A model that reads the whole photo (its mean colour, its histograms) is tiled when it
        # can sum what it reads over strips first (`photo_statistics`), else it runs untiled;
        # so does a wrap border mixed with another one, which has no exact halo.
        whole_image = bool(getattr(model, "whole_image", False))
        self.gathers = whole_image and callable(getattr(model, "photo_statistics", None))
        self.tiled = not (self.wrap and len(borders) > 1) and (self.gathers or not whole_image)
        self.at_once = whole_image and not self.tiled  # its memory is checked per photo
        self._statistics: torch.Tensor | None = None  # the photo's, while one is filtered
        use_fast = folds_exactly(model) if fast is None else fast
        self.folded: FoldedFilter | None = FoldedFilter.from_model(model) if use_fast else None
        self.network: nn.Module | None = None
        if self.folded is None:
            self.network = prepare_for_inference(model).to(self.device)
            self.channels_last = self.device.type == "cpu"
            if self.tile is None:
                self.tile = choose_tile(self.network, self.device)

    @property
    def path(self) -> str:
        """``"folded"`` (OpenCV fast path) or ``"network"``."""
        return "folded" if self.folded is not None else "network"

    def _tile_shape(self, height: int, width: int) -> tuple[int, int]:
        if not self.tiled:
            return height, width
        if self.tile is not None:
            return self.tile, self.tile
        rows = max(FAST_STRIP_BYTES // (4 * width), 2 * self.halo + 1, 64)
        return rows, width

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        """``(B, h, w, C)`` crops -> ``(B, h, w, C_out)`` float32 through the network."""
        with torch.inference_mode():
            batch = crops_to_tensor(crops, device=self.device, channels_last=self.channels_last)
            if self._statistics is None:
                output = self.network(batch)
            else:  # a tile of a photo whose statistics were gathered first
                output = self.network(batch, statistics=self._statistics)
            return output.float().permute(0, 2, 3, 1).cpu().numpy()

    def _process(self, crop: np.ndarray) -> np.ndarray:
        if self.folded is not None:
            return self.folded(crop)
        return self._forward(crop[None])[0]

    def __call__(self, image: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """Filter one image.

        Args:
            image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8,
                uint16 or float in [0, 1] (see :mod:`img2img_filters.infer.convert`).
            progress: Show a progress bar over the tiles.

        Returns:
            ``(H, W, C_out)`` float32.
        """
        image = check_image(image)
        height, width = image.shape[:2]
        halo = self.folded.halo if self.folded is not None else (self.halo, self.halo)
        if self.at_once:
            check_whole_image_memory(self.network, height * width, self.device)
        if self.gathers and self.network is not None:
            self._statistics = self._photo_statistics(image)
        try:
            return run_tiled(
                image,
                self._process,
                tile=self._tile_shape(height, width),
                halo=halo,
                wrap=self.wrap,
                progress=progress,
            )
        finally:
            self._statistics = None

    def _photo_statistics(self, image: np.ndarray) -> torch.Tensor:
        """The model's ``photo_statistics`` of a whole image ``(1, S)``, summed strip by strip."""
        rows = max(1, FAST_STRIP_BYTES // (4 * image.shape[1] * 3))
        total = None
        with torch.inference_mode():
            for top in range(0, image.shape[0], rows):
                strip = crops_to_tensor(image[None, top : top + rows], device=self.device)
                part = self.network.photo_statistics(strip)
                total = part if total is None else total + part
        return total

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Filter a stack of images of one size; in one forward pass when they fit a tile.

        Args:
            images: ``(B, H, W, C)`` (``C`` = 1, 3 or 4), uint8, uint16 or float.

        Returns:
            ``(B, H, W, C_out)`` float32.
        """
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            raise ValueError(
                f"images must be a numpy array (B, H, W, C); got {getattr(images, 'shape', images)}"
            )
        height, width = images.shape[1:3]
        if self.network is not None and max(height, width) <= (self.tile or 0):
            check_image(images[0], argument="images[0]")
            return self._forward(images)
        return np.stack([self(image) for image in images])


#: The share of the available memory a photo filtered at once (not tiled) may use.
WHOLE_IMAGE_FRACTION = 0.5


def check_whole_image_memory(model: nn.Module, pixels: int, device: torch.device) -> None:
    """Refuse a photo that a model filtering it at once would need too much memory for.

    Args:
        model: A ``whole_image`` model that is not tiled; its ``memory_per_pixel()`` (or
            :func:`~img2img_filters.infer.tiling.bytes_per_pixel`) sizes a pixel.
        pixels: The photo's pixels.
        device: Where it runs.

    Raises:
        ValueError: When the estimate exceeds :data:`WHOLE_IMAGE_FRACTION` of the memory
            available, naming both.
    """
    method = getattr(model, "memory_per_pixel", None)
    per_pixel = int(method()) if callable(method) else bytes_per_pixel(model)
    need, available = pixels * per_pixel, available_memory(device)
    if need > available * WHOLE_IMAGE_FRACTION:
        raise ValueError(
            f"image of {pixels:,} pixels: {type(model).__name__} reads whole rows and columns, "
            f"so it filters the image at once, which needs about {need / 2**30:.1f} GiB; "
            f"{available / 2**30:.1f} GiB are available on {device} and at most "
            f"{WHOLE_IMAGE_FRACTION:.0%} of it is used; filter a smaller image (resize or crop it)"
        )


def _read(image: str | os.PathLike[str], max_pixels: int | None) -> np.ndarray:
    return read_image(image, max_pixels=max_pixels, keep_16bit=True)


def apply_filter(
    image: str | Path | np.ndarray,
    model: nn.Module,
    *,
    tile: int | None = None,
    device: DeviceLike = "auto",
    fast: bool | None = None,
    max_pixels: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Filter an image of any size with a trained model.

    Large images are filtered tile by tile with a halo of ``receptive_field // 2``
    pixels, which gives the whole-image result (see :mod:`img2img_filters.infer.tiling`)
    in bounded memory: the image stays in its integer dtype and only the tile
    being filtered is converted to float32. A depth-1 ``"linear"`` model is folded
    into its kernel and applied with OpenCV (see :mod:`img2img_filters.infer.fast`).

    Input conversions (see :mod:`img2img_filters.infer.convert`): uint8 / 255, uint16 /
    65535, float as is (in [0, 1]); grayscale repeated to RGB; alpha dropped. A
    file is read with :func:`img2img_filters.imageio.read_image`, keeping 16-bit samples.

    Args:
        image: A path to an image file, or an array ``(H, W, 3)`` (also ``(H, W)``,
            ``(H, W, 1)`` or ``(H, W, 4)``) of uint8, uint16 or float in [0, 1].
        model: A model taking ``(B, 3, H, W)`` RGB.
        tile: Tile side in pixels (at least the model's receptive field, else
            ``ValueError``); ``None`` chooses it from the memory available.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        fast: ``None``: fold a depth-1 linear model automatically; ``True``: fold
            any linear model; ``False``: always run the network.
        max_pixels: For a path: the largest image read (see
            :func:`img2img_filters.imageio.max_pixels_limit`).
        progress: Show a progress bar over the tiles.

    Returns:
        float32 ``(H, W)`` for one output channel, ``(H, W, C)`` otherwise.

    Raises:
        ImageReadError: For a file that cannot be read (a ``ValueError``).
        ValueError: For a bad image array or ``tile``; see :class:`Predictor`.
    """
    path = isinstance(image, (str, os.PathLike))
    image = _read(image, max_pixels) if path else check_image(image)
    result = Predictor(model, tile=tile, device=device, fast=fast)(image, progress=progress)
    return result[..., 0] if result.shape[-1] == 1 else result

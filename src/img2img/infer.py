"""Apply a trained model to an image of any size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from img2img.devices import resolve_device

__all__ = ["apply_filter", "image_to_tensor"]


def image_to_tensor(image: np.ndarray, *, argument: str = "image") -> torch.Tensor:
    """An image array as a float batch of one.

    Conversions: uint8 is divided by 255 and uint16 by 65535; float arrays are
    taken as already in [0, 1]; a 2-D (grayscale) image is repeated to RGB; a
    4th (alpha) channel is dropped.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8, uint16 or float.
        argument: The argument's name, for errors.

    Returns:
        ``(1, 3, H, W)`` float32.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{argument} must be a numpy array or a path; got {type(image).__name__}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{argument} must have shape (H, W), (H, W, 3) or (H, W, 4); got {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{argument} has a dimension of zero: {image.shape}")
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.dtype == np.uint8:
        array = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        array = image.astype(np.float32) / 65535.0
    elif np.issubdtype(image.dtype, np.floating):
        array = image.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"{argument} contains NaN or Inf values")
    else:
        raise TypeError(f"{argument} must be uint8, uint16 or float; got dtype {image.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def apply_filter(
    image: str | Path | np.ndarray,
    model: nn.Module,
    *,
    device: str | torch.device = "auto",
    **options: Any,
) -> np.ndarray:
    """Filter an image with a trained model, at its full size.

    Args:
        image: A path to an image file, or an array ``(H, W, 3)`` (also ``(H, W)``
            or ``(H, W, 4)``) of uint8, uint16 or float in [0, 1].
        model: A model taking ``(B, 3, H, W)`` RGB.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        **options: Reserved for inference options.

    Returns:
        float32 ``(H, W)`` for one output channel, ``(H, W, C)`` otherwise.
    """
    if options:
        raise TypeError(f"apply_filter got an unknown option {sorted(options)[0]!r}")
    if isinstance(image, (str, Path)):
        from img2img.imageio import read_image

        image = read_image(image)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    batch = image_to_tensor(image)
    target = resolve_device(device)
    model = model.to(target).eval()
    with torch.no_grad():
        output = model(batch.to(target)).float().cpu()[0]
    array = output.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array

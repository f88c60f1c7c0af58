"""Image arrays to model inputs, one crop at a time.

The conversions every inference path applies to an input image:

* ``uint8`` is divided by 255 and ``uint16`` by 65535; float arrays are taken as
  already in [0, 1] (they must be finite); other dtypes are refused;
* a 2-D ``(H, W)`` or ``(H, W, 1)`` (grayscale) image is repeated to RGB;
* a 4th (alpha) channel is dropped (colours are kept as stored, not composited).

The image itself stays in its integer dtype: only the crop being filtered is
converted to float32, so a large photo costs its own bytes plus one tile.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_image", "crops_to_tensor", "image_to_tensor", "input_scale"]

_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def check_image(image: object, *, argument: str = "image") -> np.ndarray:
    """Validate an image array and view it as ``(H, W, C)``, without copying.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8,
            uint16 or float (finite, in [0, 1]).
        argument: The argument's name, for errors.

    Returns:
        The same data as ``(H, W, C)``, ``C`` in ``(1, 3, 4)``.

    Raises:
        TypeError: If ``image`` is not a NumPy array or has another dtype.
        ValueError: For another shape, a dimension of zero, or NaN/Inf values.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{argument} must be a numpy array or a path; got {type(image).__name__}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{argument} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"got {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{argument} has a dimension of zero: {image.shape}")
    if image.dtype not in _SCALES and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"{argument} must be uint8, uint16 or float; got dtype {image.dtype}")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError(f"{argument} contains NaN or Inf values")
    return image


def input_scale(dtype: np.dtype) -> float:
    """The divisor that maps ``dtype`` to [0, 1]: 255, 65535, or 1 for floats."""
    return _SCALES.get(np.dtype(dtype), 1.0)


def crops_to_tensor(
    crops: np.ndarray,
    *,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> torch.Tensor:
    """A stack of image crops as a float32 RGB batch.

    On the CPU the crops are converted and scaled in one NumPy pass, whose
    ``(B, h, w, 3)`` result already is a ``channels_last`` batch. On another device
    the integer pixels travel as they are (a quarter of the bytes of float32) and
    are converted there.

    Args:
        crops: ``(B, h, w, C)``, ``C`` in ``(1, 3, 4)``, of a dtype accepted by
            :func:`check_image` (a strided view is fine).
        device: Where the batch goes.
        channels_last: Return the batch in ``torch.channels_last`` memory format.

    Returns:
        ``(B, 3, h, w)`` float32 in [0, 1] (for integer inputs).
    """
    if crops.shape[-1] == 4:
        crops = crops[..., :3]
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    scale = np.float32(input_scale(crops.dtype))
    if device.type == "cpu":
        values = np.divide(crops, scale, dtype=np.float32)  # a new (B, h, w, C) array
        batch = torch.from_numpy(values).permute(0, 3, 1, 2)
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        return batch.contiguous(memory_format=memory_format)
    if not crops.flags.writeable or min(crops.strides) < 0:
        crops = np.array(crops)  # torch shares memory only with writeable, positive strides
    source = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2)
    if source.shape[1] == 1:
        source = source.expand(-1, 3, -1, -1)
    batch = torch.empty(
        source.shape, dtype=torch.float32, device=device, memory_format=memory_format
    )
    batch.copy_(source)
    return batch.div_(float(scale)) if scale != 1 else batch


def image_to_tensor(image: np.ndarray, *, argument: str = "image") -> torch.Tensor:
    """An image array as a float batch of one (see the module's conversions).

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8, uint16 or float.
        argument: The argument's name, for errors.

    Returns:
        ``(1, 3, H, W)`` float32.
    """
    return crops_to_tensor(check_image(image, argument=argument)[None])

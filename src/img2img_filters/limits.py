"""The upper bounds on every size that a user's option, a filter spec or a checkpoint sets.

Each bound is checked where the value is parsed (a command-line argument, an
architecture option of :func:`img2img_filters.create_img2img_model`, a filter spec, a
checkpoint's metadata), before anything is allocated. SECURITY.md lists them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_CHANNELS",
    "MAX_CROP_SIZE",
    "MAX_DEPTH",
    "MAX_EPOCHS",
    "MAX_FILTER_NUMBER",
    "MAX_FILTER_STAGES",
    "MAX_KERNEL_SIZE",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_PARAMETERS",
    "MAX_PICKLE_BYTES",
    "MAX_SEED",
    "MAX_SOLVE_BYTES",
    "MAX_TILE",
    "MAX_WIDTH",
    "MAX_WINDOW",
    "MIN_CROP_SIZE",
    "check_bounded_int",
    "describe_value",
]

#: Side of a network layer's kernel (``kernel_size``, ``feature_size``).
MAX_KERNEL_SIZE = 255
#: Layers of a network (``depth``) and hidden layers of an MLP head (``layers``).
MAX_DEPTH = 64
#: Channels of a hidden layer (``width``, ``features``, ``hidden``).
MAX_WIDTH = 1024
#: Input or output channels of a network.
MAX_CHANNELS = 1024
#: Side of the neighbourhood window of ``arch="neighbourhood"``.
MAX_WINDOW = 63
#: Parameters (weights) of one network: 4 bytes each, so at most 256 MiB of float32 weights.
MAX_PARAMETERS = 64 * 1024 * 1024
#: Bytes of the normal equations of an exact least-squares fit (``arch auto`` on a linear
#: filter): ``(3 k**2 + 2)**2`` float64 numbers for a ``k x k`` kernel, so ``k`` up to 73.
MAX_SOLVE_BYTES = 2 * 1024**3
#: Stages in one filter spec (``a|b|c`` has three).
MAX_FILTER_STAGES = 32
#: Magnitude of a real-valued filter parameter (``scale``, ``sigma``, ``amount``, ``thresh``,
#: ``min``/``max``, the weights of a ``kernel:rows=``); it keeps every kernel and output finite.
MAX_FILTER_NUMBER = 1e6
#: Side of an inference tile (``--tile``).
MAX_TILE = 16384
#: Side of a training crop (``--crop-size``); the minimum is what SSIM needs (a 7x7 window).
MAX_CROP_SIZE = 4096
MIN_CROP_SIZE = 7
#: Images per training step (``--batch-size``).
MAX_BATCH_SIZE = 65536
#: Training epochs (``--epochs``, ``--patience``).
MAX_EPOCHS = 1_000_000
#: Random seeds (``--seed``): 0 to 2**32 - 1, what every generator img2img uses accepts.
MAX_SEED = 2**32 - 1
#: Bytes of a checkpoint's img2img metadata (JSON) and how deep it may nest.
MAX_METADATA_BYTES = 1024 * 1024
MAX_METADATA_DEPTH = 32
#: Bytes of the pickled record (``data.pkl``) of a ``.pt`` checkpoint: names and structure only,
#: the tensors are stored beside it.
MAX_PICKLE_BYTES = 16 * 1024 * 1024


def check_bounded_int(argument: str, value: Any, minimum: int, maximum: int | None) -> int:
    """``value`` when it is an integer (not a bool) in ``[minimum, maximum]``.

    Args:
        argument: The name used in the error message.
        value: The value to check.
        minimum: The smallest value allowed.
        maximum: The largest value allowed (``None``: no upper bound).

    Returns:
        ``value``.

    Raises:
        TypeError: If it is not an integer (a float such as ``2.5`` or NaN, a string).
        ValueError: If it lies outside the bounds.
    """
    kind = (
        f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    )
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be {kind}; got {describe_value(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{argument} must be {kind}; got {describe_value(value)}")
    return value


def describe_value(value: Any) -> str:
    """``repr(value)``, cut to 60 characters (a 5000-digit integer stays readable)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""Turn a device argument (``"auto"``, ``"cpu"``, ``"cuda:1"``, a ``torch.device``) into a device."""

from __future__ import annotations

import torch

__all__ = ["DeviceLike", "resolve_device"]

#: What every ``device=`` argument of the library accepts.
DeviceLike = str | torch.device


def resolve_device(device: DeviceLike = "auto", *, argument: str = "device") -> torch.device:
    """Resolve a device argument to a usable :class:`torch.device`.

    Args:
        device: ``"auto"`` (the first CUDA device when CUDA is available, else
            the CPU), ``"cpu"``, ``"cuda"`` (the current CUDA device),
            ``"cuda:N"``, or a :class:`torch.device` (checked the same way).
        argument: The argument name used in error messages.

    Returns:
        The device.

    Raises:
        TypeError: If ``device`` is neither a string nor a :class:`torch.device`.
        ValueError: For an unknown device string, for ``"cuda"`` when CUDA is
            not available, or for a CUDA index beyond the devices present;
            the message names ``argument``, the accepted values and the value given.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        text = device.strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if text != "cpu" and text != "cuda" and not text.startswith("cuda:"):
            raise ValueError(
                f"{argument} must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; "
                f"got {device!r}"
            )
        try:
            resolved = torch.device(text)
        except RuntimeError:
            raise ValueError(
                f"{argument} must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; "
                f"got {device!r}"
            ) from None
    else:
        raise TypeError(
            f"{argument} must be a string such as 'auto' or a torch.device; "
            f"got {type(device).__name__} {device!r}"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{argument} is {device!r} but CUDA is not available on this machine; "
                "use 'auto' or 'cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"{argument} is {device!r} but only {count} CUDA device(s) are present "
                f"(indices 0..{count - 1})"
            )
    return resolved

"""Border modes shared by filters and models, named as OpenCV names them.

OpenCV and PyTorch disagree on names: OpenCV's default ``BORDER_REFLECT_101``
(``gfedcb|abcdefgh|gfedcba``) is PyTorch's ``"reflect"``, while OpenCV's
``BORDER_REFLECT`` (``fedcba|abcdefgh|hgfedcb``) has no PyTorch padding mode at
all. This module speaks OpenCV's language everywhere and pads tensors itself, so
that a filter and a network that share a border name pad identically.
"""

from __future__ import annotations

import cv2
import torch
import torch.nn.functional as F

__all__ = [
    "BORDER_MODES",
    "CV2_BORDER_FLAGS",
    "check_border",
    "pad2d",
]

#: The border modes, by their img2img names, with what each does to ``abcdefgh``.
BORDER_MODES: dict[str, str] = {
    "reflect101": "gfedcb|abcdefgh|gfedcba (OpenCV's default, BORDER_REFLECT_101)",
    "reflect": "fedcba|abcdefgh|hgfedcb (BORDER_REFLECT)",
    "replicate": "aaaaaa|abcdefgh|hhhhhhh (BORDER_REPLICATE)",
    "constant": "000000|abcdefgh|0000000 (BORDER_CONSTANT, zeros)",
    "wrap": "cdefgh|abcdefgh|abcdefg (BORDER_WRAP)",
}

#: OpenCV's flag for each border mode.
CV2_BORDER_FLAGS: dict[str, int] = {
    "reflect101": cv2.BORDER_REFLECT_101,
    "reflect": cv2.BORDER_REFLECT,
    "replicate": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
    "wrap": cv2.BORDER_WRAP,
}

_ALIASES = {"zeros": "constant", "reflect_101": "reflect101", "default": "reflect101"}

#: PyTorch's padding modes that equal an OpenCV border while the pad is no wider than the
#: image allows (``reflect`` < size, ``circular`` <= size); OpenCV's BORDER_REFLECT has none.
_TORCH_MODES = {"reflect101": "reflect", "replicate": "replicate", "wrap": "circular"}


def check_border(border: str, *, argument: str = "border") -> str:
    """Validate a border name and return its canonical form.

    Args:
        border: One of :data:`BORDER_MODES` (``"zeros"`` is accepted for ``"constant"``).
        argument: The name of the argument being checked, used in the error message.

    Returns:
        The canonical border name.

    Raises:
        ValueError: If ``border`` is not a known border mode.
    """
    if not isinstance(border, str):
        raise TypeError(
            f"{argument} must be a string, one of {sorted(BORDER_MODES)}; got {border!r}"
        )
    name = _ALIASES.get(border.lower(), border.lower())
    if name not in BORDER_MODES:
        raise ValueError(f"{argument} must be one of {sorted(BORDER_MODES)}; got {border!r}")
    return name


def _border_indices(size: int, before: int, after: int, border: str) -> torch.Tensor:
    """Source indices along one axis for a padded axis, as OpenCV's borderInterpolate."""
    positions = torch.arange(-before, size + after)
    if size == 1:
        return torch.zeros_like(positions)
    if border == "replicate":
        return positions.clamp(0, size - 1)
    if border == "wrap":
        return positions.remainder(size)
    if border == "reflect101":
        period = 2 * (size - 1)
        folded = positions.remainder(period)
        return torch.where(folded < size, folded, period - folded)
    # reflect: the edge pixel is repeated.
    period = 2 * size
    folded = positions.remainder(period)
    return torch.where(folded < size, folded, period - 1 - folded)


def _pad_axis(x: torch.Tensor, before: int, after: int, border: str, dim: int) -> torch.Tensor:
    """Pad one spatial axis of ``x`` (dim -1 or -2) with slices where possible."""
    if before == 0 and after == 0:
        return x
    size = x.shape[dim]
    fits = max(before, after) < size if border == "reflect101" else max(before, after) <= size
    if not fits:
        index = _border_indices(size, before, after, border).to(x.device)
        return x.index_select(dim, index)
    parts = []
    if border == "reflect101":
        if before:
            parts.append(x.narrow(dim, 1, before).flip(dim))
        parts.append(x)
        if after:
            parts.append(x.narrow(dim, size - 1 - after, after).flip(dim))
    elif border == "reflect":
        if before:
            parts.append(x.narrow(dim, 0, before).flip(dim))
        parts.append(x)
        if after:
            parts.append(x.narrow(dim, size - after, after).flip(dim))
    elif border == "wrap":
        if before:
            parts.append(x.narrow(dim, size - before, before))
        parts.append(x)
        if after:
            parts.append(x.narrow(dim, 0, after))
    else:  # replicate
        if before:
            parts.append(x.narrow(dim, 0, 1).expand_as(x.narrow(dim, 0, before)))
        parts.append(x)
        if after:
            parts.append(x.narrow(dim, size - 1, 1).expand_as(x.narrow(dim, 0, after)))
    return torch.cat(parts, dim=dim)


def pad2d(
    x: torch.Tensor,
    left: int,
    right: int,
    top: int,
    bottom: int,
    border: str = "reflect101",
) -> torch.Tensor:
    """Pad the last two axes of a tensor the way OpenCV extends image borders.

    Any pad width works, including widths larger than the image (OpenCV's
    ``borderInterpolate`` rules apply), and the result is differentiable.

    Args:
        x: Tensor ``(..., H, W)``.
        left: Columns added on the left.
        right: Columns added on the right.
        top: Rows added on top.
        bottom: Rows added at the bottom.
        border: A border mode from :data:`BORDER_MODES`.

    Returns:
        Tensor ``(..., H + top + bottom, W + left + right)``.

    Raises:
        ValueError: For a negative pad, an unknown border mode, or a tensor with
            fewer than two axes or an empty spatial axis that needs extending.
    """
    border = check_border(border)
    pads = {"left": left, "right": right, "top": top, "bottom": bottom}
    for name, value in pads.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"pad2d: {name} must be an integer >= 0; got {value!r}")
    if x.dim() < 2:
        raise ValueError(f"pad2d: expected a tensor (..., H, W); got shape {tuple(x.shape)}")
    if border != "constant":
        for size, before, after, axis in (
            (x.shape[-2], top, bottom, "H"),
            (x.shape[-1], left, right, "W"),
        ):
            if size == 0 and (before or after):
                raise ValueError(
                    f"pad2d: cannot extend an empty axis ({axis}=0) with border {border!r}"
                )
    if border == "constant":
        return F.pad(x, (left, right, top, bottom), mode="constant", value=0.0)
    torch_mode = _TORCH_MODES.get(border)
    if torch_mode is not None and x.dim() in (3, 4) and x.numel() > 0:
        height, width = x.shape[-2:]
        limit_h, limit_w = (height - 1, width - 1) if border == "reflect101" else (height, width)
        if border == "replicate" or (max(top, bottom) <= limit_h and max(left, right) <= limit_w):
            # PyTorch's own padding: the same values, one kernel instead of slices and a cat.
            return F.pad(x, (left, right, top, bottom), mode=torch_mode)
    x = _pad_axis(x, top, bottom, border, dim=x.dim() - 2)
    return _pad_axis(x, left, right, border, dim=x.dim() - 1)

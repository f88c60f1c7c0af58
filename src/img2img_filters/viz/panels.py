"""What the image figures share: which items to show, their colour scales, running the model.

Used by :mod:`img2img_filters.viz.images`, which draws the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from img2img_filters.viz.style import (
    SIGNED_CMAP,
    UNSIGNED_CMAP,
    check_count,
)

__all__ = ["ERROR_PERCENTILE", "error_scale_top", "spread_positions"]

#: The error colour scale ends at this percentile of the errors shown: a few large
#: errors (at borders, say) then take its top colour without darkening all the others.
ERROR_PERCENTILE = 99.0


def error_scale_top(errors: np.ndarray) -> float:
    """The top of an error colour scale: :data:`ERROR_PERCENTILE` of the finite errors.

    Falls back to the largest error when the percentile is zero, and to 1 when
    every error is zero (or none is finite).
    """
    finite = errors[np.isfinite(errors)]
    if finite.size == 0:
        return 1.0
    top = float(np.percentile(finite, ERROR_PERCENTILE))
    if top <= 0:
        top = float(finite.max())
    return top if top > 0 else 1.0


def spread_positions(dataset: Any, count: int) -> list[int]:
    """``count`` positions of a dataset, from as many different photos as it has.

    A dataset that knows the photo of each crop (``groups`` indexed through
    ``indices``, as :class:`~img2img_filters.data.FilteredDataset` does) gives the
    first crop of each photo in turn, then the second of each, and so on;
    otherwise the first ``count`` positions.
    """
    groups, indices = getattr(dataset, "groups", None), getattr(dataset, "indices", None)
    if not isinstance(groups, np.ndarray) or not isinstance(indices, np.ndarray):
        return list(range(count))
    photos = groups[indices]
    by_photo: dict[Any, list[int]] = {}
    for position, photo in enumerate(photos.tolist()):
        by_photo.setdefault(photo, []).append(position)
    chosen: list[int] = []
    for rank in range(max((len(p) for p in by_photo.values()), default=0)):
        chosen += [positions[rank] for positions in by_photo.values() if rank < len(positions)]
        if len(chosen) >= count:
            break
    return chosen[:count]


def _first_items(
    dataset: Any, count: int, device: torch.device, positions: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(n, 3, H, W)`` and targets ``(n, C, H, W)`` at ``positions`` (default: the first)."""
    positions = list(range(count)) if positions is None else list(positions)
    if callable(getattr(dataset, "batch", None)):
        inputs, targets = dataset.batch(positions, device)
    else:
        pairs = [dataset[i] for i in positions]
        inputs = torch.stack([pair[0] for pair in pairs])
        targets = torch.stack([pair[1] for pair in pairs])
    return inputs.to(device), targets.to(device)


def _dataset_count(dataset: Any, num_images: Any) -> int:
    num_images = check_count(num_images, "num_images")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: there are no images to show")
    return min(num_images, len(dataset))


def _filter_spec(dataset: Any) -> str | None:
    spec = getattr(getattr(dataset, "filter", None), "spec", None)
    return spec if isinstance(spec, str) else None


class _Scale:
    """One colour scale shared by the model output and the target.

    Single-channel maps use a symmetric diverging colour map for signed
    filters and grayscale for non-negative ones, with limits from both
    arrays; without a filter, the targets (the last array) decide whether the
    signal is signed. Three-channel images are shown as RGB: values are mapped
    from ``[vmin, vmax]`` to [0, 1] and clipped ([0, 1] is kept as is for
    non-negative signals whose targets lie there; outputs are clipped to it).
    """

    def __init__(self, arrays: Sequence[np.ndarray], dataset: Any) -> None:
        finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 1.0
        # The targets (the last array) say what the signal is: a model's slight
        # undershoot must not show a colour image as a signed map.
        reference = arrays[-1][np.isfinite(arrays[-1])]
        ref_low = float(reference.min()) if reference.size else 0.0
        ref_high = float(reference.max()) if reference.size else 1.0
        output_range = getattr(getattr(dataset, "filter", None), "output_range", None)
        if output_range is not None:
            self.signed = float(output_range[0]) < 0
        else:
            self.signed = ref_low < 0
        self.channels = arrays[0].shape[1]
        self.rgb = self.channels == 3
        if self.signed:
            limit = max(abs(low), abs(high)) or 1.0
            self.vmin, self.vmax = -limit, limit
            self.cmap = SIGNED_CMAP
        elif self.rgb and ref_low >= 0 and ref_high <= 1:
            self.vmin, self.vmax = 0.0, 1.0
            self.cmap = None
        else:
            self.vmin, self.vmax = (low, high) if high > low else (low - 0.5, low + 0.5)
            self.cmap = UNSIGNED_CMAP

    def image(self, item: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` -> ``(H, W, 3)`` in [0, 1] for RGB, else the first channel ``(H, W)``."""
        if self.rgb:
            scaled = (item - self.vmin) / (self.vmax - self.vmin)
            return np.clip(np.nan_to_num(scaled), 0.0, 1.0).transpose(1, 2, 0)
        return item[0]

    def show(self, ax: Any, item: np.ndarray) -> Any:
        if self.rgb:
            return ax.imshow(self.image(item))
        return ax.imshow(self.image(item), cmap=self.cmap, vmin=self.vmin, vmax=self.vmax)

    @property
    def label(self) -> str:
        if self.rgb:
            return ""
        kind = "signed" if self.signed else "non-negative"
        suffix = "" if self.channels == 1 else f", channel 0 of {self.channels}"
        return f"filter response ({kind}{suffix})"


def _rgb(item: np.ndarray) -> np.ndarray:
    """An input ``(3, H, W)`` in [0, 1] as ``(H, W, 3)``, clipped."""
    return np.clip(item.transpose(1, 2, 0), 0.0, 1.0)


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _run_model(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The model's outputs for ``inputs``, in eval mode, with its mode and device restored."""
    was_training = model.training
    first = next(iter(model.parameters()), None)
    old_device = None if first is None else first.device
    try:
        model.eval()
        if first is not None:
            model.to(device)
            inputs = inputs.to(first.dtype) if inputs.is_floating_point() else inputs
        with torch.no_grad():
            return model(inputs.to(device))
    finally:
        if old_device is not None:
            model.to(old_device)
        model.train(was_training)


# Over 80 lines only for its docstring.

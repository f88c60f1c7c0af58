"""A fidelity certificate: how close a model's outputs are to the targets, in full.

Beyond mean PSNR and SSIM, the certificate says how large the errors get (the
maximum and the 50th, 99th and 99.9th percentiles of the absolute error), how
many output values are *exact* once rounded to the targets' bit depth (for 8-bit
targets, the share of ``round(255 * prediction) == round(255 * target)``: the
honest ceiling, since a target stored in 8 bits cannot tell closer values
apart), and where the worst errors are (the ``region x region`` crops with the
highest mean absolute error).

>>> import torch
>>> target = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
>>> certificate = fidelity_certificate(target + 0.001, target, data_range=1.0)
>>> certificate["exact_share"], certificate["max_abs_error"]
(1.0, 0.001)
"""

from __future__ import annotations

import heapq
import numbers
from contextlib import closing
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from img2img_filters.devices import DeviceLike, resolve_device
from img2img_filters.metrics import (
    _check_data_range,
    _check_pair,
    _check_positive_int,
    _resolve_data_range,
    predict_batches,
    psnr,
    ssim,
)

__all__ = ["PERCENTILES", "certificate_for_model", "fidelity_certificate"]

#: The percentiles of the absolute error the certificate gives.
PERCENTILES = (50.0, 99.0, 99.9)


class _Certificate:
    """Accumulates the certificate's figures batch by batch."""

    def __init__(self, data_range: float, bit_depth: int | None, worst: int, region: int) -> None:
        self.data_range = data_range
        self.levels = None if bit_depth is None else 2**bit_depth - 1
        self.bit_depth = bit_depth
        self.worst = worst
        self.region = region
        self.psnr: list[torch.Tensor] = []
        self.ssim: list[torch.Tensor] = []
        self.errors: list[np.ndarray] = []
        self.exact = 0
        self.images = 0
        self.boxes: list[tuple[float, int, int, int, int]] = []  # a min-heap of the worst crops

    def add(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch ``(B, C, H, W)`` of predictions and their targets."""
        predictions, targets = _check_pair(predictions, targets)
        self.psnr.append(psnr(predictions, targets, self.data_range).cpu())
        self.ssim.append(ssim(predictions, targets, self.data_range).cpu())
        error = (predictions - targets).abs()
        self.errors.append(error.flatten().cpu().numpy())
        if self.levels is not None:
            same = torch.round(predictions * self.levels) == torch.round(targets * self.levels)
            self.exact += int(same.sum())
        self._add_boxes(error.mean(dim=1))
        self.images += len(targets)

    def _add_boxes(self, error: torch.Tensor) -> None:
        """Keep the ``worst`` crops with the highest mean error.

        The crops tile each image on a grid of step ``region``, plus a last row and
        column flush with the bottom and right borders, so every pixel is in one.

        Args:
            error: ``(B, H, W)`` absolute error, averaged over channels.
        """
        height, width = error.shape[-2:]
        size = min(self.region, height, width)
        rows = _starts(height, size).to(error.device)
        cols = _starts(width, size).to(error.device)
        integral = F.pad(error.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (B, H + 1, W + 1)
        top, left = rows[:, None], cols[None, :]
        sums = (
            integral[:, top + size, left + size]
            - integral[:, top, left + size]
            - integral[:, top + size, left]
            + integral[:, top, left]
        )
        means = (sums / (size * size)).cpu().numpy()  # (B, rows, cols)
        best = np.argsort(means, axis=None)[::-1][: self.worst]
        for index, row, col in zip(*np.unravel_index(best, means.shape), strict=True):
            item = (
                float(means[index, row, col]),
                self.images + int(index),
                int(rows[row]),
                int(cols[col]),
                size,
            )
            if len(self.boxes) < self.worst:
                heapq.heappush(self.boxes, item)
            elif item > self.boxes[0]:
                heapq.heapreplace(self.boxes, item)

    def result(self) -> dict[str, Any]:
        """The certificate (see :func:`fidelity_certificate`)."""
        psnr_values = torch.cat(self.psnr).numpy()
        ssim_values = torch.cat(self.ssim).numpy()
        errors = np.concatenate(self.errors)
        percentiles = np.percentile(errors, PERCENTILES)
        worst = sorted(self.boxes, reverse=True)
        return {
            "images": self.images,
            "values": int(errors.size),
            "data_range": self.data_range,
            "psnr": float(psnr_values.mean()),
            "psnr_min": float(psnr_values.min()),
            "psnr_infinite_images": int(np.isinf(psnr_values).sum()),
            "ssim": float(ssim_values.mean()),
            "ssim_min": float(ssim_values.min()),
            "mean_abs_error": float(errors.mean()),
            "max_abs_error": float(errors.max()),
            "abs_error_percentiles": {
                f"p{p:g}": float(v) for p, v in zip(PERCENTILES, percentiles, strict=True)
            },
            "bit_depth": self.bit_depth,
            "exact_share": None if self.levels is None else self.exact / errors.size,
            "worst_regions": [
                {"image": image, "y": y, "x": x, "size": size, "mean_abs_error": mean}
                for mean, image, y, x, size in worst
            ],
        }


def _starts(length: int, size: int) -> torch.Tensor:
    """Crop starts ``0, size, 2 size, ...`` and ``length - size`` (so the last crop is flush)."""
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)
    return torch.tensor(starts)


def _check_options(bit_depth: Any, worst: Any, region: Any) -> None:
    if bit_depth is not None and (
        isinstance(bit_depth, bool)
        or not isinstance(bit_depth, numbers.Integral)
        or not 1 <= bit_depth <= 16
    ):
        raise ValueError(f"bit_depth must be None or an integer from 1 to 16; got {bit_depth!r}")
    _check_positive_int(worst, "worst")
    _check_positive_int(region, "region")


def _as_tensor(value: Any, argument: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{argument} must be a torch.Tensor or numpy array of shape (B, C, H, W); "
            f"got {type(value).__name__}"
        )
    return value


def fidelity_certificate(
    predictions: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    *,
    data_range: float,
    bit_depth: int | None = 8,
    worst: int = 5,
    region: int = 16,
) -> dict[str, Any]:
    """How faithfully predictions reproduce their targets, value by value.

    Args:
        predictions: ``(B, C, H, W)`` tensor or array (any float or integer dtype).
        targets: ``(B, C, H, W)``, the reference, same shape; ``H, W >= 7`` (SSIM).
        data_range: ``max - min`` of the targets' possible values (for PSNR, SSIM).
        bit_depth: The bits per value the targets were stored with (8 for 8-bit
            images in [0, 1]); a value counts as exact when
            ``round(p * (2**b - 1)) == round(t * (2**b - 1))``. ``None``: no such count
            (float targets).
        worst: How many worst regions to list.
        region: The side of those square regions: crops on a grid of that step, the
            last row and column flush with the border (smaller images: their shorter side).

    Returns:
        A dict: ``images``, ``values`` (counted output values), ``data_range``,
        ``psnr`` and ``ssim`` (means over images, as :func:`~img2img_filters.metrics.compute_metrics`),
        ``psnr_min``, ``psnr_infinite_images`` (images with PSNR ``inf``), ``ssim_min``,
        ``mean_abs_error``, ``max_abs_error``,
        ``abs_error_percentiles`` (``{"p50", "p99", "p99.9"}``, NumPy's linear
        interpolation over every value), ``bit_depth``, ``exact_share`` (or ``None``)
        and ``worst_regions``: ``[{"image", "y", "x", "size", "mean_abs_error"}, ...]``,
        worst first.

    Raises:
        TypeError: If an input is not a tensor or array, or ``data_range`` not a number.
        ValueError: For shapes that differ or are not ``(B, C, H, W)``, images smaller
            than 7x7, an empty batch, or a bad ``data_range``, ``bit_depth``,
            ``worst`` or ``region``.
    """
    predictions = _as_tensor(predictions, "predictions")
    targets = _as_tensor(targets, "targets")
    _check_options(bit_depth, worst, region)
    if predictions.dim() == 4 and predictions.shape[0] == 0:
        raise ValueError("predictions is an empty batch: there is nothing to certify")
    accumulator = _Certificate(_check_data_range(data_range), bit_depth, worst, region)
    accumulator.add(predictions, targets)
    return accumulator.result()


def certificate_for_model(
    model: nn.Module,
    dataset: Any,
    data_range: float | None = None,
    *,
    bit_depth: int | None = 8,
    worst: int = 5,
    region: int = 16,
    batch_size: int = 256,
    device: DeviceLike = "auto",
    max_images: int | None = None,
) -> dict[str, Any]:
    """The :func:`fidelity_certificate` of a model's outputs over a dataset.

    The dataset is read as :func:`~img2img_filters.metrics.compute_metrics` reads it (a
    ``batch(positions, device)`` method or ``(input, target)`` items, in order),
    and ``data_range=None`` resolves the same way (the filter's, else the
    targets'); the model is left in its mode and on its device. Every absolute
    error is kept for the percentiles (8 bytes per output value).

    Returns:
        The certificate, plus ``data_range_source``; ``worst_regions`` name images
        by their position in the dataset.

    Raises:
        TypeError: If ``model`` is not a module.
        ValueError: For an empty dataset, bad options or outputs whose shape differs
            from the targets'.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    _check_options(bit_depth, worst, region)
    batch_size = _check_positive_int(batch_size, "batch_size")
    max_images = _check_positive_int(max_images, "max_images", allow_none=True)
    target_device = resolve_device(device)
    total = len(dataset)
    if total == 0:
        raise ValueError("dataset is empty: there are no images to certify")
    count = total if max_images is None else min(total, max_images)
    data_range, source = _resolve_data_range(data_range, dataset, count, batch_size, target_device)
    accumulator = _Certificate(data_range, bit_depth, worst, region)
    batches = predict_batches(model, dataset, count, batch_size, target_device)
    with closing(batches):
        for predictions, targets in batches:
            accumulator.add(predictions, targets)
    result = accumulator.result()
    result["data_range_source"] = source
    return result

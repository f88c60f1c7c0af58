"""The few training photos ``--arch auto`` looks at, and the least-error choice among candidate models.

Auto checks its candidates on photos spread evenly over the training set
(:func:`spread_positions`, :func:`sample_batch`): the border a fitted kernel
extends photos by, whether it keeps the outer ring, how well a clipped fit or a
pair of smoothing scales does. :func:`least_error_options` applies one fitted
model's weights under each candidate's options and keeps the best.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from img2img_filters.models import create_img2img_model

__all__ = ["least_error_options", "mean_squared_error", "sample_batch", "spread_positions"]


def spread_positions(total: int, count: int, first: int = 0) -> np.ndarray:
    """Up to ``count`` distinct positions spread evenly over ``first .. total - 1``."""
    count = max(0, min(count, total - first))
    return np.unique(np.linspace(first, total - 1, count).round().astype(np.int64))


def sample_batch(dataset: Any, count: int, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs (B, C, H, W), targets (B, C_out, H, W))`` of photos spread over ``dataset``.

    Args:
        dataset: A dataset with ``batch(positions, device)`` and ``len``.
        count: How many photos at most.
        first: The first position they are drawn from.
    """
    return dataset.batch(spread_positions(len(dataset), count, first), "cpu")


def mean_squared_error(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """``model``'s mean squared error over whole photos ``(B, C, H, W)``, in float64."""
    with torch.no_grad():
        return float((model(inputs) - targets).double().square().mean())


def least_error_options(
    fitted: nn.Module,
    arch: str,
    candidates: Iterable[dict[str, Any]],
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> dict[str, Any]:
    """The candidate options under which ``fitted``'s weights match the targets best.

    Args:
        fitted: A fitted model whose state every candidate of ``arch`` loads.
        arch: The architecture of the candidates.
        candidates: Options for :func:`~img2img_filters.models.create_img2img_model`, in order
            of preference (ties: the first).
        inputs: Photos ``(B, C, H, W)``.
        targets: Their targets ``(B, C_out, H, W)``.

    Returns:
        The options with the least mean squared error over the whole photos.
    """
    best, least = None, float("inf")
    state = fitted.state_dict()
    for options in candidates:
        model = create_img2img_model(inputs.shape[1], targets.shape[1], arch, **options)
        model.load_state_dict(state)
        error = mean_squared_error(model, inputs, targets)
        if error < least:
            best, least = options, error
    if best is None:
        raise ValueError("least_error_options needs at least one candidate")
    return best

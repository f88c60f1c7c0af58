"""The closed-form fit of a ``gray_blend`` model: least squares, then the short fractions tools use.

``out_c = g + factor * (x_c - g)`` with ``g = gray . x`` is linear in ``factor`` and
in ``u = (1 - factor) * gray``: ``out_c = factor * x_c + u . x``. One least-squares
solve over the pixels the clipping left alone (every channel strictly inside
``(0, 255)``), with an offset that takes up the mean of the rounding, gives both.
A tool holds them as short fractions (a factor of ``1.6``, gray weights in
sixteenths of a level or in thousandths), and the estimate is only as good as
the rounding allows, which is not good enough to round like the tool does; so the
estimate is snapped to each of a few grids (:data:`FACTOR_DECIMALS`,
:data:`GRAY_BITS`, :data:`GRAY_DECIMALS`) and the pair that reproduces the most
values exactly on the photos wins (ties: the coarser grid).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from img2img_filters.models import create_img2img_model
from img2img_filters.models.gray_blend import GrayBlendNet
from img2img_filters.models.layers import LEVELS_8BIT

__all__ = ["FACTOR_DECIMALS", "GRAY_BITS", "GRAY_DECIMALS", "fit_gray_blend"]

#: Decimals the factor is snapped to (and the estimate itself after them).
FACTOR_DECIMALS = (1, 2, 3, 4)
#: Binary fractions the gray weights are snapped to (``2 ** -bits``).
GRAY_BITS = (8, 10, 12, 14, 15, 16)
#: Decimals the gray weights are snapped to.
GRAY_DECIMALS = (2, 3, 4)


def _first(pair: tuple[float, Any]) -> float:
    return pair[0]


def _pixels(dataset: Any, max_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs (1, 3, N, 1), targets (1, C, N, 1))``: the first photos' pixels, in a column."""
    count = min(len(dataset), max_images)
    if count == 0:
        raise ValueError("dataset is empty: there are no pixels to fit a gray blend on")
    inputs, targets = dataset.batch(np.arange(count), "cpu")
    inputs = inputs.permute(1, 0, 2, 3).reshape(1, inputs.shape[1], -1, 1)
    targets = targets.permute(1, 0, 2, 3).reshape(1, targets.shape[1], -1, 1)
    return inputs.float(), targets.float()


def _estimate(
    levels: np.ndarray, sources: np.ndarray, wanted: np.ndarray
) -> tuple[float, np.ndarray]:
    """``(factor, gray weights)`` by least squares over the unclipped pixels.

    Args:
        levels: Input levels ``(N, in)``.
        sources: The input level each output blends ``(N, C)``.
        wanted: Target levels ``(N, C)``.
    """
    channels = wanted.shape[1]
    inside = ((wanted > 0) & (wanted < LEVELS_8BIT)).all(axis=1)
    if inside.sum() < 16:
        raise ValueError(
            "gray blend: fewer than 16 pixels of the targets are inside (0, 255); nothing to fit"
        )
    for _ in range(3):  # selected by the targets, then by the fit's own predictions
        rows = [
            np.column_stack([sources[inside, c], levels[inside], np.ones(int(inside.sum()))])
            for c in range(channels)
        ]
        design = np.concatenate(rows)
        solution = np.linalg.lstsq(design, wanted[inside].T.reshape(-1), rcond=None)[0]
        predicted = solution[0] * sources + (levels @ solution[1:-1])[:, None] + solution[-1]
        # Choosing pixels by their targets biases the fit (the rounding noise decides who is
        # in); choosing them by the prediction does not.
        inside = ((predicted > 2.0) & (predicted < LEVELS_8BIT - 2.0)).all(axis=1)
        if inside.sum() < 16:
            break
    factor, mixed = float(solution[0]), solution[1:-1]
    if abs(1.0 - factor) < 1e-6:  # no blend to speak of: the gray does not matter
        return factor, np.zeros_like(mixed)
    return factor, mixed / (1.0 - factor)


def _levels(
    inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 levels: the inputs, the input each output blends, the targets.

    Returns:
        ``(inputs (N, in), sources (N, C): input channel c % in, targets (N, C))``.
    """
    levels = (inputs[0, :, :, 0].double() * LEVELS_8BIT).round().T.numpy()
    wanted = (targets[0, :, :, 0].double() * LEVELS_8BIT).round().T.numpy()
    sources = levels[:, np.arange(wanted.shape[1]) % levels.shape[1]]
    return levels, sources, wanted


def _hidden_gray(
    levels: np.ndarray,
    sources: np.ndarray,
    wanted: np.ndarray,
    factor: float,
    rounding: str,
    gray_rounding: str,
) -> np.ndarray | None:
    """The gray weights fitted to the rounded grays the targets reveal, or ``None``.

    Each unclipped target value bounds its pixel's gray: ``g + factor * (x - g)`` lies in
    the level's rounding interval, so ``g`` lies in an interval ``1 / |1 - factor|`` wide.
    Where the channels' intervals leave one whole level, that is the rounded gray, and
    the weights are fitted to it (without the output's rounding noise, so far more
    precisely than from the targets themselves).
    """
    if gray_rounding == "none" or abs(1.0 - factor) < 1e-3:
        return None
    low = wanted - (0.5 if rounding == "nearest" else 0.0)
    bounds = np.stack([low, low + 1.0]) - factor * sources  # (1 - factor) * g in [a, b)
    bounds = bounds / (1.0 - factor)
    lower, upper = bounds.min(axis=0), bounds.max(axis=0)
    clipped = (wanted <= 0) | (wanted >= LEVELS_8BIT)
    lower = np.where(clipped, -np.inf, lower).max(axis=1)
    upper = np.where(clipped, np.inf, upper).min(axis=1)
    # A bound that is a whole level may be in or out as float32 rounds: both count.
    first, last = np.ceil(lower - 1e-4), np.floor(upper + 1e-4)
    known = np.isfinite(first) & (first == last)
    if known.sum() < 16:
        return None
    gray = first[known] + (0.5 if gray_rounding == "floor" else 0.0)
    return np.linalg.lstsq(levels[known], gray, rcond=None)[0]


def _factor_candidates(factor: float) -> list[float]:
    values = [round(factor, decimals) for decimals in FACTOR_DECIMALS] + [factor]
    return list(dict.fromkeys(float(np.float32(v)) for v in values))


def _gray_candidates(gray: np.ndarray) -> list[tuple[np.ndarray, float | None]]:
    """``(weights, grid step or None)``: the weights snapped to each grid, then as they are."""
    steps = [2.0**-bits for bits in GRAY_BITS] + [10.0**-decimals for decimals in GRAY_DECIMALS]
    return [(np.round(gray / step) * step, step) for step in steps] + [(gray, None)]


def _neighbours(weights: np.ndarray, step: float) -> list[np.ndarray]:
    """The weights with one of them moved by one step of its grid, up or down."""
    moved = []
    for index in range(len(weights)):
        for sign in (-1.0, 1.0):
            candidate = weights.copy()
            candidate[index] += sign * step
            moved.append(candidate)
    return moved


def fit_gray_blend(
    dataset: Any,
    *,
    rounding: str = "floor",
    gray_rounding: str = "nearest",
    max_images: int = 48,
) -> GrayBlendNet:
    """Fit a ``gray_blend`` model: estimate by least squares, snap, keep the most exact.

    Args:
        dataset: A dataset with ``batch(positions, device)`` and ``len``: RGB inputs,
            targets with as many channels (or fewer).
        rounding: The model's output rounding.
        gray_rounding: The model's gray rounding.
        max_images: Fit on the first ``max_images`` photos.

    Returns:
        The model, with ``model.fit_report``: ``images``, ``pixels``, the estimated
        ``factor_estimate`` and ``gray_estimate``, the chosen ``factor`` and ``gray``, and
        ``exact_share`` (the share of target values it reproduces on these photos).

    Raises:
        ValueError: For an empty dataset, or targets clipped nearly everywhere.
    """
    inputs, targets = _pixels(dataset, max_images)
    levels, sources, wanted_levels = _levels(inputs, targets)
    factor, gray = _estimate(levels, sources, wanted_levels)
    wanted = torch.from_numpy(wanted_levels.T.copy()).view(targets.shape)  # (1, C, N, 1)
    model = create_img2img_model(
        inputs.shape[1], targets.shape[1], "gray_blend", rounding=rounding,
        gray_rounding=gray_rounding,
    )  # fmt: skip

    def use(value: float, weights: np.ndarray) -> None:
        model.factor.fill_(value)
        model.gray.copy_(torch.from_numpy(weights))

    def score(value: float, weights: np.ndarray) -> float:
        """The share of target values the model reproduces with these parameters."""
        use(value, weights)
        out = (model(inputs).double() * LEVELS_8BIT).round()
        return float((out == wanted).double().mean())

    best: tuple[float, float, np.ndarray, float | None] | None = None
    with torch.no_grad():
        for value in _factor_candidates(factor):
            hidden = _hidden_gray(levels, sources, wanted_levels, value, rounding, gray_rounding)
            for weights, step in _gray_candidates(gray if hidden is None else hidden):
                exact = score(value, weights)
                if best is None or exact > best[0]:
                    best = (exact, value, weights, step)
        assert best is not None  # the candidates are never empty
        exact, value, weights, step = best
        for _ in range(4 if step is not None else 0):  # one step of the grid at a time
            moved = max(((score(value, w), w) for w in _neighbours(weights, step)), key=_first)
            if moved[0] <= exact:
                break
            exact, weights = moved
        use(value, weights)
    model.fit_report = {
        "images": min(len(dataset), max_images),
        "pixels": int(inputs.shape[2]),
        "factor_estimate": factor,
        "gray_estimate": gray.tolist(),
        "factor": value,
        "gray": [float(w) + 0.0 for w in np.float32(weights)],  # no -0.0
        "exact_share": exact,
        "out_of_time": False,
    }
    return model

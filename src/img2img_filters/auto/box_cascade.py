"""``--arch auto``'s test for a linear blur computed as rounded box passes, and its settings.

A blur that an 8-bit tool computes as a few box passes, each rounded back to 8
bits (Pillow's ``GaussianBlur``; :class:`~img2img_filters.models.BoxCascadeNet`),
is linear to the probe, and the exact least-squares kernel matches it closely,
yet leaves about a quarter of its values one level off: the rounding between the
passes is not a convolution. :func:`box_cascade_candidate` reads the blur's
width from the least-squares kernel (the variance of its rows and of its
columns), and for each number of passes from 1 to :data:`MAX_SEARCH_PASSES`
derives the box radius of that variance, then scans the integer weights around
its own, coarse to fine; each setting is scored by its squared error on the
photos. The best is taken when it matches the photos better than the
least-squares kernel does, so a blur rounded once (or not at all) keeps its
kernel. The passes blur each channel on its own: a kernel that mixes channels
(its colour matrix, rounded to two decimals, is not the identity) is left to
least squares.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from img2img_filters.auto.recipes import AutoChoice
from img2img_filters.auto.scoring import least_error_options, mean_squared_error, sample_batch
from img2img_filters.models import create_img2img_model
from img2img_filters.models.box_cascade import FRACTION_BITS, box_weights
from img2img_filters.probe import ProbeReport
from img2img_filters.solve import fit_linear

__all__ = ["MAX_SEARCH_PASSES", "box_cascade_candidate", "box_cascade_choice", "box_variance"]

#: The most passes tried.
MAX_SEARCH_PASSES = 6
#: The steps the inner weight moves by, coarse to fine, and the moves each way at each step.
_INNER_STEPS, _MOVES = (4096, 512, 64, 8, 1), 8
#: The borders tried at the best setting (tools extend rows by their end pixels first).
_BORDERS = ("replicate", "reflect101", "reflect", "constant")
#: Photos the least-squares kernel is fitted on, and photos the settings are scored on.
FIT_PHOTOS, SCORE_PHOTOS = 32, 24


def box_variance(radius: float) -> float:
    """The variance (pixels squared) of one pass of a box of fractional radius ``radius``."""
    whole, inner, outer = box_weights(radius)
    offsets = np.arange(1, whole + 1, dtype=np.float64)
    return float(2.0 * (inner * np.square(offsets).sum() + outer * (whole + 1) ** 2)) / (
        1 << FRACTION_BITS
    )


def _radius_of_variance(variance: float) -> float | None:
    """The box radius whose one pass has ``variance`` (bisection), or ``None`` beyond 60 px."""
    low, high = 1e-3, 60.0
    if not box_variance(low) <= variance <= box_variance(high):
        return None
    for _ in range(60):
        middle = 0.5 * (low + high)
        if box_variance(middle) < variance:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _kernel_variances(kernel: torch.Tensor) -> tuple[float, float, np.ndarray]:
    """``(row variance, column variance, colour matrix)`` of a fitted ``(out, in, k, k)`` kernel.

    The variances are those of the kernel's weights summed over its inputs and outputs,
    along each axis; the colour matrix ``(out, in)`` is each kernel's sum.
    """
    weights = kernel.double()
    matrix = weights.sum(dim=(2, 3)).numpy()
    total = weights.sum(dim=(0, 1))
    total = total / total.sum()
    offsets = torch.arange(total.shape[-1], dtype=torch.float64) - total.shape[-1] // 2
    rows = float((total.sum(dim=0) * offsets.square()).sum())
    columns = float((total.sum(dim=1) * offsets.square()).sum())
    return rows, columns, matrix


def _passes(count: int) -> str:
    return "1 pass" if count == 1 else f"{count} passes"


def _better(error: float, least: float) -> bool:
    """Whether ``error`` is less than ``least`` by more than float32 noise (ties keep ``least``)."""
    return error < least * (1.0 - 1e-6) - 1e-14


def _error(options: dict[str, Any], inputs: torch.Tensor, targets: torch.Tensor) -> float:
    model = create_img2img_model(inputs.shape[1], targets.shape[1], "box_cascade", **options)
    return mean_squared_error(model, inputs, targets)


def _radius_of_inner(whole: int, inner: int) -> float | None:
    """A radius whose pass has these whole radius and inner weight, or ``None`` if none has."""
    radius = ((1 << FRACTION_BITS) / (inner + 0.5) - 1.0) / 2.0
    return radius if box_weights(radius)[:2] == (whole, inner) else None


def _search_inner(
    passes: int, whole: int, centre: float, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[float, dict[str, Any]] | None:
    """The least error over the inner weights of one whole radius, coarse to fine.

    Each inner weight (an integer) is a different blur, and neighbouring ones differ
    on few pixels: the scan starts from the weight of ``centre`` and moves by
    :data:`_INNER_STEPS` in turn, keeping the best (ties: the one it holds).
    """
    one = 1 << FRACTION_BITS
    low, high = one // (2 * whole + 3) + 1, one // (2 * whole + 1)  # whole <= R < whole + 1
    start = min(max(box_weights(max(centre, whole))[1], low), high)
    best: tuple[float, dict[str, Any]] | None = None
    held = start
    for step in (0, *_INNER_STEPS):
        around = held
        for move in sorted(range(-_MOVES, _MOVES + 1), key=abs) if step else [0]:
            inner = around + move * step
            radius = _radius_of_inner(whole, inner) if low <= inner <= high else None
            if radius is None:
                continue
            options = {"radius": radius, "passes": passes, "border": "replicate"}
            error = _error(options, inputs, targets)
            if best is None or _better(error, best[0]):
                best, held = (error, options), inner
    return best


def box_cascade_candidate(
    kernel: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, kernel_error: float
) -> tuple[AutoChoice, float] | None:
    """The best rounded box cascade for a blur, when it beats the least-squares kernel.

    Args:
        kernel: The least-squares kernel ``(out, in, k, k)`` fitted to the operator.
        inputs: Photos ``(B, in, H, W)``.
        targets: Their targets ``(B, out, H, W)``.
        kernel_error: The kernel's mean squared error on these photos.

    Returns:
        ``(choice, mean squared error)``: an ``"exact"`` ``"box_cascade"`` choice whose
        options hold the radius, the passes and the border; or ``None`` when no setting
        beats ``kernel_error``, or the kernel is no per-channel blur (its colour matrix is
        not the identity, an axis has a variance no box of at most 60 px has).
    """
    rows, columns, matrix = _kernel_variances(kernel)
    per_channel = matrix.shape[0] == matrix.shape[1] and np.array_equal(
        np.round(matrix, 2), np.eye(matrix.shape[0])
    )
    if not per_channel or not np.isfinite(rows + columns) or rows <= 0 or columns <= 0:
        return None
    variance = 0.5 * (rows + columns)
    best: tuple[float, dict[str, Any]] | None = None
    for passes in range(1, MAX_SEARCH_PASSES + 1):
        centre = _radius_of_variance(variance / passes)
        if centre is None:
            continue
        for whole in sorted({math.floor(max(centre - 0.1, 0.0)), math.floor(centre + 0.1)}):
            found = _search_inner(passes, whole, centre, inputs, targets)
            if found is not None and (best is None or _better(found[0], best[0])):
                best = found
    if best is None:
        return None
    for border in _BORDERS[1:]:
        options = {**best[1], "border": border}
        error = _error(options, inputs, targets)
        if _better(error, best[0]):
            best = (error, options)
    error, options = best
    if not error < kernel_error:
        return None
    choice = AutoChoice(
        "exact",
        "box_cascade",
        options,
        reason=f"probed linear operator whose least-squares kernel (variance {rows:.3g} along "
        f"rows, {columns:.3g} along columns) leaves a mean squared error of "
        f"{kernel_error:.3g}; {_passes(options['passes'])} of a box of radius "
        f"{options['radius']:.6g}, each rounded to 8 bits, leave {error:.3g}",
    )
    return choice, error


def box_cascade_choice(
    report: ProbeReport, dataset: Any, found: str, widest: int
) -> AutoChoice | None:
    """For a probed linear operator: the box cascade, when it matches the photos better.

    Args:
        report: The probe's report (a ``linear`` verdict with a bounded radius).
        dataset: The training dataset (``batch(positions, device)``, ``len``).
        found: The start of the probe line (what the probe found).
        widest: The widest least-squares kernel to fit.

    Returns:
        The choice of :func:`box_cascade_candidate`, its ``probe`` and ``probe_line``
        set; ``None`` for another verdict, an unbounded radius, a dataset without
        ``batch``, or when the least-squares kernel matches at least as well.
    """
    radius = report.support_radius
    if report.verdict != "linear" or radius is None or not hasattr(dataset, "batch"):
        return None
    size = min(2 * radius + 1, widest)
    try:
        fitted = fit_linear(dataset, size, max_images=min(len(dataset), FIT_PHOTOS))
    except ValueError:  # photos smaller than the kernel
        return None
    inputs, targets = sample_batch(dataset, SCORE_PHOTOS)
    candidates = [{"kernel_size": size, "depth": 1, "border": border} for border in _BORDERS]
    options = least_error_options(fitted, "linear", candidates, inputs, targets)
    kernel_model = create_img2img_model(inputs.shape[1], targets.shape[1], "linear", **options)
    kernel_model.load_state_dict(fitted.state_dict())
    kernel_error = mean_squared_error(kernel_model, inputs, targets)
    kernel = fitted.layers[0].weight.detach()
    found_cascade = box_cascade_candidate(kernel, inputs, targets, kernel_error)
    if found_cascade is None:
        return None
    choice = found_cascade[0]
    settings = choice.options
    choice.probe = report.to_dict()
    choice.probe_line = (
        f"{found} -> box_cascade(radius={settings['radius']:.6g}, passes={settings['passes']}), "
        f"border {settings['border']}"
    )
    return choice

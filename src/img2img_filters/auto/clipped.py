"""``--arch auto``'s test for a teacher that is linear up to clipping, and its exact fit.

A sharpening, an edge filter or a colour boost saved to an 8-bit file is a
convolution clipped to ``[0, 1]``: the probe calls it local (or pointwise),
because clipping is not linear, and a network learns it only roughly (about 25
to 32 dB in ``benchmarks/operators.py``). :func:`clipped_linear_choice` fits
the clipped linear filter of the probed support by least squares on some
training photos (:func:`img2img_filters.solve.fit_linear` with ``clip``) and
measures it on others, away from the border; when its RMS error is within one
8-bit step of the output span (:data:`CLIPPED_TOLERANCE`), the exact fit is
chosen. A global operator is tried as a colour matrix plus a linear map of the
photo's mean colour (a contrast change about the mean, as Pillow's
``ImageEnhance.Contrast`` makes). :func:`match_clipped_border` then picks the
border extension, and whether the tool leaves the photo's outermost pixels as
they were (Pillow's kernel filters do), by the error over whole photos.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from img2img_filters.auto.recipes import AutoChoice
from img2img_filters.auto.scoring import least_error_options, sample_batch
from img2img_filters.border import BORDER_MODES
from img2img_filters.probe import ProbeReport
from img2img_filters.solve import fit_linear

__all__ = ["CLIPPED_TOLERANCE", "clipped_linear_choice", "match_clipped_border"]

#: The largest RMS error, as a fraction of the output span, at which the clipped linear fit
#: is taken: one 8-bit step (about 48 dB for outputs in [0, 1]).
CLIPPED_TOLERANCE = 1.0 / 255
#: Photos the candidate is fitted on, then photos it is measured on.
FIT_PHOTOS, CHECK_PHOTOS = 48, 16
#: The widest kernel tried.
MAX_CLIPPED_KERNEL = 21


def _clip_range(report: ProbeReport) -> tuple[float, float] | None:
    """``(0, 1)`` when the outputs lie in it and touch an end (they were clipped), else ``None``."""
    low, high = report.output_range
    if low < 0.0 or high > 1.0 or (low > 0.0 and high < 1.0):
        return None
    return 0.0, 1.0


def clipped_linear_choice(report: ProbeReport, dataset: Any, border: str) -> AutoChoice | None:
    """The exact clipped linear fit, when the teacher is one to within :data:`CLIPPED_TOLERANCE`.

    Args:
        report: The probe's report: a ``pointwise`` or ``local`` verdict with a
            support radius of at most ``MAX_CLIPPED_KERNEL // 2``, or a ``global`` one
            (tried as a colour matrix plus a map of the photo's mean colour, as a
            contrast change about the mean is).
        dataset: The training dataset (``batch(positions, device)``, ``len``).
        border: The border the model extends images by (before it is matched).

    Returns:
        An ``"exact"`` ``"clipped_linear"`` choice, its border matched
        (:func:`match_clipped_border`) and its reason saying what was measured; or
        ``None`` when the teacher is not linear up to clipping (or cannot be tested:
        another verdict, no radius, no ``batch``).
    """
    radius, image_mean = report.support_radius, report.verdict == "global"
    if image_mean:  # a change about the photo's mean colour: pointwise but for the mean
        radius = 0
    elif report.verdict not in ("pointwise", "local") or radius is None:
        return None
    size = 2 * radius + 1
    clip = _clip_range(report)
    if size > MAX_CLIPPED_KERNEL or clip is None or not hasattr(dataset, "batch"):
        return None
    try:
        fitted = fit_linear(dataset, size, clip=clip, max_images=FIT_PHOTOS, image_mean=image_mean)
    except ValueError:  # photos too small for the kernel, every target clipped: not this kind
        return None
    first = FIT_PHOTOS if len(dataset) > FIT_PHOTOS else 0  # after the fitted photos if any
    inputs, targets = sample_batch(dataset, CHECK_PHOTOS, first)
    with torch.no_grad():
        outputs = fitted(inputs)
    inner = (
        ...,
        slice(radius, outputs.shape[-2] - radius),
        slice(radius, outputs.shape[-1] - radius),
    )
    error = float((outputs - targets)[inner].double().pow(2).mean().sqrt()) / (clip[1] - clip[0])
    of_mean = " of each pixel and the photo's mean colour" if image_mean else ""
    measured = f"linear{of_mean} up to clipping to [0, 1]: RMS error {error:.2g} of the span"
    if not error <= CLIPPED_TOLERANCE:
        return None
    what = "3->3 colour matrix" if size == 1 else f"{size}x{size} kernel"
    what += " and a map of the photo's mean colour" if image_mean else ""
    choice = AutoChoice(
        "exact",
        "clipped_linear",
        {
            "kernel_size": size,
            "depth": 1,
            "border": border,
            "low": clip[0],
            "high": clip[1],
            "image_mean": image_mean,
        },
        reason=f"probed {report.verdict} operator, {measured} (at most {CLIPPED_TOLERANCE:.2g}): "
        f"exact least-squares fit of a {what} on the pixels the clipping left alone",
    )
    return match_clipped_border(choice, dataset, fitted)


def match_clipped_border(
    choice: AutoChoice, dataset: Any, fitted: nn.Module, photos: int = 32
) -> AutoChoice:
    """Set the border and ``keep_edge`` of a clipped linear choice by the error on whole photos.

    Every border of :data:`img2img_filters.border.BORDER_MODES` but ``wrap`` is tried,
    each with the photo's outer ring of the kernel's radius computed or left as the
    input (the latter only for as many output channels as input channels); the least
    squared error wins (ties: the first, ``reflect101`` computed).

    Args:
        choice: A ``"clipped_linear"`` choice from :func:`clipped_linear_choice`.
        dataset: The training dataset.
        fitted: The clipped linear fit of the choice's kernel.
        photos: How many photos (spread evenly).

    Returns:
        ``choice``, its ``border`` and ``keep_edge`` options set, and
        ``", border NAME"`` (and the ring kept) added to its ``probe_line``.
    """
    options = choice.options
    radius = options["kernel_size"] // 2
    inputs, targets = sample_batch(dataset, photos)
    rings = [0, radius] if radius and inputs.shape[1] == targets.shape[1] else [0]
    candidates = (
        {**options, "border": border, "keep_edge": ring}
        for border in BORDER_MODES
        if border != "wrap"  # no tool extends photos periodically by default
        for ring in rings
    )
    best = least_error_options(fitted, "clipped_linear", candidates, inputs, targets)
    options["border"], options["keep_edge"] = best["border"], best["keep_edge"]
    kept = f", the outer {best['keep_edge']} px kept from the input" if best["keep_edge"] else ""
    choice.probe_line += f", border {best['border']}{kept}"
    return choice

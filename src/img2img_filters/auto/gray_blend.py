"""``--arch auto``'s test for a colour operator that rounds like an 8-bit tool: the gray blend.

A saturation or brightness change (Pillow's ``ImageEnhance.Color`` and
``Brightness``) is a colour matrix, clipped: :mod:`img2img_filters.auto.clipped`
fits it to within the rounding, yet about one value in twelve comes out a level
off, because the tool rounds the pixel's gray before the blend and cuts the blend
to a level after it (:class:`~img2img_filters.models.GrayBlendNet`). For an
operator the probe calls pointwise (or linear of radius 0), :func:`gray_blend_choice`
first fits a colour matrix clipped to ``[0, 1]``; when its RMS error is within one
8-bit step (the operator is a colour matrix up to clipping and rounding), it fits a
gray blend under each way of rounding (:func:`img2img_filters.solve.fit_gray_blend`)
on :data:`FIT_PHOTOS` training photos, measures it on :data:`CHECK_PHOTOS` others,
and takes the best when its squared error is below the colour matrix's.
"""

from __future__ import annotations

import itertools
from typing import Any

from img2img_filters.auto.clipped import CLIPPED_TOLERANCE
from img2img_filters.auto.recipes import AutoChoice
from img2img_filters.auto.scoring import mean_squared_error, sample_batch
from img2img_filters.models.gray_blend import GRAY_ROUNDINGS, ROUNDINGS
from img2img_filters.probe import ProbeReport
from img2img_filters.solve import fit_gray_blend, fit_linear

__all__ = ["CHECK_PHOTOS", "FIT_PHOTOS", "gray_blend_choice"]

#: Photos each gray blend is fitted on, then photos it is measured on.
FIT_PHOTOS, CHECK_PHOTOS = 24, 16


def gray_blend_choice(report: ProbeReport, dataset: Any, found: str) -> AutoChoice | None:
    """The gray blend that matches the photos best, when it beats a colour matrix.

    Args:
        report: The probe's report: ``pointwise``, or ``linear`` of radius 0, with RGB in
            and RGB (or one channel) out.
        dataset: The training dataset (``batch(positions, device)``, ``len``).
        found: The start of the probe line (what the probe found).

    Returns:
        An ``"exact"`` ``"gray_blend"`` choice (its roundings in the options; the factor
        and gray weights are fitted by :func:`img2img_filters.auto.fit_auto`), its
        ``probe`` and ``probe_line`` set; or ``None`` for another operator, when the
        least-squares colour matrix (clipped to ``[0, 1]``) is more than one 8-bit step
        off (a curve, not a matrix) or matches as well.
    """
    pointwise = report.verdict == "pointwise" or (
        report.verdict == "linear" and report.support_radius == 0
    )
    if not pointwise or report.channels_in != 3 or not hasattr(dataset, "batch"):
        return None
    first = FIT_PHOTOS if len(dataset) > FIT_PHOTOS else 0  # after the fitted photos if any
    inputs, targets = sample_batch(dataset, CHECK_PHOTOS, first)
    if targets.shape[1] > inputs.shape[1]:
        return None
    try:
        matrix = fit_linear(dataset, 1, clip=(0.0, 1.0), max_images=FIT_PHOTOS)
    except ValueError:  # every target clipped: no colour matrix to compare with
        return None
    matrix_error = mean_squared_error(matrix, inputs, targets)
    if not matrix_error <= CLIPPED_TOLERANCE**2:  # not a colour matrix up to rounding
        return None
    best: tuple[float, dict[str, Any], Any] | None = None
    for rounding, gray_rounding in itertools.product(ROUNDINGS, GRAY_ROUNDINGS):
        try:
            model = fit_gray_blend(
                dataset, rounding=rounding, gray_rounding=gray_rounding, max_images=FIT_PHOTOS
            )
        except ValueError:  # targets clipped nearly everywhere
            return None
        error = mean_squared_error(model, inputs, targets)
        if best is None or error < best[0]:
            best = (error, {"rounding": rounding, "gray_rounding": gray_rounding}, model)
    assert best is not None  # the roundings are never empty
    error, options, model = best
    if not error < matrix_error:
        return None
    fitted = model.fit_report
    gray = ", ".join(f"{weight:.6g}" for weight in fitted["gray"])
    choice = AutoChoice(
        "exact",
        "gray_blend",
        options,
        reason=f"probed {report.verdict} operator: each pixel blended with its gray "
        f"({gray}, rounded: {options['gray_rounding']}) by {fitted['factor']:.6g}, cut to a "
        f"level ({options['rounding']}); mean squared error {error:.3g} on "
        f"{len(inputs)} photos, against {matrix_error:.3g} for the clipped colour matrix",
    )
    choice.probe = report.to_dict()
    choice.probe_line = (
        f"{found} -> gray_blend(factor={fitted['factor']:.6g}, gray={gray}; "
        f"{options['gray_rounding']} gray, {options['rounding']} output)"
    )
    return choice

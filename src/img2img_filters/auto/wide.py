"""``--arch auto`` for wide and global operators: candidates built for them, scored on the data.

An operator the probe finds wide (local of radius :data:`EDGE_AWARE_RADIUS` or
more) or global may be one of a few families img2img has a model for: edge-aware
smoothing along rows and columns (a domain transform,
:mod:`img2img_filters.auto.edge_aware`) or adaptive contrast (a tile-histogram
equalisation, :mod:`img2img_filters.auto.equalisation`). Each candidate's
settings are searched on :data:`SCORE_PHOTOS` training photos, scored by the
error of a least-squares linear head on its features. A shift-invariant one
always gets the domain transform; otherwise the best candidate is taken when
its head reaches :data:`WIDE_PSNR`; when none does, a global operator whose
outputs span the same range on every photo gets a local network with each
photo's levels stretched (:mod:`img2img_filters.auto.stretch`), and any other
is left to the general recipe of the caller.
"""

from __future__ import annotations

from typing import Any

from img2img_filters.auto.edge_aware import (
    EDGE_AWARE_RADIUS,
    domain_transform_candidate,
    is_edge_aware,
)
from img2img_filters.auto.equalisation import equalisation_candidate
from img2img_filters.auto.recipes import AutoChoice
from img2img_filters.auto.scoring import sample_batch
from img2img_filters.auto.stretch import stretch_choice
from img2img_filters.probe import ProbeReport

__all__ = ["SCORE_PHOTOS", "WIDE_PSNR", "is_wide", "wide_choice"]

#: Photos the candidates' settings are scored on.
SCORE_PHOTOS = 12
#: The least-squares PSNR (dB) at which a candidate is taken for an operator that is not
#: shift-invariant.
WIDE_PSNR = 30.0
#: The options each architecture's probe line shows.
_SHOWN = {
    "domain_transform": ("transform", "sigma_s", "sigma_r", "edges"),
    "equalisation": ("value", "tiles", "clip_limit"),
}


def is_wide(report: ProbeReport) -> bool:
    """Whether the operator is global, or local of at least :data:`EDGE_AWARE_RADIUS`."""
    radius = report.support_radius
    wide_local = report.verdict == "local" and (radius is None or radius >= EDGE_AWARE_RADIUS)
    return report.verdict == "global" or wide_local


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def wide_choice(report: ProbeReport, dataset: Any, found: str) -> AutoChoice | None:
    """The candidate for a wide or global operator, or ``None`` when none explains it.

    Args:
        report: What the probe found (:func:`is_wide` holds).
        dataset: The training dataset (``batch(positions, device)``, ``len``).
        found: The start of the probe line (what the probe found).

    Returns:
        The choice, with ``probe`` and ``probe_line`` set (the settings and the
        least-squares PSNR; or the stretch's), or ``None``.
    """
    inputs, targets = sample_batch(dataset, SCORE_PHOTOS)
    invariant = is_edge_aware(report)
    if invariant:
        choice, psnr = domain_transform_candidate(inputs, targets)
    else:
        candidates = [
            domain_transform_candidate(inputs, targets),
            equalisation_candidate(inputs, targets),
        ]
        choice, psnr = max(candidates, key=lambda candidate: candidate[1])
        if psnr < WIDE_PSNR:
            return stretch_choice(report, dataset, found)
    options = ", ".join(f"{key}={_shown(choice.options[key])}" for key in _SHOWN[choice.arch])
    choice.probe = report.to_dict()
    choice.probe_line = (
        f"{found}{', shift-invariant' if invariant else ''} -> {choice.arch}({options}; "
        f"least-squares head {psnr:.1f} dB)"
    )
    return choice

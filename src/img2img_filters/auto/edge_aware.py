"""``--arch auto`` for wide, shift-invariant operators: a domain transform, its scales chosen first.

Edge-preserving smoothing and detail enhancement (OpenCV's ``edgePreservingFilter``
and ``detailEnhance``) average each pixel along the photo's rows and columns
until a colour edge stops them. :class:`~img2img_filters.models.DomainTransformNet`
is built for that, but gradient descent moves its spatial and range scales
(``sigma_s``, ``sigma_r``) slowly and can settle far from the operator's. So
:func:`domain_transform_choice` first scores a grid of scales on a few training
photos: for each, the model's smoothed features are fixed and the best linear
head is a least-squares fit, whose error says how well those scales can do.
Training starts from the best pair.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from img2img_filters.auto.recipes import GRADIENT_TRAIN, REFINE, AutoChoice
from img2img_filters.auto.scoring import sample_batch
from img2img_filters.models import DomainTransformNet
from img2img_filters.probe import ProbeReport

__all__ = ["EDGE_AWARE_RADIUS", "SIGMA_R_GRID", "SIGMA_S_GRID", "domain_transform_choice"]

#: A shift-invariant operator of at least this support radius (or an unbounded one) is treated
#: as edge-aware smoothing.
EDGE_AWARE_RADIUS = 16
#: The spatial scales (pixels) and range scales tried.
SIGMA_S_GRID = (5.0, 10.0, 20.0, 40.0, 80.0)
SIGMA_R_GRID = (0.1, 0.2, 0.4, 0.8, 1.6)
#: Photos the scales are scored on.
SCORE_PHOTOS = 12
#: The options the network trains with besides the scales.
_OPTIONS = {"guide": 3, "hidden": 64, "layers": 2}


def head_error(
    inputs: torch.Tensor, targets: torch.Tensor, sigma_s: float, sigma_r: float
) -> float:
    """The RMS error of the best linear head on the domain transform of these scales.

    Args:
        inputs: Photos ``(B, C, H, W)``.
        targets: Their targets ``(B, C_out, H, W)``.
        sigma_s: Spatial scale.
        sigma_r: Range scale.

    Returns:
        The RMS residual of the least-squares fit of the targets on the head's inputs (and
        a constant), over every pixel.
    """
    model = DomainTransformNet(inputs.shape[1], targets.shape[1], sigma_s=sigma_s, sigma_r=sigma_r)
    with torch.no_grad():
        z = model.head_inputs(inputs).reshape(-1, model.linear.in_features).double()
    design = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
    y = targets.permute(0, 2, 3, 1).reshape(-1, targets.shape[1]).double()
    solution = torch.linalg.lstsq(design, y, driver="gelsd").solution
    return float((design @ solution - y).pow(2).mean().sqrt())


def is_edge_aware(report: ProbeReport) -> bool:
    """Whether the probe found a wide (or unbounded), shift-invariant, non-linear operator."""
    wide = report.support_radius is None or report.support_radius >= EDGE_AWARE_RADIUS
    shift = report.shift_invariant  # a Measure; None from pairs, where it cannot be measured
    invariant = shift is not None and shift.holds is True
    return report.verdict in ("local", "global") and wide and invariant


def domain_transform_choice(dataset: Any) -> AutoChoice:
    """A ``domain_transform`` choice, its ``sigma_s`` and ``sigma_r`` the best of the grids.

    Args:
        dataset: The training dataset (``batch(positions, device)``, ``len``).

    Returns:
        A gradient choice; its reason names the scales and their least-squares error.
    """
    inputs, targets = sample_batch(dataset, SCORE_PHOTOS)
    scores = {(s, r): head_error(inputs, targets, s, r) for s in SIGMA_S_GRID for r in SIGMA_R_GRID}
    (sigma_s, sigma_r), error = min(scores.items(), key=lambda item: item[1])
    psnr = math.inf if error == 0 else -20 * math.log10(error)
    return AutoChoice(
        "gradient",
        "domain_transform",
        {**_OPTIONS, "sigma_s": sigma_s, "sigma_r": sigma_r},
        {**GRADIENT_TRAIN, "learning_rate": 1e-2},
        dict(REFINE),
        reason=f"a wide, shift-invariant operator: edge-aware smoothing by a learnt domain "
        f"transform, starting from sigma_s={sigma_s:g}, sigma_r={sigma_r:g} (the best of "
        f"{len(scores)} scales for a least-squares linear head: {psnr:.1f} dB)",
    )

"""``--arch auto`` for wide edge-aware operators: a domain transform, its settings searched first.

Edge-preserving smoothing, detail enhancement and stylization (OpenCV's
``edgePreservingFilter``, ``detailEnhance``, ``stylization``) average each
pixel along the photo's rows and columns until a colour edge stops them.
:class:`~img2img_filters.models.DomainTransformNet` is built for that, but
gradient descent moves its spatial and range scales (``sigma_s``, ``sigma_r``)
slowly and can settle far from the operator's, and its normalised-convolution
sweeps move them not at all. So :func:`domain_transform_candidate` scores
settings on a few training photos: for each, the model's smoothed features are
fixed and the best linear head is a least-squares fit
(:meth:`~img2img_filters.models.DomainTransformNet.fit_head`), whose error says
how well those settings can do. Every sweep (recursive, normalised), with and
without the edge features, is tried on a grid of scales; the best is then
refined by a search on a finer and finer logarithmic step.
"""

from __future__ import annotations

from typing import Any

import torch

from img2img_filters.auto.recipes import GRADIENT_TRAIN, REFINE, AutoChoice
from img2img_filters.metrics import rms_psnr
from img2img_filters.models import DomainTransformNet
from img2img_filters.models.domain_transform import TRANSFORMS
from img2img_filters.models.structured import fit_linear_head
from img2img_filters.probe import ProbeReport

__all__ = [
    "EDGE_AWARE_RADIUS",
    "SIGMA_R_GRID",
    "SIGMA_S_GRID",
    "domain_transform_candidate",
    "head_error",
    "is_edge_aware",
]

#: A shift-invariant operator of at least this support radius (or an unbounded one) is treated
#: as edge-aware smoothing.
EDGE_AWARE_RADIUS = 16
#: The spatial scales (pixels) and range scales tried first, half an octave apart: a
#: normalised convolution's error has sharp, narrow minima in them.
SIGMA_S_GRID = tuple(5.0 * 2.0 ** (k / 2) for k in range(11))  # 5 to 160
SIGMA_R_GRID = tuple(0.1 * 2.0 ** (k / 2) for k in range(9))  # 0.1 to 1.6
#: The best settings of the grid each refined (the best refined one is taken).
REFINE_STARTS = 2
#: The steps of the refining search: each scale is multiplied and divided by ``2 ** step``,
#: at most :data:`REFINE_MOVES` times a step.
REFINE_STEPS = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
REFINE_MOVES = 3
#: The settings are scored on every this-many-th pixel across and down (the features are
#: computed on the whole photos).
PIXEL_STRIDE = 2
#: The edge features are kept when they cut the least-squares error by at least this share.
EDGES_GAIN = 0.1
#: The options the network trains with besides the settings.
_OPTIONS = {"guide": 3, "hidden": 64, "layers": 2, "clip": True}


def head_error(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    sigma_s: float,
    sigma_r: float,
    transform: str = "recursive",
    edges: bool = False,
) -> float:
    """The RMS error of the best linear head, clipped to [0, 1], on the domain transform of these settings.

    Args:
        inputs: Photos ``(B, C, H, W)``.
        targets: Their targets ``(B, C_out, H, W)``.
        sigma_s: Spatial scale.
        sigma_r: Range scale.
        transform: The sweeps (one of :data:`~img2img_filters.models.domain_transform.TRANSFORMS`).
        edges: Whether the head reads the edge features.

    Returns:
        The RMS residual of the least-squares fit of the targets on the head's inputs (of
        every :data:`PIXEL_STRIDE`-th pixel across and down), over the photos it explains
        (see :func:`~img2img_filters.models.structured.fit_linear_head`).
    """
    model = DomainTransformNet(
        inputs.shape[1],
        targets.shape[1],
        sigma_s=sigma_s,
        sigma_r=sigma_r,
        transform=transform,
        edges=edges,
        clip=True,
    )
    with torch.no_grad():
        z = model.head_inputs(inputs)[:, ::PIXEL_STRIDE, ::PIXEL_STRIDE]
    return fit_linear_head(model.linear, z, targets[..., ::PIXEL_STRIDE, ::PIXEL_STRIDE], clip=True)


def is_edge_aware(report: ProbeReport) -> bool:
    """Whether the probe found a wide (or unbounded), shift-invariant, non-linear operator."""
    wide = report.support_radius is None or report.support_radius >= EDGE_AWARE_RADIUS
    shift = report.shift_invariant  # a Measure; None from pairs, where it cannot be measured
    invariant = shift is not None and shift.holds is True
    return report.verdict in ("local", "global") and wide and invariant


def _refine(
    inputs: torch.Tensor, targets: torch.Tensor, settings: dict[str, Any], error: float
) -> tuple[dict[str, Any], float]:
    """The scales moved while a step of :data:`REFINE_STEPS` lowers the error; the error."""
    for step in REFINE_STEPS:
        factor = 2.0**step
        moved, moves = True, 0
        while moved and moves < REFINE_MOVES:
            moved, moves = False, moves + 1
            for key in ("sigma_s", "sigma_r"):
                for scale in (factor, 1.0 / factor):
                    trial = {**settings, key: settings[key] * scale}
                    trial_error = head_error(inputs, targets, **trial)
                    if trial_error < error:
                        settings, error, moved = trial, trial_error, True
    return settings, error


def domain_transform_candidate(
    inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[AutoChoice, float]:
    """A ``domain_transform`` choice with the best settings found, and its least-squares PSNR.

    Args:
        inputs: Training photos ``(B, C, H, W)``.
        targets: Their targets ``(B, C_out, H, W)``.

    Returns:
        ``(choice, psnr)``: a gradient choice whose reason names the settings, and the PSNR
        (dB) of the least-squares linear head on them.
    """
    grid = [
        {"sigma_s": s, "sigma_r": r, "transform": transform, "edges": True}
        for transform in TRANSFORMS
        for s in SIGMA_S_GRID
        for r in SIGMA_R_GRID
    ]
    errors = [head_error(inputs, targets, **settings) for settings in grid]
    starts = sorted(range(len(grid)), key=errors.__getitem__)[:REFINE_STARTS]
    refined = [_refine(inputs, targets, grid[i], errors[i]) for i in starts]
    settings, error = min(refined, key=lambda pair: pair[1])
    plain = {**settings, "edges": False}  # the edge features, only where they pay
    plain_error = head_error(inputs, targets, **plain)
    if error >= (1.0 - EDGES_GAIN) * plain_error:
        settings, error = plain, plain_error
    edges = settings["edges"]
    psnr = rms_psnr(error)
    normalised = settings["transform"] == "normalised"
    # Normalised sweeps learn nothing of their scales: the least-squares head is the fit, and an
    # L1 loss keeps training from bending it towards targets no model explains.
    rate = {"loss": "l1", "learning_rate": 1e-3} if normalised else {"learning_rate": 1e-2}
    train = {**GRADIENT_TRAIN, **rate}
    shown = f"{settings['transform']} sweeps, sigma_s={settings['sigma_s']:.4g}, sigma_r="
    shown += f"{settings['sigma_r']:.4g}" + (", edge features" if edges else "")
    choice = AutoChoice(
        "gradient",
        "domain_transform",
        {**_OPTIONS, **settings},
        train,
        {} if normalised else dict(REFINE),
        reason=f"edge-aware smoothing by a learnt domain transform ({shown}: the best "
        f"{REFINE_STARTS} of {len(grid)} settings refined, for a least-squares linear head "
        f"clipped to [0, 1]: {psnr:.1f} dB) and a per-pixel head",
    )
    return choice, psnr

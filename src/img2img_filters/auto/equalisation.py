"""``--arch auto`` for adaptive contrast: a tile-histogram equalisation, its settings scored first.

Local contrast enhancement (CLAHE) is global to the probe: the tile grid
follows the photo's size, and the photo is stretched by its own extremes. Its
settings (which channel, how many tiles, the clip limit) are discrete and move
no gradient, so :func:`equalisation_candidate` scores a grid of them on a
few training photos: for each, the model's head inputs are fixed and the best
linear head is a least-squares fit, whose error says how well those settings
can do. :mod:`img2img_filters.auto.probed` weighs it against the other
candidates for wide operators.
"""

from __future__ import annotations

from typing import Any

import torch

from img2img_filters.auto.recipes import GRADIENT_TRAIN, REFINE, AutoChoice
from img2img_filters.metrics import rms_psnr
from img2img_filters.models import AdaptiveEqualisationNet
from img2img_filters.models.equalisation import VALUES

__all__ = [
    "CLIP_LIMIT_GRID",
    "TILES_GRID",
    "equalisation_candidate",
    "equalisation_error",
]

#: Tiles per side and clip limits tried, with every channel of :data:`VALUES`. Settings the
#: photos cannot tell apart (small tiles clip at one count under any small limit) score the
#: same; the first in these orders is taken, so the commonest settings come first.
TILES_GRID = (8, 4, 16, 2)
CLIP_LIMIT_GRID = (0.01, 0.02, 0.005, 0.04, 0.0)
#: The options the network trains with besides the settings.
_OPTIONS = {"hidden": 32, "layers": 2}


def equalisation_error(inputs: torch.Tensor, targets: torch.Tensor, **settings: Any) -> float:
    """The RMS error of the best linear head on the equalisation with these settings.

    Args:
        inputs: Photos ``(B, C, H, W)``.
        targets: Their targets ``(B, C_out, H, W)``.
        **settings: ``value``, ``tiles``, ``clip_limit`` (and ``bins``) of the network.

    Returns:
        The RMS residual of the least-squares fit of the targets on the head's inputs, over
        the photos it explains (see :meth:`AdaptiveEqualisationNet.fit_head`).
    """
    model = AdaptiveEqualisationNet(inputs.shape[1], targets.shape[1], **settings)
    return model.fit_head(inputs, targets)


def equalisation_candidate(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[AutoChoice, float]:
    """An ``equalisation`` choice with the best settings of the grids, and its least-squares PSNR.

    Args:
        inputs: Training photos ``(B, C, H, W)``.
        targets: Their targets ``(B, C_out, H, W)``.

    Returns:
        ``(choice, psnr)``: a gradient choice whose reason names the settings, and the PSNR
        (dB) of the least-squares linear head on them.
    """
    grid = [
        {"value": value, "tiles": tiles, "clip_limit": clip}
        for value in VALUES
        for tiles in TILES_GRID
        for clip in CLIP_LIMIT_GRID
    ]
    errors = [equalisation_error(inputs, targets, **settings) for settings in grid]
    best = min(range(len(grid)), key=errors.__getitem__)
    psnr = rms_psnr(errors[best])
    settings = grid[best]
    shown = ", ".join(f"{key}={value}" for key, value in settings.items())
    choice = AutoChoice(
        "gradient",
        "equalisation",
        {**_OPTIONS, **settings},
        # it starts at the equalisation itself: small steps, so that training cannot wreck it
        {**GRADIENT_TRAIN, "learning_rate": 1e-4},
        dict(REFINE),
        reason=f"adaptive contrast: a tile-histogram equalisation ({shown}; the best of "
        f"{len(grid)} settings for a least-squares linear head: {psnr:.1f} dB) and a per-pixel "
        "head",
    )
    return choice, psnr

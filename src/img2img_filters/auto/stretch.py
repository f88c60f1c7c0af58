"""``--arch auto`` for an operator that ends by stretching each photo's levels: ``stretch``.

An operator that stretches each photo's levels between two of its quantiles
(auto-levels; ImageMagick's ``-charcoal`` after its edges and blur) leaves a
mark on its outputs: nearly every photo's output spans the same range, from the
same darkest to the same brightest value, whatever the photo.
:func:`same_range_on_every_photo` looks for it, and :func:`stretch_choice`
then chooses :class:`~img2img_filters.models.LevelStretchNet`.

Training it from scratch is slow: the quantiles of a network that knows nothing
yet are noise, and the stretch hides how far its local part is from the
operator's. :func:`pretrain_stretch` (which a run calls before gradient training)
therefore first trains the local network alone with each photo's stretch solved
in closed form: on the pixels the stretch did not clip, the target is an affine
function of ``I``, whose best offset and scale for each photo and output
channel are a least-squares fit, so the loss is what no affine map of ``I``
explains (variable projection). Then it tries pairs of quantile levels
(:data:`LOW_LEVELS`, :data:`HIGH_LEVELS`; ``I`` or ``-I``), fits the head by least
squares for each, and keeps the best. On ImageMagick's charcoal (400 mini Tiny
ImageNet photos, 100 s on two cores): trained end to end with the right levels
given, 29.6 dB; pretrained so, 34.4 dB, and the levels found are the tool's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from img2img_filters.auto.recipes import GRADIENT_TRAIN, AutoChoice
from img2img_filters.auto.scoring import sample_batch
from img2img_filters.models.stretch import LevelStretchNet
from img2img_filters.probe import ProbeReport

__all__ = [
    "HIGH_LEVELS",
    "LOW_LEVELS",
    "PRETRAIN_STEPS",
    "SAME_RANGE_SHARE",
    "affine_residual",
    "pretrain_stretch",
    "same_range_on_every_photo",
    "stretch_choice",
]

#: The darkest shares tried as the low quantile level, and the high levels.
LOW_LEVELS = (0.0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.02)
HIGH_LEVELS = (0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 1.0)
#: The pretraining's steps without a time budget, its batch and learning rate.
PRETRAIN_STEPS, PRETRAIN_BATCH, PRETRAIN_RATE = 1500, 8, 3e-3
#: Photos the range is checked on, and the photos the levels are chosen on.
RANGE_PHOTOS, LEVEL_PHOTOS = 24, 64
#: The least span of the common range, and how far (in 8-bit steps) a photo's ends may be.
_SPAN_MIN, _ENDS_TOLERANCE = 0.5, 1.0 / 255
#: The share of photos whose ends must be the common ones.
SAME_RANGE_SHARE = 0.75
#: The network, and its fine-tuning after the pretraining.
STRETCH_OPTIONS = {"features": 8, "feature_size": 3, "window": 3, "hidden": 32, "layers": 2}
STRETCH_TRAIN = {**GRADIENT_TRAIN, "learning_rate": 1e-3}


def same_range_on_every_photo(targets: torch.Tensor) -> bool:
    """Whether the photos' outputs span the same range, at least half of ``[0, 1]`` wide.

    A stretch between quantiles reaches both ends of the range on nearly every photo
    (the share beyond a quantile may lie in one channel only and leave the end unmet).

    Args:
        targets: ``(B, C, H, W)``: the operator's outputs on ``B >= 2`` photos.

    Returns:
        True when, in every channel, at least :data:`SAME_RANGE_SHARE` of the photos have
        their least value within one 8-bit step of the photos' median least value, as many
        their greatest value within a step of the median greatest, and those medians are at
        least 0.5 apart.
    """
    if targets.shape[0] < 2:
        return False
    flat = targets.flatten(2)
    lows, highs = flat.min(dim=2).values, flat.max(dim=2).values  # (B, C)
    low, high = lows.median(dim=0).values, highs.median(dim=0).values  # (C,)
    near_low = ((lows - low).abs() <= _ENDS_TOLERANCE).double().mean(dim=0)
    near_high = ((highs - high).abs() <= _ENDS_TOLERANCE).double().mean(dim=0)
    shared = bool((near_low >= SAME_RANGE_SHARE).all() and (near_high >= SAME_RANGE_SHARE).all())
    return shared and bool((high - low >= _SPAN_MIN).all())


def stretch_choice(report: ProbeReport, dataset: Any, found: str) -> AutoChoice | None:
    """``stretch`` for a global operator whose outputs span the same range on nearly every photo.

    Args:
        report: The probe's report (a ``global`` verdict).
        dataset: The training dataset (``batch(positions, device)``, ``len``).
        found: The start of the probe line.

    Returns:
        A ``"gradient"`` ``"stretch"`` choice (the run pretrains it with
        :func:`pretrain_stretch`), or ``None``.
    """
    if report.verdict != "global" or not hasattr(dataset, "batch"):
        return None
    _, targets = sample_batch(dataset, RANGE_PHOTOS)
    if not same_range_on_every_photo(targets):
        return None
    choice = AutoChoice(
        "gradient",
        "stretch",
        {**STRETCH_OPTIONS, "border": "replicate"},
        dict(STRETCH_TRAIN),
        reason="probed global operator whose outputs span the same range on nearly every photo: a "
        "local network, each photo's levels stretched between two quantiles, a per-pixel head "
        "(pretrained with the stretch solved per photo, then the quantile levels chosen)",
    )
    choice.probe = report.to_dict()
    choice.probe_line = f"{found}, the same output range on nearly every photo -> stretch(window=3)"
    return choice


def affine_residual(intensity: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean squared error no affine map of ``intensity`` removes, photo by photo.

    For each photo and target channel, the offset and scale that map ``intensity`` to
    the target best on the pixels strictly inside the channel's range (not clipped) are
    solved in closed form; what is left is averaged over those pixels.

    Args:
        intensity: ``(B, H, W)``.
        targets: ``(B, C, H, W)``.

    Returns:
        A scalar, differentiable in ``intensity``.
    """
    flat = targets.flatten(2)
    low = flat.min(dim=2).values[:, :, None, None]
    high = flat.max(dim=2).values[:, :, None, None]
    mask = ((targets > low) & (targets < high)).to(intensity.dtype)  # (B, C, H, W)
    values = intensity.unsqueeze(1) * mask
    count = mask.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
    centred = values - (values.sum(dim=(2, 3), keepdim=True) / count) * mask
    wanted = targets * mask
    wanted = wanted - (wanted.sum(dim=(2, 3), keepdim=True) / count) * mask
    scale = (centred * wanted).sum(dim=(2, 3), keepdim=True) / (
        centred.square().sum(dim=(2, 3), keepdim=True) + 1e-12
    )
    residual = centred * scale - wanted
    return residual.square().sum() / mask.sum().clamp(min=1.0)


def _negate(network: LevelStretchNet) -> None:
    """Make the local network's output ``-I`` (it has no bias: the stretch ignores one)."""
    local = network.local
    local.linear.weight.neg_()
    if len(local.mlp):
        local.mlp[-1].weight.neg_()


def _choose_levels(network: LevelStretchNet, inputs: torch.Tensor, targets: torch.Tensor) -> str:
    """Set the quantile levels, the sign of ``I`` and the head that fit the photos best."""
    with torch.no_grad():
        intensity = network.intensity(inputs)
    best: tuple[float, float, float, bool, torch.Tensor] | None = None
    wanted = targets.permute(1, 0, 2, 3).flatten(1).double()  # (C, N)
    for low, high in ((a, b) for a in LOW_LEVELS for b in HIGH_LEVELS):
        for flip in (False, True):
            levels = (1.0 - high, 1.0 - low) if flip else (low, high)
            network.levels.copy_(torch.tensor(levels, device=network.levels.device))
            with torch.no_grad():
                stretched = network.stretched(-intensity if flip else intensity).flatten()
            design = torch.stack([stretched.double(), torch.ones_like(stretched.double())], 1)
            solution = torch.linalg.lstsq(design, wanted.T).solution  # (2, C)
            error = float((design @ solution - wanted.T).square().mean())
            if best is None or error < best[0]:
                best = (error, *levels, flip, solution)
    assert best is not None  # the level grids are never empty
    error, low, high, flip, solution = best
    with torch.no_grad():
        network.levels.copy_(torch.tensor([low, high], device=network.levels.device))
        if flip:
            _negate(network)
        network.head.weight.copy_(solution[0].float().view(-1, 1, 1, 1))
        network.head.bias.copy_(solution[1].float())
    sign = "-I" if flip else "I"
    return (
        f"levels {low:.4g} and {high:.4g} of {sign}, head fitted on {inputs.shape[0]} photos: "
        f"{-10.0 * math.log10(max(error, 1e-20)):.1f} dB"
    )


def pretrain_stretch(
    network: LevelStretchNet,
    dataset: Any,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = lambda _: None,
) -> None:
    """Train the local network with each photo's stretch solved, then choose the levels.

    Args:
        network: A ``stretch`` model (changed in place; it stays where it was).
        dataset: The training dataset (``batch(positions, device)``, ``len``).
        seconds: Time for the local network's training (``None``: ``steps`` steps).
        steps: Its steps at most (a cosine decay over the steps it will take;
            ``None``: :data:`PRETRAIN_STEPS`).
        seed: Seeds the photos each step draws.
        device: Where it trains.
        log: Where to say what was done.
    """
    steps = PRETRAIN_STEPS if steps is None else steps
    home = network.levels.device
    network.to(device)
    generator = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(network.local.parameters(), lr=PRETRAIN_RATE)
    total, done, started = steps, 0, time.perf_counter()
    loss = float("nan")
    while done < total:
        positions = generator.integers(0, len(dataset), PRETRAIN_BATCH)
        inputs, targets = dataset.batch(positions, device)
        for group in optimiser.param_groups:  # cosine decay over the planned steps
            group["lr"] = PRETRAIN_RATE * 0.5 * (1.0 + math.cos(math.pi * done / total))
        error = affine_residual(network.intensity(inputs), targets)
        optimiser.zero_grad()
        error.backward()
        optimiser.step()
        loss, done = float(error.detach()), done + 1
        if seconds is not None and done == 10:  # now the pace is known: plan the steps
            pace = (time.perf_counter() - started) / done
            total = max(done + 1, min(steps, int(seconds / pace)))
    inputs, targets = sample_batch(dataset, LEVEL_PHOTOS)
    chosen = _choose_levels(network, inputs.to(device), targets.to(device))
    network.to(home)
    log(
        f"stretch: local network trained {done} steps with each photo's stretch solved "
        f"({-10.0 * math.log10(max(loss, 1e-20)):.1f} dB on unclipped pixels, last batch, "
        f"{time.perf_counter() - started:.0f} s); {chosen}"
    )

"""How a run's network starts before gradient training.

``--arch auto`` chose some networks by a fit it can repeat at the start of
training: a least-squares linear head (the domain transform, the equalisation:
:func:`warm_start_head`). A level stretch is pretrained with each photo's stretch
solved (:func:`img2img_filters.auto.stretch.pretrain_stretch`) whoever chose it.
:func:`start_network` does whichever the network needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from img2img_filters.auto.scoring import sample_batch
from img2img_filters.auto.stretch import pretrain_stretch
from img2img_filters.metrics import rms_psnr
from img2img_filters.models.stretch import LevelStretchNet

__all__ = [
    "HEAD_PHOTOS",
    "STRETCH_PRETRAIN_SHARE",
    "WARM_START_GAIN",
    "start_network",
    "warm_start_head",
]


def start_network(
    network: nn.Module,
    train_set: Any,
    seconds: float | None,
    seed: int,
    log: Callable[[str], None],
    *,
    head: bool = True,
    device: str | torch.device = "cpu",
) -> None:
    """Start ``network`` as auto chose it, before gradient training (changed in place).

    Args:
        network: The network auto chose (on the CPU).
        train_set: Its training dataset.
        seconds: What the run's time budget leaves (``None``: no budget); a stretch's
            pretraining takes :data:`STRETCH_PRETRAIN_SHARE` of it.
        seed: The run's seed.
        log: Where to say what was done.
        head: Start a linear head at its least-squares fit (:func:`warm_start_head`; auto
            chose the network's settings by that fit).
        device: Where a stretch's pretraining runs.
    """
    if head and hasattr(network, "fit_head"):
        warm_start_head(network, train_set, log)
    if isinstance(network, LevelStretchNet):
        share = None if seconds is None else seconds * STRETCH_PRETRAIN_SHARE
        pretrain_stretch(network, train_set, seconds=share, seed=seed, device=device, log=log)


#: The share of what a time budget leaves that a ``stretch`` network's pretraining takes
#: (:func:`img2img_filters.auto.stretch.pretrain_stretch`); gradient training gets the rest.
STRETCH_PRETRAIN_SHARE = 0.5
#: Photos a model's linear head is fitted on before training (see :func:`warm_start_head`).
HEAD_PHOTOS = 12
#: The share by which the least-squares head must beat the network's own start to replace it.
WARM_START_GAIN = 0.1


def warm_start_head(network: nn.Module, train_set: Any, log: Callable[[str], None]) -> None:
    """Start ``network``'s linear head at its least-squares fit on a few training photos.

    Auto chose the network's settings by that fit's error (see
    :mod:`img2img_filters.auto.wide`); training starts from it rather than from scratch,
    unless the network's own start is within :data:`WARM_START_GAIN` of it (a start
    that is already the operator, fitted to no photo's rounding). The fit's error counts
    the photos it kept (see :func:`~img2img_filters.models.structured.fit_linear_head`),
    the start's every photo. Every process fits the same photos, so they start alike.
    """
    inputs, targets = sample_batch(train_set, HEAD_PHOTOS)
    with torch.no_grad():
        before = float((network(inputs) - targets).double().pow(2).mean().sqrt())
    start = {key: value.clone() for key, value in network.state_dict().items()}
    error = network.fit_head(inputs, targets)
    if error >= (1.0 - WARM_START_GAIN) * before:
        network.load_state_dict(start)
        log(
            f"head: its own start kept (a least-squares fit on {inputs.shape[0]} photos is "
            f"not {WARM_START_GAIN:.0%} better: {_db(error)} against {_db(before)})"
        )
        return
    log(
        f"head: least-squares start on {inputs.shape[0]} photos, {_db(error)} "
        f"(its own start: {_db(before)})"
    )


def _db(error: float) -> str:
    return f"{rms_psnr(error):.1f} dB"

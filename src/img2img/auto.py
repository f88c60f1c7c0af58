"""``--arch auto``: the exact fit for linear filters, the best architecture for the others."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from img2img.filters import Filter
from img2img.models import create_img2img_model

__all__ = ["AutoChoice", "choose_arch", "fit_auto"]

#: Stages that are a pointwise function of linear responses: a linear bank + a per-pixel MLP.
POINTWISE_OF_LINEAR = {"magnitude", "threshold", "abs", "clip"}

#: For the other non-linear stages, the architecture that did best in benchmarks/quality.py.
NONLINEAR_ARCH: dict[str, tuple[str, dict[str, Any]]] = {
    "median": ("can", {}),
    "bilateral": ("can", {}),
    "dilate": ("can", {}),
    "erode": ("can", {}),
    "open": ("can", {}),
    "close": ("can", {}),
    "canny": ("can", {}),
}


@dataclass
class AutoChoice:
    """What ``--arch auto`` does for a filter.

    Attributes:
        method: ``"exact"`` (least squares, linear filters) or ``"gradient"``.
        arch: The architecture.
        options: Its options.
        train: Training settings that suit it (loss, learning rate).
        reason: One line saying why.
    """

    method: str
    arch: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def _support(filter: Filter) -> int:
    """An odd kernel side covering the spatial support of a filter's stages."""
    radius = 0
    for stage in filter.stages:
        if stage.linear and stage.spatial:
            kh, kw = stage.kernel2d().shape
            radius += max(kh, kw) // 2
        elif stage.name == "magnitude":
            radius += max(stage.values["ksize"], 3) // 2
        elif stage.spatial and "ksize" in stage.values:
            radius += stage.values["ksize"] // 2
        elif stage.spatial and "d" in stage.values:
            radius += stage.values["d"] // 2
    return 2 * radius + 1


def choose_arch(filter: Filter) -> AutoChoice:
    """Pick how to learn ``filter``.

    Args:
        filter: The target filter.

    Returns:
        An exact least-squares fit with a kernel covering the support for linear
        filters; ``structured`` for a pointwise function of linear responses;
        otherwise the architecture listed in :data:`NONLINEAR_ARCH` (``can`` by default).
    """
    if filter.linear:
        kh, kw = filter.kernel_size
        return AutoChoice(
            "exact",
            "linear",
            {"kernel_size": max(kh, kw), "depth": 1, "border": filter.border},
            reason=f"linear filter: exact least-squares fit of its {kh}x{kw} kernel",
        )
    nonlinear = [stage for stage in filter.stages if not stage.linear]
    if all(stage.name in POINTWISE_OF_LINEAR for stage in nonlinear):
        size = _support(filter)
        return AutoChoice(
            "gradient",
            "structured",
            {"kernel_size": size, "border": filter.border},
            {"loss": "mse", "learning_rate": 3e-3},
            reason="a pointwise function of linear responses: linear features + per-pixel MLP",
        )
    last = nonlinear[-1].name
    arch, options = NONLINEAR_ARCH.get(last, ("can", {}))
    return AutoChoice(
        "gradient",
        arch,
        {**options, "border": filter.border},
        {"loss": "mse", "learning_rate": 3e-3},
        reason=f"non-linear {last!r}: {arch}, the best in the quality benchmark",
    )


def fit_auto(
    train_dataset: Any,
    val_dataset: Any,
    choice: AutoChoice,
    *,
    device: str = "auto",
    progress: bool = True,
) -> tuple[nn.Module, list[float], list[float]]:
    """Fit a linear filter exactly: the closed-form least-squares kernel.

    Args:
        train_dataset: A dataset with ``batch()`` (``FilteredDataset``).
        val_dataset: Its validation twin.
        choice: An ``"exact"`` choice from :func:`choose_arch`.
        device: Where to accumulate the normal equations.
        progress: Show a progress bar.

    Returns:
        ``(model, train_losses, val_losses)``: one "epoch" with the L1 losses of the fit.
    """
    from img2img.metrics import compute_metrics
    from img2img.solve import fit_linear

    if choice.method != "exact":
        raise ValueError(f"fit_auto fits exact choices only; got method {choice.method!r}")
    started = time.perf_counter()
    model = fit_linear(
        train_dataset,
        choice.options["kernel_size"],
        border=choice.options.get("border"),
        device=device,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    train_l1 = compute_metrics(model, train_dataset, device=device, max_images=4096)["l1"]
    val_l1 = compute_metrics(model, val_dataset, device=device)["l1"]
    model.training_summary = {
        "epochs": 1,
        "best_epoch": 1,
        "best_val_loss": val_l1,
        "stopped": "closed-form least-squares fit",
        "seconds": seconds,
    }
    return model, [train_l1], [val_l1]


def default_model(filter: Filter, arch: str, options: dict[str, Any]) -> nn.Module:
    """A model for ``filter``: RGB in, the filter's channels out; borders match the filter's.

    The study's network keeps its zero padding unless ``border`` is given.
    """
    options = dict(options)
    if arch != "study":
        options.setdefault("border", filter.border)
    return create_img2img_model(3, filter.out_channels, arch, **options)

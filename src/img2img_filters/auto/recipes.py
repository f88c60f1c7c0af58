"""What ``--arch auto`` chooses from: the recipes of the filter library's stages, the choice.

See :mod:`img2img_filters.auto` for the recipes' benchmark numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_RECIPE",
    "GRADIENT_TRAIN",
    "NONLINEAR_ARCH",
    "POINTWISE_OF_LINEAR",
    "POINTWISE_RECIPE",
    "REFINE",
    "VERDICT_ARCHS",
    "AutoChoice",
    "Recipe",
    "arch_for_verdict",
]


@dataclass(frozen=True)
class Recipe:
    """How ``--arch auto`` learns filters whose last non-linear stage is of one kind.

    Attributes:
        arch: The architecture.
        options: Its fixed options.
        sized: The option that receives the filter's support (``window``: the
            neighbourhood; ``feature_size``: the linear features), so that the
            receptive field covers the filter; ``None``: no sizing.
        train: Options of :func:`img2img_filters.train_model` (loss, learning rate, batch size).
        refine: Settings of the L-BFGS polish after training (see :func:`img2img_filters.solve.lbfgs_refine`):
            ``images`` and ``steps``, and ``share``, the fraction of a time budget
            it takes from training; empty: none.
        reason: Why, with the benchmark's numbers.
    """

    arch: str
    options: dict[str, Any]
    sized: str | None
    train: dict[str, Any]
    refine: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


#: Stages that are a pointwise function of linear responses.
POINTWISE_OF_LINEAR = {"magnitude", "threshold", "abs", "clip"}

GRADIENT_TRAIN = {"loss": "mse", "batch_size": 8}
#: The L-BFGS polish of the neighbourhood recipes: photos, steps, share of the time budget.
REFINE = {"images": 128, "steps": 200, "share": 0.25}

#: The recipe for pointwise functions of linear responses.
POINTWISE_RECIPE = Recipe(
    "neighbourhood",
    {"features": 8, "window": 1, "sort": False, "absolute": True, "hidden": 32, "layers": 2},
    "feature_size",
    {**GRADIENT_TRAIN, "learning_rate": 3e-3},
    REFINE,
    reason="a pointwise function of linear responses: linear features of its support, their "
    "absolute values (norms become linear) and a per-pixel MLP",
)

_RANK = Recipe(
    "neighbourhood",
    {"features": 1, "feature_size": 1, "values": True, "sort": True, "hidden": 32, "layers": 2},
    "window",
    {**GRADIENT_TRAIN, "learning_rate": 1e-2},
    REFINE,
    reason="a rank filter: the sorted window makes it linear in the head's inputs",
)

_TWO_RANK_STEPS = dataclasses.replace(
    _RANK,
    reason="two rank steps: the sorted window of their support, the MLP composes them "
    "(not benchmarked)",
)

#: For the other non-linear stages, the recipe that did best in benchmarks/quality.py.
NONLINEAR_ARCH: dict[str, Recipe] = {
    "median": _RANK,
    "dilate": _RANK,
    "erode": _RANK,
    "open": _TWO_RANK_STEPS,
    "close": _TWO_RANK_STEPS,
    "bilateral": Recipe(
        "neighbourhood",
        {
            "features": 1,
            "feature_size": 1,
            "sort": False,
            "absolute": True,
            "relative": True,
            "hidden": 64,
            "layers": 2,
        },
        "window",
        {**GRADIENT_TRAIN, "learning_rate": 3e-3},
        REFINE,
        reason="a weighted mean of its window, weights falling with the difference to the "
        "centre: linear smoothing + an MLP of the (absolute) differences",
    ),
    "canny": Recipe(
        "neighbourhood",
        {"features": 4, "window": 3, "sort": False, "absolute": True, "hidden": 64, "layers": 3},
        "feature_size",
        {**GRADIENT_TRAIN, "learning_rate": 1e-2},
        {**REFINE, "images": 64},
        reason="absolute derivatives over a 3x3 window: what non-maximum suppression and the "
        "thresholds compare (the hysteresis is not local)",
    ),
}

#: Stages without a recipe of their own.
DEFAULT_RECIPE = Recipe(
    "can",
    {},
    None,
    {"loss": "mse", "learning_rate": 3e-3},
    reason="the general context-aggregation network",
)


@dataclass
class AutoChoice:
    """What ``--arch auto`` does for a filter.

    Attributes:
        method: ``"exact"`` (least squares, linear filters) or ``"gradient"``.
        arch: The architecture.
        options: Its options.
        train: Training settings that suit it (loss, learning rate, batch size).
        refine: The L-BFGS polish after training (:func:`img2img_filters.solve.lbfgs_refine`'s ``images``,
            ``steps``, and ``share``, the fraction of a time budget it takes); empty: none.
        reason: One line saying why.
        probe: For a teacher img2img knows nothing of: what
            :func:`img2img_filters.probe.probe_operator` found (``ProbeReport.to_dict()``);
            ``None`` for the filter library's filters.
        probe_line: One line: what the probe found and what was chosen, e.g.
            ``"probe: local, radius 2 -> neighbourhood(window=5)"``; empty without a probe.
    """

    method: str
    arch: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    refine: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    probe: dict[str, Any] | None = None
    probe_line: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the choice (what run folders keep)."""
        return dataclasses.asdict(self)


#: Probe verdicts and the per-pixel architectures that suit them (``_`` and ``-`` are the same).
VERDICT_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    # A function of each pixel's colour: curves exact at 8-bit inputs, a 17^3 table for mixes.
    "pointwise": ("lut3d", {"size": 17, "curve_size": 256}),
    # An affine map of each pixel's colour (channel mixers, sepia): a 1x1 convolution.
    "colour_linear": ("linear", {"kernel_size": 1, "depth": 1}),
}
_VERDICT_ALIASES = {"color_linear": "colour_linear", "linear_colour": "colour_linear"}


def arch_for_verdict(verdict: str, channels_out: int) -> tuple[str, dict[str, Any]]:
    """The architecture and options for an operator that a probe classified as ``verdict``.

    Args:
        verdict: ``"pointwise"`` (each output pixel a function of its input pixel's
            colour: curves, levels, gamma, grading, colormaps) or ``"colour_linear"``
            (an affine map of the colour: channel mixers, sepia; ``"color_linear"``
            and ``"linear_colour"`` too).
        channels_out: Output channels of the operator (1 or more).

    Returns:
        ``(arch, options)`` for :func:`img2img_filters.create_img2img_model`: ``"lut3d"``
        (fit it with :func:`img2img_filters.solve.fit_lut`) or a 1x1 ``"linear"`` (fit it
        with :func:`img2img_filters.solve.fit_linear` and ``kernel_size=1``).

    Raises:
        TypeError: If ``verdict`` is not a string or ``channels_out`` not an integer.
        ValueError: For another verdict or ``channels_out < 1``.
    """
    if not isinstance(verdict, str):
        raise TypeError(f"verdict must be a string; got {type(verdict).__name__}")
    if isinstance(channels_out, bool) or not isinstance(channels_out, int):
        raise TypeError(f"channels_out must be an integer >= 1; got {channels_out!r}")
    if channels_out < 1:
        raise ValueError(f"channels_out must be an integer >= 1; got {channels_out!r}")
    key = verdict.strip().lower().replace("-", "_")
    key = _VERDICT_ALIASES.get(key, key)
    if key not in VERDICT_ARCHS:
        raise ValueError(f"verdict must be one of {sorted(VERDICT_ARCHS)}; got {verdict!r}")
    arch, options = VERDICT_ARCHS[key]
    return arch, dict(options)

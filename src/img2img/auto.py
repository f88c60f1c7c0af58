"""``--arch auto``: the exact fit for linear filters, the best recipe for the others.

A linear filter (any chain of linear stages) is fitted exactly: the closed-form
least-squares kernel of a size covering its support (:func:`img2img.solve.fit_linear`).
A non-linear filter is learnt by gradient descent with the :class:`Recipe` of its
last non-linear stage (:data:`POINTWISE_RECIPE`, :data:`NONLINEAR_ARCH`): an
architecture whose receptive field is sized to the filter's support, training
settings, and an L-BFGS polish (:func:`img2img.solve.lbfgs_refine`) that takes the last quarter of
a time budget. The recipes were chosen with ``benchmarks/quality.py`` (120 s a
filter on two CPU cores, the mini Tiny ImageNet's 5000 training photos,
validated on its 500; the study's network under the same budget for
comparison; table in ``benchmarks/results/quality.md``):

=================  ===============================================================  ============
stage              recipe                                                           auto (study)
=================  ===============================================================  ============
linear chains      exact least squares, kernel = the filter's                       142-158 dB,
                                                                                    kernel error
                                                                                    <= 5e-7
                                                                                    (26-34 dB)
magnitude, abs,    ``neighbourhood``: 8 linear features of the support, 1x1         65.9 dB
threshold, clip    window, values and absolute values, MLP 32x2; MSE, Adam 3e-3,     (20.4 dB)
                   batch 8; L-BFGS polish
median, dilate,    ``neighbourhood``: a learnt gray, its window of the support      median 62.6
erode              in place and sorted, MLP 32x2; MSE, Adam 1e-2, batch 8;          (27.8 dB);
                   L-BFGS polish                                                    dilate 78.3
                                                                                    (12.5 dB)
open, close        the same (two rank steps: the MLP composes them)                 not run
bilateral          ``neighbourhood``: a learnt gray, its window of the support,     46.9 dB
                   values and absolute values, the MLP's relative to the centre,    (22.6 dB)
                   MLP 64x2; MSE, Adam 3e-3, batch 8; L-BFGS polish
canny              ``neighbourhood``: four 3x3 features, their 3x3 window, values   F1 0.913
                   and absolute values, MLP 64x3; MSE, Adam 1e-2, batch 8;          (F1 0.000)
                   L-BFGS polish
other stages       ``can`` (the general context-aggregation network), MSE 3e-3      not run
=================  ===============================================================  ============

The table's numbers are from one run of the benchmark (load average about 1.5
on the two cores). Why each recipe (the numbers below are validation PSNR or F1
of shorter exploratory runs on the same machine under heavier load, one change
at a time):

* **Pointwise functions of linear responses** (``magnitude``, ``abs``,
  ``threshold``, ``clip``): linear features and a per-pixel MLP have the
  filter's very shape. With the features' absolute values in the head, a
  gradient norm is nearly linear there: ``sum_k |u_k . g|`` over eight
  directions ``u_k`` is ``|g|`` to within a percent. Magnitude in 45-60 s: the
  ``structured`` network (squared features, batch 32) 38 dB; the neighbourhood
  head with batch 32 42 dB, batch 8 47-60 dB, with absolute values 60 dB.
* **Rank filters** (``median``, ``dilate``, ``erode``): the sorted window makes
  every order statistic one input of the head, so the filter is linear there
  and learnt to the precision of the data. A linear head alone converges slowly
  under Adam (the sorted values are nearly collinear: 3x3 median 32 dB, dilation
  36 dB in 30 s); the MLP speeds it up (36 and 43 dB), batch 8 more (53 and
  48 dB in 60 s), and L-BFGS finishes the linear part (a linear-head median went
  from 32 to 63 dB in 150 iterations). The median's target is the median of the
  uint8 gray image, which no network computes from the exact photo: the
  median of the unrounded gray scores 65.0 dB, the ceiling.
* **Bilateral**: a weighted mean of the window whose weights fall with the
  difference to the centre pixel, and which commutes with adding a constant;
  so the MLP sees the window minus its centre and the absolute differences,
  and the linear part does the smoothing. 5x5 window in 60 s: values and
  sorted values 34.5 dB; relative to the centre 36.0 dB, without the sorted
  values 39.0 dB, with absolute differences 43.3 dB.
* **Canny**: non-maximum suppression and the two thresholds compare
  ``|gx| + |gy|`` of the pixel and its neighbours along the gradient's
  direction, whose sector is a comparison of ``|gy|`` with ``tan(22.5 deg) |gx|``:
  all linear in the absolute values of four 3x3 derivative features over a 3x3
  window. Pixel F1 in 90 s: MLP 64x2 0.81, with absolute values 0.845, 64x3
  0.855, Adam 1e-2 0.91 (3e-3 0.855, 2e-2 0.86; an L1 loss 0.84; a cosine decay
  0.88; eight features 0.86; a second 3x3 or 5x5 window over the MLP's outputs
  for the hysteresis 0.87). Ceilings on the validation photos: the local rule
  without hysteresis scores 0.943 (hysteresis within 1, 2, 3 pixels: 0.947,
  0.972, 0.983), and edges from the unrounded gray image 0.993.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from img2img.filters import Filter
from img2img.models import create_img2img_model
from img2img.train.config import TrainResult

__all__ = [
    "NONLINEAR_ARCH",
    "POINTWISE_OF_LINEAR",
    "AutoChoice",
    "Recipe",
    "arch_for_verdict",
    "choose_arch",
    "fit_auto",
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
        train: Options of :func:`img2img.train_model` (loss, learning rate, batch size).
        refine: Settings of the L-BFGS polish after training (see :func:`img2img.solve.lbfgs_refine`):
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

_GRADIENT_TRAIN = {"loss": "mse", "batch_size": 8}
#: The L-BFGS polish of the neighbourhood recipes: photos, steps, share of the time budget.
_REFINE = {"images": 128, "steps": 200, "share": 0.25}

#: The recipe for pointwise functions of linear responses.
POINTWISE_RECIPE = Recipe(
    "neighbourhood",
    {"features": 8, "window": 1, "sort": False, "absolute": True, "hidden": 32, "layers": 2},
    "feature_size",
    {**_GRADIENT_TRAIN, "learning_rate": 3e-3},
    _REFINE,
    reason="a pointwise function of linear responses: linear features of its support, their "
    "absolute values (norms become linear) and a per-pixel MLP",
)

_RANK = Recipe(
    "neighbourhood",
    {"features": 1, "feature_size": 1, "values": True, "sort": True, "hidden": 32, "layers": 2},
    "window",
    {**_GRADIENT_TRAIN, "learning_rate": 1e-2},
    _REFINE,
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
        {**_GRADIENT_TRAIN, "learning_rate": 3e-3},
        _REFINE,
        reason="a weighted mean of its window, weights falling with the difference to the "
        "centre: linear smoothing + an MLP of the (absolute) differences",
    ),
    "canny": Recipe(
        "neighbourhood",
        {"features": 4, "window": 3, "sort": False, "absolute": True, "hidden": 64, "layers": 3},
        "feature_size",
        {**_GRADIENT_TRAIN, "learning_rate": 1e-2},
        {**_REFINE, "images": 64},
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
        refine: The L-BFGS polish after training (:func:`img2img.solve.lbfgs_refine`'s ``images``,
            ``steps``, and ``share``, the fraction of a time budget it takes); empty: none.
        reason: One line saying why.
    """

    method: str
    arch: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    refine: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def _support(filter: Filter) -> int:
    """The odd side of the filter's spatial support: ``2 * radius + 1``."""
    return 2 * filter.radius + 1


def _sized_options(recipe: Recipe, filter: Filter) -> dict[str, Any]:
    """The recipe's options with the sized option set so that the receptive field is the support."""
    options = dict(recipe.options)
    support = _support(filter)
    if recipe.sized == "window":
        options["window"] = max(1, support - options.get("feature_size", 1) + 1)
    elif recipe.sized == "feature_size":
        options["feature_size"] = max(1, support - options.get("window", 1) + 1)
    if options.get("window") == 1:  # a 1x1 window has nothing around its centre
        options.pop("relative", None)
    if recipe.arch == "neighbourhood" and filter.out_channels > 1:
        # channels=rgb: one feature per output channel at least.
        options["features"] = max(options.get("features", 1), filter.out_channels)
    return options


def choose_arch(filter: Filter) -> AutoChoice:
    """Pick how to learn ``filter``.

    Args:
        filter: The target filter.

    Returns:
        An exact least-squares fit with a kernel covering the support for linear
        filters; otherwise the recipe of the last non-linear stage: :data:`POINTWISE_RECIPE`
        when every non-linear stage is in :data:`POINTWISE_OF_LINEAR`, else
        :data:`NONLINEAR_ARCH` (:data:`DEFAULT_RECIPE` for a stage it lacks), its
        window or features sized to the filter's support.
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
        recipe = POINTWISE_RECIPE
    else:
        recipe = NONLINEAR_ARCH.get(nonlinear[-1].name, DEFAULT_RECIPE)
    return AutoChoice(
        "gradient",
        recipe.arch,
        {**_sized_options(recipe, filter), "border": filter.border},
        dict(recipe.train),
        dict(recipe.refine),
        reason=f"non-linear {nonlinear[-1].name!r}: {recipe.arch}, {recipe.reason}",
    )


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
        ``(arch, options)`` for :func:`img2img.create_img2img_model`: ``"lut3d"``
        (fit it with :func:`img2img.solve.fit_lut`) or a 1x1 ``"linear"`` (fit it
        with :func:`img2img.solve.fit_linear` and ``kernel_size=1``).

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


def fit_auto(
    train_dataset: Any,
    val_dataset: Any,
    choice: AutoChoice,
    *,
    device: str = "auto",
    progress: bool = True,
) -> tuple[nn.Module, TrainResult]:
    """Fit a linear filter or a colour lookup table exactly, by least squares.

    Args:
        train_dataset: A dataset with ``batch()`` (``FilteredDataset``).
        val_dataset: Its validation twin.
        choice: An ``"exact"`` choice from :func:`choose_arch`, or one made from
            :func:`arch_for_verdict`: ``"linear"`` (:func:`img2img.solve.fit_linear`
            with its ``kernel_size``) or ``"lut3d"`` (:func:`img2img.solve.fit_lut`
            with its ``size`` and ``curve_size``).
        device: Where to accumulate the normal equations.
        progress: Show a progress bar.

    Returns:
        ``(model, result)``: the result's one "epoch" holds the L1 losses of the fit.
    """
    from img2img.metrics import compute_metrics
    from img2img.solve import fit_linear, fit_lut

    if choice.method != "exact":
        raise ValueError(f"fit_auto fits exact choices only; got method {choice.method!r}")
    if choice.arch not in ("linear", "lut3d"):
        raise ValueError(f"fit_auto fits 'linear' and 'lut3d' only; got arch {choice.arch!r}")
    started = time.perf_counter()
    if choice.arch == "lut3d":
        sizes = {
            key: choice.options[key] for key in ("size", "curve_size") if key in choice.options
        }
        model = fit_lut(train_dataset, **sizes, device=device)
    else:
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
    what = "a colour lookup table" if choice.arch == "lut3d" else "its kernel"
    result = TrainResult(
        train_losses=[train_l1],
        val_losses=[val_l1],
        epochs=1,
        best_epoch=1,
        best_val_loss=val_l1,
        stopped="closed-form least-squares fit",
        seconds=seconds,
        engine="least-squares",
        engine_reason=f"{what} is solved exactly",
    )
    return model, result


def default_model(filter: Filter, arch: str, options: dict[str, Any]) -> nn.Module:
    """A model for ``filter``: RGB in, the filter's channels out; borders match the filter's.

    The study's network keeps its zero padding unless ``border`` is given.
    """
    options = dict(options)
    if arch != "study":
        options.setdefault("border", filter.border)
    return create_img2img_model(3, filter.out_channels, arch, **options)

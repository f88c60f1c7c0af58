"""``--arch auto``: the exact fit for linear filters, the best recipe for the others.

A linear filter (any chain of linear stages) is fitted exactly: the closed-form
least-squares kernel of a size covering its support (:func:`img2img_filters.solve.fit_linear`).
A non-linear filter is learnt by gradient descent with the :class:`Recipe` of its
last non-linear stage (:data:`POINTWISE_RECIPE`, :data:`NONLINEAR_ARCH`): an
architecture whose receptive field is sized to the filter's support, training
settings, and an L-BFGS polish (:func:`img2img_filters.solve.lbfgs_refine`) that takes the last quarter of
a time budget. A teacher img2img knows nothing of (a ``cmd:`` program, a callable,
given targets) has no stages: :mod:`img2img_filters.auto.probed` measures it with the
operator probe and maps the verdict to a recipe (``benchmarks/operators.py``
measures it on third-party tools). The recipes were chosen with
``benchmarks/quality.py`` (120 s a filter on two CPU cores, the mini Tiny ImageNet's 5000 training photos,
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

import time
from typing import Any

from torch import nn

from img2img_filters.auto.probed import choice_from_probe, choose_for_teacher, probe_teacher
from img2img_filters.auto.recipes import (
    DEFAULT_RECIPE,
    NONLINEAR_ARCH,
    POINTWISE_OF_LINEAR,
    POINTWISE_RECIPE,
    VERDICT_ARCHS,
    AutoChoice,
    Recipe,
    arch_for_verdict,
)
from img2img_filters.filters import Filter, TeacherFilter
from img2img_filters.metrics import compute_metrics
from img2img_filters.models import create_img2img_model
from img2img_filters.models.registry import get_arch
from img2img_filters.solve import fit_gray_blend, fit_linear, fit_lut
from img2img_filters.train.config import TrainResult

__all__ = [
    "DEFAULT_RECIPE",
    "NONLINEAR_ARCH",
    "POINTWISE_OF_LINEAR",
    "POINTWISE_RECIPE",
    "VERDICT_ARCHS",
    "AutoChoice",
    "Recipe",
    "arch_for_verdict",
    "choice_from_probe",
    "choose_arch",
    "default_model",
    "fit_auto",
    "probe_teacher",
]


#: The architectures :func:`fit_auto` fits, and what each one's fit solves (as the run's
#: result says it).
_EXACT_FITS = {
    "linear": "its kernel",
    "clipped_linear": "its kernel",
    "lut3d": "a colour lookup table",
    "box_cascade": "the box passes' setting",
    "gray_blend": "the blend's factor and gray weights",
}
EXACT_ARCHS = tuple(_EXACT_FITS)
#: The photos a gray blend is fitted on.
GRAY_BLEND_PHOTOS = 64


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


def choose_arch(filter: Filter, dataset: Any = None) -> AutoChoice:
    """Pick how to learn ``filter``.

    A teacher img2img knows nothing of (:class:`~img2img_filters.filters.TeacherFilter`) is
    probed first: see :mod:`img2img_filters.auto.probed` (the choice then carries the
    probe's report and a ``probe_line``).

    Args:
        filter: The target filter.
        dataset: Its training dataset: the pairs a teacher that cannot be called is
            probed on (unused for other filters).

    Returns:
        An exact least-squares fit with a kernel covering the support for linear
        filters; otherwise the recipe of the last non-linear stage: :data:`POINTWISE_RECIPE`
        when every non-linear stage is in :data:`POINTWISE_OF_LINEAR`, else
        :data:`NONLINEAR_ARCH` (:data:`DEFAULT_RECIPE` for a stage it lacks), its
        window or features sized to the filter's support.
    """
    if isinstance(filter, TeacherFilter):
        return choose_for_teacher(filter, dataset)
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


def _exact_model(
    train_dataset: Any, choice: AutoChoice, device: str, progress: bool, seconds: float | None
) -> nn.Module:
    """The closed-form fit of an exact choice (see :func:`fit_auto`), with its ``fit_report``."""
    if choice.arch == "box_cascade":  # its settings were searched: nothing left to solve
        inputs, targets = train_dataset.batch([0], "cpu")
        model = create_img2img_model(
            inputs.shape[1], targets.shape[1], "box_cascade", **choice.options
        )
        model.fit_report = {"images": 0, "out_of_time": False}
    elif choice.arch == "gray_blend":
        model = fit_gray_blend(train_dataset, **choice.options, max_images=GRAY_BLEND_PHOTOS)
    elif choice.arch == "lut3d":
        sizes = {
            key: choice.options[key] for key in ("size", "curve_size") if key in choice.options
        }
        model = fit_lut(train_dataset, **sizes, device=device)
    else:
        clipped = choice.arch == "clipped_linear"
        options = choice.options
        model = fit_linear(
            train_dataset,
            options["kernel_size"],
            border=options.get("border"),
            device=device,
            progress=progress,
            seconds=seconds,
            clip=(options["low"], options["high"]) if clipped else None,
            image_mean=bool(options.get("image_mean", False)),
        )
        if clipped:  # the fitted weights in the chosen model (keep_edge is not the fit's)
            conv = model.layers[0]
            chosen = create_img2img_model(
                conv.in_channels, conv.out_channels, "clipped_linear", **options
            )
            chosen.load_state_dict(model.state_dict())
            chosen.fit_report = model.fit_report
            model = chosen
    return model


def fit_auto(
    train_dataset: Any,
    val_dataset: Any,
    choice: AutoChoice,
    *,
    device: str = "auto",
    progress: bool = True,
    seconds: float | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Fit a linear filter (clipped or not) or a colour lookup table exactly, by least squares.

    Args:
        train_dataset: A dataset with ``batch()`` (``FilteredDataset``).
        val_dataset: Its validation twin.
        choice: An ``"exact"`` choice from :func:`choose_arch`, or one made from
            :func:`arch_for_verdict`: ``"linear"`` (:func:`img2img_filters.solve.fit_linear`
            with its ``kernel_size``), ``"clipped_linear"`` (the same with ``clip`` and
            ``image_mean``; ``keep_edge`` is set on the model), ``"lut3d"``
            (:func:`img2img_filters.solve.fit_lut` with its ``size`` and ``curve_size``), or
            ``"box_cascade"`` (its searched settings, nothing to solve), or ``"gray_blend"``
            (:func:`img2img_filters.solve.fit_gray_blend` with its roundings, on the first
            :data:`GRAY_BLEND_PHOTOS` photos).
        device: Where to accumulate the normal equations.
        progress: Show a progress bar.
        seconds: A linear fit accumulates its normal equations over the photos it reaches
            in this time (at least one batch; ``None``: all of them), so that a run's time
            budget holds; the closed-form solve that follows is quick. A lookup table's
            fit always reads every photo.

    Returns:
        ``(model, result)``: the result's one "epoch" holds the L1 losses of the fit.
    """
    if choice.method != "exact":
        raise ValueError(f"fit_auto fits exact choices only; got method {choice.method!r}")
    if choice.arch not in EXACT_ARCHS:
        raise ValueError(f"fit_auto fits {list(EXACT_ARCHS)} only; got arch {choice.arch!r}")
    started = time.perf_counter()
    model = _exact_model(train_dataset, choice, device, progress, seconds)
    fitted = time.perf_counter() - started
    train_l1 = compute_metrics(model, train_dataset, device=device, max_images=4096)["l1"]
    val_l1 = compute_metrics(model, val_dataset, device=device)["l1"]
    what = _EXACT_FITS[choice.arch]
    report = model.fit_report  # every exact fit attaches it
    stopped = (
        "settings searched on the training photos"
        if choice.arch == "box_cascade"
        else "closed-form least-squares fit"
    )
    if report.get("out_of_time"):
        stopped += f" on the first {report['images']} photos (time budget reached)"
    result = TrainResult(
        train_losses=[train_l1],
        val_losses=[val_l1],
        epochs=1,
        best_epoch=1,
        best_val_loss=val_l1,
        stopped=stopped,
        seconds=fitted,
        engine="least-squares",
        engine_reason=f"{what} is solved exactly",
    )
    return model, result


def default_model(filter: Filter, arch: str, options: dict[str, Any]) -> nn.Module:
    """A model for ``filter``: RGB in, the filter's channels out; borders match the filter's.

    The study's network keeps its zero padding unless ``border`` is given; an
    architecture without a ``border`` option gets none.
    """
    options = dict(options)
    if arch != "study" and "border" in get_arch(arch).defaults:
        options.setdefault("border", filter.border)
    return create_img2img_model(3, filter.out_channels, arch, **options)

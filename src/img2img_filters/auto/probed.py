"""``--arch auto`` for teachers img2img knows nothing of: the operator probe decides.

A teacher (:class:`~img2img_filters.filters.TeacherFilter`: a ``cmd:`` program, a Python
callable, targets given as files) has no stages to read a recipe from. So
:func:`probe_teacher` measures it with :func:`img2img_filters.probe.probe_operator`: on
the operator itself when it can be called (a callable; a program allowed to
run), else on ``(input, target)`` pairs drawn from the dataset; and
:func:`choice_from_probe` maps the verdict to a recipe:

=========  ====================================================================================
verdict    choice
=========  ====================================================================================
linear     the exact least-squares fit, kernel ``2r + 1`` from the probe's radius ``r`` (a
           3->3 colour matrix when ``r`` is 0 and the outputs are RGB; at most
           :data:`MAX_EXACT_KERNEL` when the support is unbounded or wider); a blur
           computed as box passes rounded to 8 bits gets ``box_cascade``, its settings
           searched, when it matches the photos better (:mod:`img2img_filters.auto.box_cascade`)
pointwise  a ``gray_blend`` (each pixel blended with its gray, both rounded to 8 bits as
           tools round them) when it matches the photos better than a clipped colour
           matrix (:mod:`img2img_filters.auto.gray_blend`; also for linear of radius 0);
           else the exact clipped fit of a colour matrix when the teacher is one up to
           clipping (:mod:`img2img_filters.auto.clipped`); else ``lut3d`` (a 3D lookup table) when
           registered, else ``pixelmlp``, else a 1x1 ``neighbourhood`` network (linear colour
           features, their absolute values, an MLP)
local      the exact clipped fit of a ``2r + 1`` kernel when the teacher is linear up to
           clipping; else, radius ``r`` with ``2r + 1 <=`` :data:`LOCAL_WINDOW_MAX`:
           ``neighbourhood`` with window ``2r + 1``, the window in place, sorted and absolute,
           MLP 64x2 (the general form of the rank and bilateral recipes); wider: features
           ``2r - 1`` wide, as global but without the histograms
wide       (local of radius 16 or more, or global; :mod:`img2img_filters.auto.wide`) a domain
           transform when shift-invariant; else the better of a domain transform and a
           tile-histogram equalisation, their settings searched, when a least-squares head
           on it reaches 30 dB; else as local or global
global     the exact clipped fit of a colour matrix plus the photo's mean colour when it holds
           (:mod:`img2img_filters.auto.clipped`); else as wide; else, when every photo's
           output spans the same range, ``stretch`` (a local network, each photo's levels
           stretched between two quantiles: :mod:`img2img_filters.auto.stretch`); else
           ``neighbourhood``: 8 linear features of a 9x9 support, their 3x3 window in place
           and absolute, the photo's histograms (``histogram``: each pixel's rank, the
           quantiles), MLP 64x2 (``can`` trains too few steps under a CPU budget: see the code)
=========  ====================================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from img2img_filters.auto.box_cascade import box_cascade_choice
from img2img_filters.auto.clipped import clipped_linear_choice
from img2img_filters.auto.gray_blend import gray_blend_choice
from img2img_filters.auto.recipes import (
    DEFAULT_RECIPE,
    GRADIENT_TRAIN,
    REFINE,
    AutoChoice,
    arch_for_verdict,
)
from img2img_filters.auto.scoring import least_error_options, sample_batch, spread_positions
from img2img_filters.auto.wide import is_wide, wide_choice
from img2img_filters.border import BORDER_MODES
from img2img_filters.data.targets import target_scale
from img2img_filters.filters import CallableFilter, CommandFilter, TeacherFilter
from img2img_filters.models import list_archs
from img2img_filters.probe import ProbeReport, probe_operator
from img2img_filters.solve import fit_linear

__all__ = [
    "LOCAL_WINDOW_MAX",
    "MAX_EXACT_KERNEL",
    "PROBE_PAIRS",
    "choice_from_probe",
    "choose_for_teacher",
    "match_border",
    "probe_teacher",
]

#: The widest kernel the exact fit gets (a linear teacher of unbounded or wider support).
MAX_EXACT_KERNEL = 21
#: The widest window of the local ``neighbourhood`` recipe; wider supports get ``can``.
LOCAL_WINDOW_MAX = 7
#: Pairs drawn from the dataset when the teacher cannot be called.
PROBE_PAIRS = 16
#: Photos the border is matched on, and the widest kernel it is matched with.
BORDER_PHOTOS, BORDER_KERNEL_MAX = 32, 9

_LOCAL_OPTIONS = {
    "feature_size": 1,
    "values": True,
    "sort": True,
    "absolute": True,
    "hidden": 64,
    "layers": 2,
}
_WIDE_OPTIONS = {"window": 3, "sort": False, "absolute": True, "hidden": 64, "layers": 2}
#: The widest linear features of the wide local recipe, and those of the global one.
WIDE_FEATURE_MAX, GLOBAL_FEATURE_SIZE = 15, 9
_POINTWISE_OPTIONS = {
    "feature_size": 1,
    "window": 1,
    "sort": False,
    "absolute": True,
    "hidden": 64,
    "layers": 2,
}


def _callable(teacher: TeacherFilter) -> bool:
    """Whether the probe may call the teacher (a callable, or a program allowed to run)."""
    if isinstance(teacher, CommandFilter):
        return teacher.allow_run
    return isinstance(teacher, CallableFilter)


def dataset_pairs(dataset: Any, count: int = PROBE_PAIRS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``count`` ``(input uint8 (H, W, 3), target float64 (H, W, C))`` pairs, spread evenly.

    Args:
        dataset: A dataset with ``batch(positions, device)`` or ``(input, target)`` items
            ``(3, H, W)`` and ``(C, H, W)`` floats.
        count: How many.
    """
    total = len(dataset)
    if total == 0:
        raise ValueError("dataset is empty: there are no pairs to probe")
    positions = spread_positions(total, count)
    if hasattr(dataset, "batch"):
        inputs, targets = dataset.batch(positions, "cpu")
    else:
        items = [dataset[int(i)] for i in positions]
        inputs = torch.stack([torch.as_tensor(x) for x, _ in items])
        targets = torch.stack([torch.as_tensor(y) for _, y in items])
    photos = inputs.float().mul(255.0).round().clamp(0, 255).to(torch.uint8)
    photos_np = photos.permute(0, 2, 3, 1).numpy()
    targets_np = targets.double().permute(0, 2, 3, 1).numpy()
    pairs = zip(photos_np, targets_np, strict=True)
    return [(np.ascontiguousarray(p), np.ascontiguousarray(t)) for p, t in pairs]


def probe_teacher(teacher: TeacherFilter, dataset: Any = None, *, seed: int = 0) -> ProbeReport:
    """Probe a teacher: the operator when it can be called, else pairs from ``dataset``.

    Args:
        teacher: The teacher.
        dataset: Its training dataset (for pairs; needed when the teacher cannot be called).
        seed: The probe's seed.

    Raises:
        ValueError: When the teacher cannot be called and there is no dataset, or the
            probe fails (see :func:`~img2img_filters.probe.probe_operator`).
    """
    if _callable(teacher):

        def operator(photo: np.ndarray) -> np.ndarray:
            output = teacher.output(photo, "a probe image")
            return output.transpose(1, 2, 0).astype(np.float64) * target_scale(output.dtype)

        return probe_operator(operator, seed=seed)
    if dataset is None:
        raise ValueError(
            f"filter {teacher.spec!r} cannot be run here, and no dataset was given to probe "
            "its pairs"
        )
    return probe_operator(pairs=dataset_pairs(dataset), seed=seed)


def _registered() -> set[str]:
    return {entry.name for entry in list_archs()}


def _options_text(options: dict[str, Any], keys: tuple[str, ...]) -> str:
    shown = [f"{k}={options[k]}" for k in keys if k in options]
    return ", ".join(shown)


def _found(report: ProbeReport) -> str:
    """What the probe found, as a probe line begins: ``"probe: local, radius 2"``."""
    radius = report.support_radius
    return f"probe: {report.verdict}, " + (
        "radius unbounded" if radius is None else f"radius {radius}"
    )


def choice_from_probe(report: ProbeReport, border: str = "reflect101") -> AutoChoice:
    """The recipe for an operator of the probed kind (see the module's table).

    Args:
        report: What the probe found.
        border: The border the model extends images by.

    Returns:
        The choice, with ``probe`` (the report) and ``probe_line`` set.
    """
    verdict, radius, channels = report.verdict, report.support_radius, report.channels_out
    found = _found(report)
    if verdict == "linear":
        size = MAX_EXACT_KERNEL if radius is None else min(2 * radius + 1, MAX_EXACT_KERNEL)
        what = "3->3 colour matrix" if size == 1 and channels == 3 else f"{size}x{size} kernel"
        choice = AutoChoice(
            "exact",
            "linear",
            {"kernel_size": size, "depth": 1, "border": border},
            reason=f"probed linear operator: exact least-squares fit of a {what}",
        )
        chosen = f"exact linear fit (kernel_size={size}{', colour matrix' if size == 1 else ''})"
    elif verdict == "pointwise" and "lut3d" in _registered():
        arch, options = arch_for_verdict("pointwise", channels)
        choice = AutoChoice(
            "exact",
            arch,
            options,
            reason="probed pointwise operator: a colour lookup table, fitted by least squares",
        )
        chosen = f"exact lookup-table fit ({_options_text(options, ('size', 'curve_size'))})"
    else:
        choice = _gradient_choice(verdict, radius, channels, border)
        keys = ("window", "features", "feature_size")
        histogram = ", histogram" if choice.options.get("histogram") else ""
        chosen = f"{choice.arch}({_options_text(choice.options, keys)}{histogram})"
    choice.probe = report.to_dict()
    choice.probe_line = f"{found} -> {chosen}"
    return choice


def _gradient_choice(verdict: str, radius: int | None, channels: int, border: str) -> AutoChoice:
    """The gradient recipe for a non-linear verdict."""
    refine = dict(REFINE)
    if verdict == "pointwise":
        registered = _registered()
        for arch in ("lut3d", "pixelmlp"):
            if arch in registered:
                return AutoChoice(
                    "gradient",
                    arch,
                    {},
                    {**GRADIENT_TRAIN, "learning_rate": 3e-3},
                    reason=f"probed pointwise operator: {arch}, a function of each pixel's colour",
                )
        options = {**_POINTWISE_OPTIONS, "features": max(8, channels), "border": border}
        return AutoChoice(
            "gradient",
            "neighbourhood",
            options,
            {**GRADIENT_TRAIN, "learning_rate": 3e-3},
            refine,
            reason="probed pointwise operator: a 1x1 network (colour features, their absolute "
            "values, an MLP)",
        )
    if verdict == "local" and radius is not None and 2 * radius + 1 <= LOCAL_WINDOW_MAX:
        options = {
            **_LOCAL_OPTIONS,
            "features": max(3, channels),
            "window": 2 * radius + 1,
            "border": border,
        }
        return AutoChoice(
            "gradient",
            "neighbourhood",
            options,
            {**GRADIENT_TRAIN, "learning_rate": 3e-3},
            refine,
            reason=f"probed local operator of radius {radius}: each pixel's window in place, "
            "sorted and absolute, and an MLP",
        )
    # Wider or unbounded: linear features of a wide support, a 3x3 window of them, an MLP.
    # Under a CPU budget it trains many more steps than ``can``: on Pillow's
    # Contrast(1.5), 20 s on one thread, 200 photos: 19.4 dB against can's 13.9 dB.
    size = GLOBAL_FEATURE_SIZE if radius is None else min(2 * radius - 1, WIDE_FEATURE_MAX)
    options = {
        **_WIDE_OPTIONS,
        "features": max(8, channels),
        "feature_size": size,
        "border": border,
        "histogram": verdict == "global",
    }
    what = "global operator" if verdict == "global" else f"local operator of radius {radius}"
    photo = ", the photo's histograms (each pixel's rank, quantiles)" if verdict == "global" else ""
    return AutoChoice(
        "gradient",
        "neighbourhood",
        options,
        {**GRADIENT_TRAIN, "learning_rate": 3e-3},
        refine,
        reason=f"probed {what}: linear features of a {size}x{size} support, their 3x3 window "
        f"(in place and absolute){photo} and an MLP",
    )


def match_border(dataset: Any, kernel_size: int, photos: int = BORDER_PHOTOS) -> str:
    """The border extension under which a linear fit matches the teacher best near the edges.

    A teacher's border handling is unknown (ImageMagick replicates the edge,
    OpenCV reflects it): the exact least-squares ``kernel_size`` fit (made on the
    photos' inner pixels, so the border cannot bias it) is applied with every
    border of :data:`img2img_filters.border.BORDER_MODES`, and the one with the least
    squared error over ``photos`` photos wins (ties: the first, ``reflect101``).

    Args:
        dataset: The training dataset (``batch(positions, device)``).
        kernel_size: The odd side of the linear fit.
        photos: How many photos (spread evenly).

    Returns:
        The border's name.
    """
    fitted = fit_linear(dataset, kernel_size, max_images=min(len(dataset), photos))
    inputs, targets = sample_batch(dataset, photos)
    candidates = (
        {"kernel_size": kernel_size, "depth": 1, "border": border}
        for border in BORDER_MODES
        if border != "wrap"  # no tool extends photos periodically by default
    )
    return least_error_options(fitted, "linear", candidates, inputs, targets)["border"]


def _with_border(choice: AutoChoice, dataset: Any, radius: int | None) -> AutoChoice:
    """The choice with the border that matches the teacher's (:func:`match_border`)."""
    size = 5 if radius is None else min(2 * radius + 1, BORDER_KERNEL_MAX)
    if "border" not in choice.options or size < 3 or not hasattr(dataset, "batch"):
        return choice
    border = match_border(dataset, size)
    choice.options["border"] = border
    choice.probe_line += f", border {border}"
    return choice


def choose_for_teacher(teacher: TeacherFilter, dataset: Any = None) -> AutoChoice:
    """Probe a teacher and choose; a probe that fails falls back to ``can`` and says why.

    With a dataset, a teacher that is linear up to clipping gets the exact clipped
    linear fit (:func:`img2img_filters.auto.clipped.clipped_linear_choice`), a wide
    or global one the candidate built for it whose settings the data favour
    (:func:`img2img_filters.auto.wide.wide_choice`: a domain transform, a tile-histogram
    equalisation), and the
    border extension is matched (:func:`match_border`) unless the operator is pointwise.

    Args:
        teacher: The teacher.
        dataset: Its training dataset (pairs for a teacher that cannot be called).
    """
    try:
        report = probe_teacher(teacher, dataset)
    except (ValueError, TypeError, RuntimeError, OSError) as error:
        detail = " ".join(str(error).split())
        choice = AutoChoice(
            "gradient",
            DEFAULT_RECIPE.arch,
            {**DEFAULT_RECIPE.options, "border": teacher.border},
            dict(DEFAULT_RECIPE.train),
            reason=f"the probe failed ({detail}): {DEFAULT_RECIPE.reason}",
        )
        choice.probe_line = f"probe: failed ({detail}) -> {DEFAULT_RECIPE.arch}"
        return choice
    choice = choice_from_probe(report, teacher.border)
    if dataset is None:
        return choice
    found = _found(report)
    blend = gray_blend_choice(report, dataset, found)
    if blend is not None:
        return blend
    clipped = clipped_linear_choice(report, dataset, teacher.border)
    if clipped is not None:
        size = clipped.options["kernel_size"]
        mean = ", image_mean" if clipped.options.get("image_mean") else ""
        clipped.probe = report.to_dict()
        clipped.probe_line = (
            f"{found}; linear up to clipping -> exact clipped linear fit (kernel_size={size}"
            f"{mean})" + clipped.probe_line
        )
        return clipped
    if is_wide(report) and hasattr(dataset, "batch"):
        wide = wide_choice(report, dataset, found)
        if wide is not None:
            return wide
    cascade = box_cascade_choice(report, dataset, found, MAX_EXACT_KERNEL)
    if cascade is not None:
        return cascade
    if report.verdict == "pointwise":
        return choice
    return _with_border(choice, dataset, report.support_radius)

"""What kind of operator is this? Pointwise, linear, local or global, measured.

:func:`probe_operator` calls an operator (a filter spec, a
:class:`~img2img_filters.filters.Filter` or any callable ``(H, W, 3) uint8 -> (H, W, C)``)
on real photos and synthetic probes, or, when only examples exist, fits
``(input, target)`` pairs, and returns a :class:`ProbeReport`.

>>> report = probe_operator("gaussian:ksize=5")
>>> report.verdict, report.support_radius
('linear', 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from img2img_filters.probe.inputs import (
    Operator,
    OperatorRunner,
    as_operator,
    check_pairs,
    check_photos,
    default_photos,
    read_pair_folders,
)
from img2img_filters.probe.measures import (
    IMPULSE_SIDE,
    channel_map,
    far_change,
    impulse_radius,
    permutation_error,
    shift_error,
    superposition_error,
)
from img2img_filters.probe.pairs import KERNEL_SIZES, colour_spread, kernel_residuals
from img2img_filters.probe.verdict import TOLERANCES, Measure, ProbeReport, decide, summarise

__all__ = [
    "TOLERANCES",
    "Measure",
    "Operator",
    "ProbeReport",
    "probe_operator",
    "read_pair_folders",
]


def probe_operator(
    operator_or_spec: Any = None,
    photos: Any = None,
    *,
    pairs: Any = None,
    seed: int = 0,
) -> ProbeReport:
    """Measure what kind of operator maps inputs to outputs.

    With an operator: pointwise (apply to a photo and to a shuffle of its pixels),
    linear (superposition on pairs of photos and of noise), shift-invariant
    (shifted crops), the channels used, the support radius (impulse responses)
    and global dependence (the output far from a changed half). With pairs only:
    see :mod:`img2img_filters.probe.pairs`. Tolerances: :mod:`img2img_filters.probe.verdict`.

    Args:
        operator_or_spec: A filter spec (``"median:ksize=5"``), a
            :class:`~img2img_filters.filters.Filter`, or a callable taking an ``(H, W, 3)``
            uint8 RGB array and returning ``(H, W)`` or ``(H, W, C)``. ``None``
            with ``pairs``.
        photos: Probe photos, uint8 ``(H, W, 3)`` each (at least 2, sides >= 48;
            centre-cropped square, at most 128). Default: crops of the built-in photos.
        pairs: ``[(input uint8 (H, W, 3), target (H, W) or (H, W, C)), ...]``
            when there is no operator to call.
        seed: Seed of the shuffles, noise and pixel samples.

    Returns:
        A :class:`ProbeReport`; ``report.to_dict()`` is JSON-ready.

    Raises:
        TypeError: For an operator that is not callable or badly typed photos or pairs.
        ValueError: For both or neither of an operator and pairs, bad shapes, or an
            operator that returns the wrong shape or non-finite values.
    """
    if (operator_or_spec is None) == (pairs is None):
        raise ValueError(
            "probe_operator needs an operator (a filter spec, a Filter or a callable) or "
            "pairs=[(input, target), ...], not " + ("both" if pairs is not None else "neither")
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    rng = np.random.default_rng(int(seed))
    if pairs is not None:
        if photos is not None:
            raise ValueError("photos are not used with pairs; pass one or the other")
        return _probe_pairs(check_pairs(pairs), rng)
    operator, filter_ = as_operator(operator_or_spec)
    photos = default_photos() if photos is None else check_photos(photos)
    report = _probe_callable(OperatorRunner(operator), photos, rng)
    if filter_ is not None:
        low, high = filter_.output_range
        note = f"filter {filter_.canonical}: declared output range [{low:.4g}, {high:.4g}]"
        report = _with_notes(report, note)
    return report


def _with_notes(report: ProbeReport, *notes: str) -> ProbeReport:
    fields = {name: getattr(report, name) for name in report.__dataclass_fields__}
    fields["notes"] = (*report.notes, *notes)
    return ProbeReport(**fields)


def _probe_callable(
    run: OperatorRunner, photos: list[np.ndarray], rng: np.random.Generator
) -> ProbeReport:
    side = photos[0].shape[0]
    noise = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(2)]
    for photo in photos:
        run(photo)
    span = (run.high - run.low) or 1.0
    threshold = TOLERANCES["support"] * span
    depends = channel_map(run, photos, rng, threshold)

    start = (side - IMPULSE_SIDE) // 2
    crops = [
        p[start : start + IMPULSE_SIDE, start : start + IMPULSE_SIDE]
        for p in photos[:2] + noise[:1]
    ]
    flat = np.full((IMPULSE_SIDE, IMPULSE_SIDE, 3), 128, dtype=np.uint8)
    radius, limit = impulse_radius(run, [flat, *crops], threshold)

    pointwise = Measure.below(
        permutation_error(run, photos[:2], rng) / span,
        TOLERANCES["pointwise"],
        "two photos vs their pixels shuffled into one, un-shuffled (RMS / output span)",
    )
    linear_error = max(superposition_error(run, photos), superposition_error(run, noise)) / span
    tolerance = max(TOLERANCES["linear"], 1.0 / span if run.integer_output else 0.0)
    linear = Measure.below(
        linear_error, tolerance, "f((x + y) / 2) vs (f(x) + f(y)) / 2 on photos and noise"
    )
    shift = Measure.below(
        shift_error(run, photos, margin=radius + 1) / span,
        TOLERANCES["shift_invariant"],
        "f(shift(x)) vs shift(f(x)) inside the borders",
    )
    guard = min(max(16, radius + 1), side // 2 - 8)
    far = far_change(run, photos, guard) / span
    global_ = Measure(
        far,
        bool(far > TOLERANCES["global"]),
        TOLERANCES["global"],
        f"output change >= {guard} px from a changed image half",
    )
    notes = []
    if radius >= limit:
        notes.append(f"the impulse response reaches the probe's edge: radius at least {limit} px")
    verdict = decide(linear, pointwise, global_)
    support = None if global_.holds else radius
    channels_in = int(depends.any(axis=0).sum())
    output_range = (run.low, run.high)
    summary = summarise(
        verdict, linear, shift, support, (channels_in, run.channels_out), output_range
    )
    return ProbeReport(
        verdict=verdict,
        pointwise=pointwise,
        linear=linear,
        shift_invariant=shift,
        global_=global_,
        support_radius=support,
        channels_in=channels_in,
        channels_out=int(run.channels_out),
        channel_map=tuple(tuple(bool(v) for v in row) for row in depends),
        output_range=output_range,
        source="operator",
        notes=tuple(notes),
        summary=summary,
    )


def _probe_pairs(
    pairs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator
) -> ProbeReport:
    targets = [target for _, target in pairs]
    low = min(float(t.min()) for t in targets)
    high = max(float(t.max()) for t in targets)
    span = (high - low) or 1.0
    pooled, per_image = colour_spread(pairs, rng)
    pointwise = Measure.below(
        None if pooled is None else pooled / span,
        TOLERANCES["pointwise"],
        "spread of targets among pixels of one input colour (RMS / target span)",
    )
    residuals = {k: r / span for k, r in kernel_residuals(pairs, rng).items()}
    best, first, last = min(residuals.values()), residuals[1], residuals[KERNEL_SIZES[-1]]
    # Targets stored with 8 bits round to 1/255: a linear map then leaves that much residual.
    eight_bit = all(np.allclose(t * 255, np.round(t * 255), atol=1e-6) for t in targets)
    tolerance = max(TOLERANCES["linear"], (1 / 255) / span if eight_bit else 0.0)
    linear = Measure.below(
        best,
        tolerance,
        f"least-squares linear kernels 1x1 to {KERNEL_SIZES[-1]}x{KERNEL_SIZES[-1]}",
    )
    # Radius: the smallest kernel whose residual is as good as the best (linear),
    # or where it stops improving (within 5% of the whole drop).
    enough = 1.1 * best + 1e-4 if linear.holds else best + 0.05 * (first - best)
    radius = 0 if pointwise.holds else min(k for k, r in residuals.items() if r <= enough) // 2
    previous = residuals[KERNEL_SIZES[-2]]
    still_falling = not linear.holds and previous - last > 0.05 * (first - last) + 1e-9
    image_lookup = (
        not pointwise.holds
        and per_image is not None
        and per_image / span <= TOLERANCES["pointwise"]
    )
    global_ = Measure(
        (pooled / span) if image_lookup else max(0.0, previous - last),
        bool(image_lookup or still_falling),
        TOLERANCES["global"],
        "a lookup per photo fits where one shared lookup does not, or the linear residual "
        f"still falls at {KERNEL_SIZES[-1]}x{KERNEL_SIZES[-1]}",
    )
    notes = (
        "shift-invariance is not measured from pairs (the kernel fits assume it)",
        "which input channels matter is not measured from pairs (channels_in counts all 3)",
        "from pairs, a local non-linear operator and a global one that leaves no trace "
        "in these two tests cannot be told apart",
        "linear residual by kernel size: "
        + ", ".join(f"{k}x{k} {r:.3g}" for k, r in residuals.items()),
    )
    verdict = decide(linear, pointwise, global_)
    support = None if global_.holds else radius
    channels_out = targets[0].shape[2]
    summary = summarise(verdict, linear, None, support, (3, channels_out), (low, high))
    return ProbeReport(
        verdict=verdict,
        pointwise=pointwise,
        linear=linear,
        shift_invariant=None,
        global_=global_,
        support_radius=support,
        channels_in=3,
        channels_out=channels_out,
        channel_map=None,
        output_range=(low, high),
        source="pairs",
        notes=notes,
        summary=summary,
    )

"""The probe's report: each property with its measured error, the verdict and a summary line.

Tolerances (errors are RMS differences divided by the span of the outputs):

=================  =========  ==========================================================
property           tolerance  holds when
=================  =========  ==========================================================
pointwise          1e-3       error <= tolerance
linear             1e-2       error <= tolerance, widened to one output step / span for
                              integer outputs (and 8-bit targets), which round
shift-invariant    1e-3       error <= tolerance
global             1e-3       far change > tolerance (pairs: see :mod:`img2img_filters.probe.pairs`)
support            1e-6       an output moved by more than this (times the span) counts
=================  =========  ==========================================================

The verdict is the first of ``linear``, ``pointwise``, ``local``, ``global``
that fits: linear when superposition holds (affine maps included), else
pointwise, else local unless far-away pixels move the output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TOLERANCES", "VERDICTS", "Measure", "ProbeReport", "decide", "summarise"]

#: The tolerance of each test (see the module docstring).
TOLERANCES = {
    "pointwise": 1e-3,
    "linear": 1e-2,
    "shift_invariant": 1e-3,
    "global": 1e-3,
    "support": 1e-6,
}
#: The verdicts, in the order they are tried.
VERDICTS = ("linear", "pointwise", "local", "global")


@dataclass(frozen=True)
class Measure:
    """One measured property.

    Attributes:
        error: The measured figure (normalised; see the module docstring), or
            ``None`` when it cannot be measured.
        holds: Whether the property holds, or ``None`` when unknown.
        tolerance: The threshold ``error`` is compared with.
        method: How it was measured, in a few words.
    """

    error: float | None
    holds: bool | None
    tolerance: float
    method: str

    @classmethod
    def below(cls, error: float | None, tolerance: float, method: str) -> Measure:
        """A property that holds when ``error <= tolerance``."""
        holds = None if error is None else bool(error <= tolerance)
        return cls(error, holds, tolerance, method)


@dataclass(frozen=True)
class ProbeReport:
    """What kind of operator the probe found.

    Attributes:
        verdict: ``"linear"``, ``"pointwise"``, ``"local"`` or ``"global"``.
        pointwise, linear, global_: The measured properties.
        shift_invariant: Measured, or ``None`` from pairs (a fit assumes it).
        support_radius: Pixels on each side an output depends on; ``None`` when
            unbounded (global) or unknown.
        channels_in: Input channels that change the output (of 3).
        channels_out: Output channels.
        channel_map: ``channel_map[o][i]``: output ``o`` depends on input ``i``
            (``None`` from pairs).
        output_range: ``(min, max)`` of the outputs observed.
        source: ``"operator"`` or ``"pairs"``.
        notes: What could not be measured, and why.
        summary: One line for people.
    """

    verdict: str
    pointwise: Measure
    linear: Measure
    shift_invariant: Measure | None
    global_: Measure
    support_radius: int | None
    channels_in: int
    channels_out: int
    channel_map: tuple[tuple[bool, ...], ...] | None
    output_range: tuple[float, float]
    source: str
    notes: tuple[str, ...]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``global_`` is written ``"global"``."""
        data = asdict(self)
        data["global"] = data.pop("global_")
        data["output_range"] = list(self.output_range)
        data["channel_map"] = (
            None if self.channel_map is None else [list(r) for r in self.channel_map]
        )
        data["notes"] = list(self.notes)
        data["tolerances"] = dict(TOLERANCES)
        return data


def decide(linear: Measure, pointwise: Measure, global_: Measure) -> str:
    """The first verdict of :data:`VERDICTS` that fits."""
    if linear.holds:
        return "linear"
    if pointwise.holds:
        return "pointwise"
    return "global" if global_.holds else "local"


def summarise(
    verdict: str,
    linear: Measure,
    shift_invariant: Measure | None,
    radius: int | None,
    channels: tuple[int, int],
    output_range: tuple[float, float],
) -> str:
    """One line for people.

    E.g. ``"local, non-linear, shift-invariant, radius 2 px, 3->1 channels, output in [0, 1]"``.
    """
    parts = [verdict]
    if verdict != "linear":
        parts.append("linear" if linear.holds else "non-linear")
    if shift_invariant is None or shift_invariant.holds is None:
        parts.append("shift-invariance not measured")
    else:
        parts.append("shift-invariant" if shift_invariant.holds else "not shift-invariant")
    parts.append("radius unbounded" if radius is None else f"radius {radius} px")
    parts.append(f"{channels[0]}->{channels[1]} channels")
    low, high = output_range
    parts.append(f"output in [{low:.4g}, {high:.4g}]")
    return ", ".join(parts)

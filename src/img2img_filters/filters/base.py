"""The machinery of filters: stages and the registry.

A filter spec is ``name`` or ``name:key=value,key=value``, and stages chain with
``|``, applied left to right: ``gray|gaussian:ksize=3|sobel:dx=1,dy=1``.
Each stage is an instance of a registered :class:`Stage` subclass; a chain of
stages is a :class:`~img2img_filters.filters.chain.Filter`. A stage's parameters
are :class:`~img2img_filters.filters.params.Param` objects; specs are split into
stages by :func:`~img2img_filters.filters.spec.parse_spec`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from img2img_filters.filters.convolution import filter2d
from img2img_filters.filters.ops import GRAY_WEIGHTS, rgb_to_gray
from img2img_filters.filters.params import (
    BORDER_PARAM,
    CHANNELS_PARAM,
    MAX_FILTER_INT,
    Param,
    _format_value,
)
from img2img_filters.filters.spec import parse_spec

__all__ = [
    "GRAY_WEIGHTS",
    "MAX_FILTER_INT",
    "FilterEntry",
    "Param",
    "Stage",
    "format_filter_table",
    "kernel_range",
    "list_filters",
    "parse_spec",
    "register_filter",
]


class Stage:
    """One operator of a filter chain, applied to a batch ``(B, C, H, W)``.

    Subclasses set the class attributes, declare :attr:`params`, validate in
    :meth:`validate`, and implement :meth:`apply_one` on a batch whose channels
    are already chosen (grayscale or RGB). Linear stages implement
    :meth:`kernel2d` instead; they are applied by
    :func:`~img2img_filters.filters.convolution.filter2d`.

    Attributes:
        name: The registry name.
        description: One line for ``img2img filters``.
        params: The stage's own parameters (``border`` and ``channels`` are added
            automatically when :attr:`spatial` and :attr:`color_aware` are set).
        linear: Whether the stage is a linear operator.
        spatial: Whether the stage looks at neighbours (has a border).
        color_aware: Whether the stage converts RGB input to gray by default.
        takes_channels: Whether the stage offers ``channels=rgb`` (all colour-aware
            stages but ``gray`` itself).
        borders: The border modes the stage supports, its default first: exactly
            those the OpenCV function it names accepts.
        backend: ``"pytorch"`` (batched, on the batch's device) or ``"opencv"``
            (per image, on the CPU).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    linear: ClassVar[bool] = False
    spatial: ClassVar[bool] = True
    color_aware: ClassVar[bool] = True
    takes_channels: ClassVar[bool] = True
    borders: ClassVar[tuple[str, ...]] = ("reflect101", "reflect", "replicate", "constant")
    backend: ClassVar[str] = "pytorch"

    def __init__(self, spec: str = "", **values: Any) -> None:
        self.spec = spec or self.name
        known = {p.name: p for p in self.all_params()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"filter {self.spec!r}: unknown parameter {unknown[0]!r}; "
                f"{self.name!r} takes {sorted(known) or 'no parameters'}"
            )
        self.values: dict[str, Any] = {}
        for pname, param in known.items():
            raw = values.get(pname, param.default)
            self.values[pname] = param.parse(raw, self.spec)
        self.validate()
        if self.linear and not np.isfinite(self.kernel2d()).all():
            scaling = [p.name for p in self.params if p.kind is float] or ["its parameters"]
            self.fail("/".join(scaling), "values that keep the kernel finite", self.values)

    # -- declaration -------------------------------------------------------------------------
    @classmethod
    def all_params(cls) -> tuple[Param, ...]:
        """The stage's parameters, including the shared ``border`` and ``channels``."""
        extra: list[Param] = []
        if cls.spatial:
            extra.append(
                Param(BORDER_PARAM.name, str, cls.borders[0], BORDER_PARAM.help, cls.borders)
            )
        if cls.color_aware and cls.takes_channels:
            extra.append(CHANNELS_PARAM)
        return (*cls.params, *extra)

    def validate(self) -> None:
        """Check parameter values together; raise :class:`ValueError` naming the parameter."""

    def fail(self, param: str, allowed: str, value: Any) -> None:
        """Raise the standard error for a bad parameter value.

        Args:
            param: The parameter's name.
            allowed: The allowed values in words (``"an odd integer from 1 to 31"``).
            value: The value given.

        Raises:
            ValueError: Always.
        """
        raise ValueError(
            f"filter {self.spec!r}: parameter {param!r} must be {allowed}; got {value!r}"
        )

    # -- properties --------------------------------------------------------------------------
    @property
    def border(self) -> str | None:
        """The border mode, or ``None`` for pointwise stages."""
        return self.values.get("border") if self.spatial else None

    @property
    def per_channel(self) -> bool:
        """Whether the stage applies to each channel instead of the grayscale image."""
        return self.color_aware and self.values.get("channels") == "rgb"

    def to_gray(self, in_channels: int) -> bool:
        """Whether the stage converts its ``in_channels``-channel input to gray first."""
        return in_channels == 3 and self.color_aware and not self.per_channel

    def out_channels(self, in_channels: int) -> int:
        """The number of output channels for ``in_channels`` input channels."""
        return 1 if self.to_gray(in_channels) else in_channels

    def canonical(self) -> str:
        """The spec of this stage with every parameter written out, in declaration order."""
        parts = [
            f"{param.name}={_format_value(self.values[param.name])}"
            for param in self.all_params()
            if self.values[param.name] is not None
        ]
        return f"{self.name}:{','.join(parts)}" if parts else self.name

    # -- behaviour ---------------------------------------------------------------------------
    def kernel2d(self) -> np.ndarray:
        """The stage's correlation kernel ``(kh, kw)``, float64, centred (odd sizes)."""
        raise NotImplementedError(f"{self.name!r} is not linear")

    def output_range(self, low: float, high: float) -> tuple[float, float]:
        """The output range for inputs in ``[low, high]`` (gray conversion keeps the range)."""
        if self.linear:
            return kernel_range(self.kernel2d(), low, high)
        return low, high

    def apply_one(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stage to ``x`` ``(B, C, H, W)`` whose channels are already chosen."""
        if self.linear:
            return filter2d(x, self.kernel2d(), self.values["border"])
        raise NotImplementedError

    def radius(self) -> int:
        """How many pixels away, at most, an output pixel looks (0 for pointwise stages)."""
        if not self.spatial:
            return 0
        if self.linear:
            kh, kw = self.kernel2d().shape
            return max(kh, kw) // 2
        raise NotImplementedError(f"{self.name!r} must say its radius")

    def min_size(self) -> int:
        """The smallest image side the stage accepts.

        OpenCV extends the border of an image of any size (a reflection folds as
        often as needed), and :func:`img2img_filters.border.pad2d` does the same, so every
        stage accepts any non-empty image; a stage with a real limit overrides this.
        """
        return 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stage to a batch ``(B, C, H, W)``; RGB becomes gray unless ``channels=rgb``."""
        if self.to_gray(x.shape[1]):
            x = rgb_to_gray(x)
        return self.apply_one(x)

    def __repr__(self) -> str:
        return f"Stage({self.canonical()!r})"


def kernel_range(kernel: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The range of a correlation with ``kernel`` when every input lies in ``[low, high]``.

    Args:
        kernel: Any array of weights.
        low: The smallest input value.
        high: The largest input value.

    Returns:
        ``(low, high)`` of the output: the positive weights meet one end of the
        input range and the negative weights the other.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    positive = float(kernel[kernel > 0].sum())
    negative = float(kernel[kernel < 0].sum())
    return positive * low + negative * high, positive * high + negative * low


@dataclass
class FilterEntry:
    """A registered filter name: a stage class, or a preset expanding to a chain.

    Attributes:
        name: The name used in specs.
        description: One line for ``img2img filters``.
        params: Its parameters with their defaults and allowed values.
        build: ``build(spec, **raw_values) -> list[Stage]``.
        backend: ``"pytorch"`` or ``"opencv"`` (see :class:`Stage`).
        linear: Whether the filter is linear.
    """

    name: str
    description: str
    params: tuple[Param, ...]
    build: Callable[..., list[Stage]]
    backend: str
    linear: bool
    aliases: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, FilterEntry] = {}


def register_filter(cls: type[Stage]) -> type[Stage]:
    """Class decorator: add a :class:`Stage` subclass to the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise RuntimeError(f"filter name {cls.name!r} is empty or already registered")

    def build(spec: str, **values: Any) -> list[Stage]:
        return [cls(spec, **values)]

    _REGISTRY[cls.name] = FilterEntry(
        cls.name, cls.description, cls.all_params(), build, cls.backend, cls.linear
    )
    return cls


def register_preset(
    name: str,
    description: str,
    params: Sequence[Param],
    build: Callable[..., list[Stage]],
    *,
    linear: bool,
    backend: str = "pytorch",
) -> None:
    """Register a named chain of stages (e.g. the study's targets) with its own parameters.

    Args:
        name: The name used in specs.
        description: One line for ``img2img filters``.
        params: The preset's parameters.
        build: ``build(spec, **parsed_values) -> list[Stage]``.
        linear: Whether the chain is linear.
        backend: ``"pytorch"`` or ``"opencv"``.
    """
    if not name or name in _REGISTRY:
        raise RuntimeError(f"filter name {name!r} is empty or already registered")

    def checked_build(spec: str, **values: Any) -> list[Stage]:
        known = {p.name: p for p in params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"filter {spec!r}: unknown parameter {unknown[0]!r}; "
                f"{name!r} takes {sorted(known) or 'no parameters'}"
            )
        parsed = {p.name: p.parse(values.get(p.name, p.default), spec) for p in params}
        return build(spec, **parsed)

    _REGISTRY[name] = FilterEntry(name, description, tuple(params), checked_build, backend, linear)


def list_filters() -> list[FilterEntry]:
    """All registered filters, sorted by name.

    Returns:
        One :class:`FilterEntry` per filter, with its parameters, defaults and
        a one-line description.
    """
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def format_filter_table() -> str:
    """The registered filters as plain text: what ``img2img filters`` prints.

    Each filter gets a heading line (name, linear or not, backend, description)
    followed by one line per parameter: name, type, default, allowed values, help.

    Returns:
        The table, one line per filter and per parameter, ending with a note on the spec syntax.
    """
    entries = list_filters()
    rows: list[tuple[str, str, str, str, str]] = []
    for entry in entries:
        for param in entry.params:
            default = "-" if param.default is None else _format_value(param.default)
            rows.append(
                (param.name, param.kind.__name__, default, param.describe_allowed(), param.help)
            )
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
    lines: list[str] = []
    for entry in entries:
        kind = "linear" if entry.linear else "non-linear"
        lines.append(f"{entry.name}  ({kind}, {entry.backend})  {entry.description}")
        for param in entry.params:
            default = "-" if param.default is None else _format_value(param.default)
            cells = (param.name, param.kind.__name__, default, param.describe_allowed())
            padded = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
            lines.append(f"    {padded}  {param.help}")
    lines.append("")
    lines.append(
        "spec: name or name:key=value,key=value; chain stages with '|' (applied left to right), "
        "e.g. gray|gaussian:ksize=3|sobel:dx=1,dy=1"
    )
    return "\n".join(lines)


def get_entry(name: str, spec: str) -> FilterEntry:
    """Look a filter name up; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"filter {spec!r}: unknown filter {name!r}; known filters: {sorted(_REGISTRY)}"
        ) from None

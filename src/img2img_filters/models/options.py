"""Checks of architecture options, shared by the networks' constructors and the registry."""

from __future__ import annotations

import math

from img2img_filters.limits import (
    MAX_DEPTH,
    MAX_KERNEL_SIZE,
    MAX_WIDTH,
    MAX_WINDOW,
    check_bounded_int,
)

__all__ = ["OPTION_BOUNDS", "check_bool", "check_int", "check_number", "check_str"]

#: The integer options that size a network: ``name -> (minimum, maximum, odd)``. Every
#: architecture's option of one of these names is checked against it before anything is built
#: (see :mod:`img2img_filters.limits`).
OPTION_BOUNDS: dict[str, tuple[int, int | None, bool]] = {
    "kernel_size": (1, MAX_KERNEL_SIZE, True),
    "feature_size": (1, MAX_KERNEL_SIZE, True),
    "window": (1, MAX_WINDOW, True),
    "depth": (1, MAX_DEPTH, False),
    "layers": (0, MAX_DEPTH, False),
    "width": (1, MAX_WIDTH, False),
    "features": (1, MAX_WIDTH, False),
    "hidden": (1, MAX_WIDTH, False),
    "guide": (1, MAX_WIDTH, False),
    "dilation_cap": (1, None, False),
}


def check_int(
    argument: str, value: object, minimum: int, *, odd: bool = False, maximum: int | None = None
) -> int:
    """``value`` when it is an integer (not a bool) ``>= minimum`` (and odd when ``odd``).

    When ``maximum`` is not given, the bound of :data:`OPTION_BOUNDS` for ``argument`` applies.

    Raises:
        TypeError: If ``value`` is not an integer.
        ValueError: If it is out of bounds or even where it must be odd.
    """
    if maximum is None and argument in OPTION_BOUNDS:
        maximum = OPTION_BOUNDS[argument][1]
    try:
        value = check_bounded_int(argument, value, minimum, maximum)
        if odd and value % 2 == 0:
            raise ValueError(f"{argument} must be odd; got {value!r}")
    except (TypeError, ValueError) as error:
        if not odd:
            raise
        got = str(error).rsplit("; got ", 1)[-1]
        span = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise type(error)(f"{argument} must be an odd integer {span}; got {got}") from None
    return value


def check_bool(argument: str, value: object) -> bool:
    """``value`` when it is a bool.

    Raises:
        TypeError: If it is not.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{argument} must be a bool (true or false); got {value!r}")
    return value


def check_number(argument: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a float when it is a finite number (not a bool), ``> 0`` with ``positive``.

    Raises:
        ValueError: If it is not a number, not finite, or not positive where it must be.
    """
    what = "a positive finite number" if positive else "a finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{argument} must be {what}; got {value!r}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{argument} must be {what}; got {value!r}")
    return float(value)


def check_str(argument: str, value: object, choices: list[str] | tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``.

    Raises:
        TypeError: If it is not a string.
        ValueError: If it is not one of ``choices``.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be one of {sorted(choices)}; got {value!r}")
    if value not in choices:
        raise ValueError(f"{argument} must be one of {sorted(choices)}; got {value!r}")
    return value

"""Checks of architecture options, shared by the networks' constructors."""

from __future__ import annotations

__all__ = ["check_bool", "check_int"]


def check_int(argument: str, value: object, minimum: int, *, odd: bool = False) -> int:
    """``value`` when it is an integer (not a bool) ``>= minimum`` (and odd when ``odd``).

    Raises:
        TypeError: If ``value`` is not an integer.
        ValueError: If it is below ``minimum`` or even where it must be odd.
    """
    kind = f"an odd integer >= {minimum}" if odd else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be {kind}; got {value!r}")
    if value < minimum or (odd and value % 2 == 0):
        raise ValueError(f"{argument} must be {kind}; got {value!r}")
    return value


def check_bool(argument: str, value: object) -> bool:
    """``value`` when it is a bool.

    Raises:
        TypeError: If it is not.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{argument} must be a bool; got {value!r}")
    return value

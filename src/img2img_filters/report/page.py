"""What the report templates print: numbers formatted for reading, cells, tables, figures.

Values here are plain text; the templates (:mod:`img2img_filters.report.render`)
escape them. Figures are embedded as ``data:`` URIs, so one file is the whole report.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MISSING",
    "PNG_SIGNATURE",
    "Cell",
    "Figure",
    "Table",
    "data_uri",
    "escape",
    "format_count",
    "format_float",
    "format_psnr",
    "format_seconds",
]

#: The first eight bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: What a missing value prints as.
MISSING = "—"


# -- text and numbers --------------------------------------------------------------------------
def escape(value: Any) -> str:
    """Any value as HTML text: ``str(value)`` with ``& < > " '`` escaped."""
    return html.escape(str(value), quote=True)


def _real(value: Any) -> float | None:
    """A real number as a float; ``None`` for anything else (``bool`` included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def format_float(value: Any, spec: str, unit: str = "") -> str:
    """A number with a format spec; ``∞`` for infinity, ``—`` when missing.

    Args:
        value: A number, or anything else (then :data:`MISSING`).
        spec: A format spec such as ``".3e"``.
        unit: Appended after a space (``"dB"``, ``"s"``).

    Returns:
        Plain text (not yet escaped).

    Example:
        >>> format_float(float("inf"), ".2f", "dB"), format_float(None, ".2f")
        ('∞ dB', '—')
    """
    number = _real(value)
    if number is None:
        return MISSING
    if math.isnan(number):
        text = "NaN"
    elif math.isinf(number):
        text = "∞" if number > 0 else "−∞"
    else:
        text = format(number, spec)
    return f"{text} {unit}" if unit else text


def format_psnr(value: Any) -> str:
    """PSNR in decibels with two decimals (``∞ dB`` for identical images)."""
    return format_float(value, ".2f", "dB")


def format_count(value: Any) -> str:
    """An integer with thousands separators (``12,345``), ``—`` when missing."""
    number = _real(value)
    if number is None or not math.isfinite(number):
        return MISSING if number is None else format_float(number, ".0f")
    return f"{int(number):,}"


def format_seconds(value: Any) -> str:
    """A duration: ``"1.6 s"``, ``"2 min 05 s"``, ``"1 h 02 min"``."""
    number = _real(value)
    if number is None or not math.isfinite(number):
        return format_float(number, ".1f", "s")
    if number < 120:
        return f"{number:.1f} s"
    minutes, seconds = divmod(round(number), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# -- what the templates print ---------------------------------------------------------------
@dataclass
class Cell:
    """One table cell, as plain text: the template escapes it.

    Attributes:
        text: The value.
        numeric: Right-aligned, tabular figures.
        best: The best of its column (bold).
        code: A filter spec or other code (monospace, breaks after its separators).
        note: A small second line.
        href: A link around the text (a relative path).
        breaks: Long values (specs, paths) may break after ``,``, ``|``, ``(`` and ``/``.
    """

    text: str
    numeric: bool = False
    best: bool = False
    code: bool = False
    note: str = ""
    href: str | None = None
    breaks: bool = False


@dataclass
class Table:
    """A table: its header, rows of cells and a caption (plain text)."""

    header: Sequence[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class Figure:
    """An embedded PNG figure.

    Attributes:
        png: The PNG bytes.
        alt: Its alternative text.
        caption: The caption under it.
        pixels: A raw image (not a plot): shown with its pixels as sharp squares.
        width: The width to show a raw image at, in CSS pixels.
    """

    png: bytes
    alt: str
    caption: str = ""
    pixels: bool = False
    width: int | None = None


def data_uri(png: bytes) -> str:
    """A PNG image as a ``data:image/png;base64,...`` URI.

    Raises:
        ValueError: If ``png`` does not start with the PNG signature.
    """
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("expected PNG bytes (they must start with the PNG signature)")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

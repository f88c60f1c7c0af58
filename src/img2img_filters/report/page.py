"""HTML building blocks of the reports: escaping, numbers, tables, embedded figures, the page.

Everything returned here is a fragment of HTML text in which every value
that came from outside (file contents, names, paths) went through
:func:`html.escape`. The page carries its own small stylesheet and embeds
figures as ``data:`` URIs, so one file is the whole report.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "MISSING",
    "PNG_SIGNATURE",
    "cell",
    "data_uri",
    "document",
    "escape",
    "figure",
    "format_count",
    "format_float",
    "format_psnr",
    "format_seconds",
    "key_value_table",
    "notice",
    "section",
    "table",
]

#: The first eight bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: What a missing value prints as.
MISSING = "—"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; color: #1f2328; background: #fff; max-width: 1200px; margin: 2rem auto;
  padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #d1d9e0; padding-bottom: .3rem;
  margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
.meta, figcaption, small, footer { color: #59636e; }
nav { margin: .8rem 0 1.2rem; }
nav a { margin-right: 1rem; color: #0969da; text-decoration: none; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #d1d9e0; padding: .3rem .6rem; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
thead th { background: #f6f8fa; }
tbody th { font-weight: 600; background: #fbfcfd; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em;
  word-break: break-all; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d1d9e0; }
figcaption { font-size: .9rem; margin-top: .3rem; }
.notice { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;
  padding: .6rem 1rem; margin: 1rem 0; }
.notice ul { margin: .3rem 0 0; padding-left: 1.3rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1rem; }
.grid figure { margin: 0; }
details { margin: .5rem 0 1rem; }
summary { cursor: pointer; color: #0969da; }
footer { margin-top: 3rem; font-size: .85rem; border-top: 1px solid #d1d9e0; padding-top: .6rem; }
""".strip()


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


# -- fragments ---------------------------------------------------------------------------------
def cell(text: str, *, numeric: bool = False, best: bool = False, raw: bool = False) -> str:
    """One ``<td>``: text escaped (unless ``raw``: already HTML), numbers right-aligned."""
    classes = [name for name, wanted in (("num", numeric), ("best", best)) if wanted]
    attribute = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attribute}>{text if raw else escape(text)}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, caption: str = "") -> str:
    """A table with a header row; each row is a sequence of ready ``<td>`` cells (see :func:`cell`)."""
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    body = "\n".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{caption_html}\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def key_value_table(rows: Iterable[tuple[str, str]], *, raw_values: bool = False) -> str:
    """A two-column table: a header cell per row, then the value (escaped unless ``raw_values``)."""
    lines = [f"<tr><th>{escape(key)}</th>{cell(value, raw=raw_values)}</tr>" for key, value in rows]
    return "<table>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>"


def data_uri(png: bytes) -> str:
    """A PNG image as a ``data:image/png;base64,...`` URI.

    Raises:
        ValueError: If ``png`` does not start with the PNG signature.
    """
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("expected PNG bytes (they must start with the PNG signature)")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, alt: str, caption: str = "") -> str:
    """A ``<figure>`` with the image embedded and an optional caption."""
    caption_html = f"\n<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure>\n<img src="{data_uri(png)}" alt="{escape(alt)}">{caption_html}\n</figure>'


def notice(title: str, items: Sequence[str]) -> str:
    """A highlighted box: a title line and a list of items (escaped)."""
    listed = "".join(f"<li>{escape(item)}</li>" for item in items)
    return f'<div class="notice"><strong>{escape(title)}</strong>\n<ul>{listed}</ul>\n</div>'


def section(anchor: str, title: str, body: str) -> str:
    """A ``<section>`` with an id, a heading and ready HTML."""
    return f'<section id="{escape(anchor)}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


def document(
    title: str,
    body: Sequence[str],
    *,
    subtitle: str = "",
    navigation: Sequence[tuple[str, str]] = (),
    footer: str = "",
) -> str:
    """The whole page: doctype, head with the stylesheet, heading, navigation, body, footer.

    Args:
        title: The page title and top heading (plain text).
        body: Ready HTML fragments, in order.
        subtitle: A line under the heading (plain text).
        navigation: ``(anchor, label)`` links to sections.
        footer: A line at the bottom (plain text).

    Returns:
        The HTML document.
    """
    links = "".join(
        f'<a href="#{escape(anchor)}">{escape(label)}</a>' for anchor, label in navigation
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\n{STYLE}\n</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(subtitle)}</p>' if subtitle else "",
        f"<nav>{links}</nav>" if links else "",
        "</header>",
        "<main>",
        *body,
        "</main>",
        f"<footer>{escape(footer)}</footer>" if footer else "",
        "</body>",
        "</html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"

"""Rendering the report pages: Jinja2 templates with autoescaping.

Every value a template prints is escaped unless it is :class:`markupsafe.Markup`;
values from a run folder (names, filter specs, notes, configuration) are passed
as plain text, so ``<script>`` in a run's name is shown, never run. The templates
live in ``report/templates`` and ship inside the package.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2
from markupsafe import Markup, escape

from img2img_filters.report.page import data_uri

__all__ = ["environment", "render", "spec_html"]

#: Characters of a filter spec or path after which a line may break (their own separators).
SPEC_BREAKS = (",", "|", "(", "/")


def spec_html(spec: Any) -> Markup:
    """A filter spec or path as escaped text, with line-break chances after ``, | ( /``.

    Example:
        >>> str(spec_html("sobel:dx=1,dy=0<"))
        'sobel:dx=1,<wbr>dy=0&lt;'
    """
    text = str(escape(str(spec)))
    for mark in SPEC_BREAKS:
        text = text.replace(mark, mark + "<wbr>")
    return Markup(text)


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment: autoescaped, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("img2img_filters.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["data_uri"] = data_uri
    env.filters["spec"] = spec_html
    return env


def render(template: str, **context: Any) -> str:
    """A template of ``report/templates`` rendered with ``context``.

    Args:
        template: Its file name (``"run.html.j2"``).
        **context: The names it prints.

    Returns:
        The HTML text.
    """
    return environment().get_template(template).render(**context)

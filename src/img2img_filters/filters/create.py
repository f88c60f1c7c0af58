"""Build a filter from what a user or a record names: a spec string, a program or a callable."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from img2img_filters.filters.base import Stage, get_entry, parse_spec
from img2img_filters.filters.chain import Filter
from img2img_filters.filters.external import TEACHER_PREFIXES, teacher_from_spec

__all__ = ["create_filter"]


def create_filter(
    spec: str | Filter | Callable[[np.ndarray], np.ndarray],
    *,
    allow_files: bool = True,
    allow_commands: bool = False,
) -> Filter:
    """Build a :class:`Filter` from a spec string.

    Args:
        spec: ``name`` or ``name:key=value,...``, stages chained with ``|``
            (e.g. ``"gray|gaussian:ksize=3|sobel:dx=1,dy=1"``); ``"cmd:PROGRAM ARGS...
            {in} ... {out}"`` for an external program as the teacher; or a callable
            ``(H, W, 3) uint8 -> (H, W) or (H, W, C)`` (see :mod:`img2img_filters.filters.external`).
            A :class:`Filter` is returned unchanged.
        allow_files: Whether the spec may read a file (``kernel:path=...``). Specs
            that come from checkpoints or run folders are built with ``False``:
            what img2img records is always self-contained (kernels inline).
        allow_commands: Whether a ``cmd:`` spec may run its program. ``False`` (the
            default, and always for specs read from files) gives a filter that only
            reads outputs already cached; the caller that passes a user's own spec
            says ``True``.

    Returns:
        The filter.

    Raises:
        ValueError: For an unknown filter or parameter or a value out of range,
            naming the spec, the parameter, the allowed values and the value given;
            for a spec that reads a file when ``allow_files`` is false.
    """
    if isinstance(spec, Filter):
        return spec
    if callable(spec) or (isinstance(spec, str) and spec.strip().startswith(TEACHER_PREFIXES)):
        return teacher_from_spec(spec, allow_commands=allow_commands)
    parsed = parse_spec(spec)
    if not allow_files:
        for name, values, _ in parsed:
            if "path" in values:
                raise ValueError(
                    f"filter {spec!r}: stage {name!r} reads a file (path=), which a recorded "
                    "filter may not do; recorded kernels are written inline (rows=)"
                )
    stages: list[Stage] = []
    for name, values, text in parsed:
        entry = get_entry(name, spec)
        if len(parsed) == 1:
            stages.extend(entry.build(spec.strip(), **values))
            continue
        try:
            stages.extend(entry.build(text, **values))
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(f"{error} (in the filter chain {spec!r})") from None
    return Filter(spec.strip(), stages)

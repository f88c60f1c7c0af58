"""The spec language: ``name:key=value,key=value`` stages chained with ``|``."""

from __future__ import annotations

from img2img_filters.limits import MAX_FILTER_STAGES

__all__ = ["parse_spec"]


def parse_spec(spec: str) -> list[tuple[str, dict[str, str], str]]:
    """Split a spec into ``(name, {key: raw value}, stage text)`` triples.

    Args:
        spec: e.g. ``"gray|gaussian:ksize=3|sobel:dx=1,dy=1"``.

    Returns:
        One triple per stage, in order. Names and keys are lower-cased
        (``L2gradient`` is ``l2gradient``); values keep their case; all are
        stripped of surrounding spaces.

    Raises:
        TypeError: If ``spec`` is not a string.
        ValueError: On an empty spec, an empty stage or name, a parameter without
            ``=``, or a parameter given twice.
    """
    if not isinstance(spec, str):
        raise TypeError(f"filter must be a spec string such as 'sobel:dx=1'; got {spec!r}")
    if not spec.strip():
        raise ValueError("filter spec is empty; try `img2img filters` for the list")
    count = spec.count("|") + 1
    if count > MAX_FILTER_STAGES:
        raise ValueError(
            f"filter spec {_clip(spec)!r} has {count} stages; the limit is {MAX_FILTER_STAGES} "
            "(img2img_filters.limits.MAX_FILTER_STAGES)"
        )
    stages = []
    for text in spec.split("|"):
        text = text.strip()
        if not text:
            raise ValueError(f"filter {spec!r}: empty stage between '|'")
        name, _, rest = text.partition(":")
        if not name.strip():
            raise ValueError(f"filter {spec!r}: stage {text!r} has no filter name before ':'")
        values: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"filter {spec!r}: expected key=value, got {item!r}")
            key = key.strip().lower()
            if key in values:
                raise ValueError(f"filter {spec!r}: parameter {key!r} given twice")
            values[key] = value.strip()
        stages.append((name.strip().lower(), values, text))
    return stages


def _clip(text: str, length: int = 60) -> str:
    """``text`` cut to ``length`` characters for an error message."""
    return text if len(text) <= length else text[: length - 3] + "..."

"""A filter stage's parameters: :class:`Param`, its parsing and its messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from img2img_filters.border import BORDER_MODES, check_border
from img2img_filters.limits import MAX_FILTER_NUMBER, describe_value

__all__ = ["BORDER_PARAM", "CHANNELS_PARAM", "MAX_FILTER_INT", "Param"]

#: The magnitude of an integer filter parameter (a seed, an order, a size): 64-bit signed.
MAX_FILTER_INT = 2**63 - 1


@dataclass(frozen=True)
class Param:
    """One parameter of a filter stage.

    Attributes:
        name: The key used in a spec.
        kind: ``int``, ``float``, ``bool`` or ``str``.
        default: The value used when the spec does not give one (``None``: optional).
        help: One line saying what it does.
        choices: The allowed values, when they form a short list.
        allowed: The allowed values in words when they are a range (``"odd, 1-31"``);
            shown by ``img2img filters`` and in error messages.
    """

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    allowed: str = ""

    def describe_allowed(self) -> str:
        """The allowed values in words: the choices, the range, or the type."""
        if self.choices is not None:
            return "|".join(_format_value(c) for c in self.choices)
        if self.kind is bool:
            return "true|false"
        if self.kind is float:
            bound = f"magnitude <= {MAX_FILTER_NUMBER:g}"
            return f"{self.allowed}, {bound}" if self.allowed else f"a number of {bound}"
        return self.allowed or self.kind.__name__

    def parse(self, raw: Any, spec: str) -> Any:
        """Convert ``raw`` (a string from a spec, or a Python value) to this parameter's type.

        Args:
            raw: The value, a string from a spec or a Python value; ``None`` keeps ``None``.
            spec: The spec being parsed, for error messages.

        Returns:
            The value as :attr:`kind`.

        Raises:
            ValueError: If ``raw`` is not of the parameter's type or not one of its choices.
        """
        if raw is None:
            return None
        if self.name == "border" and isinstance(raw, str):
            raw = check_border(raw, argument=f"filter {spec!r}: parameter 'border'")
        value: Any = raw
        try:
            if self.kind is bool:
                if isinstance(raw, str):
                    lowered = raw.strip().lower()
                    if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError
                    value = lowered in ("1", "true", "yes", "on")
                else:
                    value = bool(raw)
            elif self.kind is int:
                if isinstance(raw, bool):
                    raise ValueError
                try:
                    value = int(str(raw).strip())
                except ValueError:
                    as_float = float(raw)  # "3.0" is 3; "3.5" is an error
                    if not as_float.is_integer():
                        raise
                    value = int(as_float)
                if abs(value) > MAX_FILTER_INT:
                    raise ValueError
            elif self.kind is float:
                if isinstance(raw, bool):
                    raise ValueError
                value = float(raw)
                if not abs(value) <= MAX_FILTER_NUMBER:  # NaN too
                    raise ValueError
            else:
                value = str(raw).strip()
                if self.choices is not None:
                    value = value.lower()
        except (TypeError, ValueError, OverflowError):
            raise ValueError(
                f"filter {spec!r}: parameter {self.name!r} must be {self.describe_allowed()} "
                f"({self.kind.__name__}); got {describe_value(raw)}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(
                f"filter {spec!r}: parameter {self.name!r} must be one of "
                f"{list(self.choices)}; got {raw!r}"
            )
        return value


def _format_value(value: Any) -> str:
    """A parameter value as a spec writes it (``true``, ``0.5``, ``reflect101``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


BORDER_PARAM = Param(
    "border", str, "reflect101", "border mode (OpenCV's names)", tuple(BORDER_MODES)
)
CHANNELS_PARAM = Param(
    "channels", str, "gray", "apply to the grayscale image or to each RGB channel", ("gray", "rgb")
)

"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def parse_options(pairs: list[str] | None, argument: str = "--option") -> dict[str, Any]:
    """``["kernel_size=5", "border=reflect"]`` -> ``{"kernel_size": 5, "border": "reflect"}``.

    Values are read as JSON when they parse (numbers, true/false, null), else kept as text.
    """
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{argument} expects KEY=VALUE; got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def positive_int(text: str) -> int:
    """Parse an integer >= 1 (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def positive_float(text: str) -> float:
    """Parse a number > 0 (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number; got {text!r}")
    return value


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: auto, cpu, cuda, cuda:N."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N"
    )

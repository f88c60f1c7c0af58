"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from typing import Any

from img2img_filters.limits import (
    MAX_BATCH_SIZE,
    MAX_CROP_SIZE,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_SOLVE_BYTES,
    MAX_TILE,
    MIN_CROP_SIZE,
)

#: Help that already states its option's default: ``(default: X)`` or ``(default X)``.
_STATES_DEFAULT = re.compile(r"\(default[: ]")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default: ``(default: X)``.

    An option whose help already states its default is left as it is: options that
    default to ``None`` and fall through to a configuration dataclass state the
    dataclass's value with :func:`with_default`. Required options have none.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            _STATES_DEFAULT.search(text)
            or not action.option_strings
            or action.required
            or action.default is argparse.SUPPRESS
        ):
            return text
        shown = show_default(action.default).replace("%", "%%")
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def show_default(value: Any) -> str:
    """How a default reads in ``--help``: ``none`` for ``None`` or an empty collection."""
    if value is None or (isinstance(value, (dict, list, tuple)) and not value):
        return "none"
    return str(value)


def with_default(text: str, value: Any) -> str:
    """``text`` followed by ``(default: VALUE)``: the default an option falls through to."""
    return f"{text} (default: {show_default(value).replace('%', '%%')})"


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
        except (ValueError, RecursionError):  # not JSON, or a number of thousands of digits
            options[key.strip()] = value
    return options


def bounded_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``minimum`` to ``maximum`` (``None``: no bound)."""
    expected = (
        f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    )

    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) <= 30 else None
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            shown = text if len(text) <= 30 else text[:27] + "..."
            raise argparse.ArgumentTypeError(f"expected {expected}; got {shown!r}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_int(text: str) -> int:
    """Parse an integer >= 1 (an argparse type)."""
    try:
        value = int(text) if len(text) <= 30 else None
    except ValueError:
        value = None
    if value is None or value < 1:
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {shown!r}")
    return value


#: The argparse types of the sized arguments (bounds in :mod:`img2img_filters.limits`).
seed_int = bounded_int(0, MAX_SEED)
crop_size = bounded_int(MIN_CROP_SIZE, MAX_CROP_SIZE)
batch_size = bounded_int(1, MAX_BATCH_SIZE)
epochs_int = bounded_int(1, MAX_EPOCHS)
patience_int = bounded_int(0, MAX_EPOCHS)
tile_int = bounded_int(1, MAX_TILE)
workers_int = bounded_int(0, 256)


def export_path(text: str) -> str:
    """An export file name: its extension must be one a format writes (an argparse type)."""
    suffixes = (".onnx", ".pt", ".pth", ".ts")  # img2img_filters.export.EXPORT_SUFFIXES
    if not text.lower().endswith(suffixes):
        raise argparse.ArgumentTypeError(
            f"expected a file ending in {', '.join(suffixes)}; got {text!r}"
        )
    return text


def fraction(text: str) -> float:
    """Parse a number in ``[0, 1)`` (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to below 1; got {text!r}")
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


def add_device(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, falls_through_to: str | None = None
) -> None:
    """``--device``: auto, cpu, cuda, cuda:N.

    Args:
        parser: The sub-command's parser, or a group of its options.
        falls_through_to: A configuration's default device: the option then defaults to
            ``None`` (the configuration decides) and its help states this value.
    """
    default = None if falls_through_to is not None else "auto"
    parser.add_argument(
        "--device",
        default=default,
        help=with_default(
            "auto (CUDA when present), cpu, cuda or cuda:N", falls_through_to or default
        ),
    )


def validate_train(args: argparse.Namespace) -> None:
    """Check ``train``'s filter, architecture and options before any data loads.

    The architecture is resolved as training resolves it (``auto`` from the filter), and
    its options are checked on PyTorch's ``meta`` device (no memory): an unknown
    architecture, an option it does not take, a value out of bounds or a network past
    :data:`img2img_filters.limits.MAX_PARAMETERS` is an error naming the option.

    Raises:
        ValueError: Naming the argument, what it expects and what came.
        TypeError: For an option of the wrong type.
    """
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.auto import choose_arch
    from img2img_filters.filters import create_filter
    from img2img_filters.filters.teacher import TeacherFilter
    from img2img_filters.models import get_arch, validate_options
    from img2img_filters.run.config import DataConfig, ModelConfig

    if args.resume is not None:
        return  # the run folder's own configuration is used
    options = parse_options(args.option)
    arch_name = args.arch if args.arch is not None else ModelConfig().arch
    spec = args.filter if args.filter is not None else DataConfig().filter
    # building a `cmd:` filter checks its program and placeholders; it runs nothing
    filter = None if getattr(args, "targets", None) is not None else create_filter(spec)
    if filter is None or isinstance(filter, TeacherFilter):
        # what the pairs or the program compute is known once the data loads: check the
        # architecture's name and options here, and leave `auto` to the training run
        if arch_name == "auto":
            if options:
                learnt = "photo pairs (--targets)" if filter is None else "a cmd: filter"
                raise ValueError(
                    f"--option {next(iter(options))}: arch auto chooses the network for "
                    f"{learnt} once the data loads, and may fit it exactly, which takes no "
                    "options; pass --arch NAME to set options"
                )
            return
        try:
            get_arch(arch_name)
        except ValueError as error:
            raise ValueError(f"--arch: {error}") from None
        try:
            validate_options(3, 1, arch_name, options)
        except (TypeError, ValueError) as error:
            raise type(error)(f"--option: {error}") from None
        return
    if arch_name == "auto":
        choice = choose_arch(filter)
        if choice.method == "exact" and options:
            raise ValueError(
                f"--option {next(iter(options))}: arch auto fits the linear filter "
                f"{spec!r} exactly (a {choice.options['kernel_size']}x"
                f"{choice.options['kernel_size']} kernel) and takes no options; "
                "pass --arch linear to set them"
            )
        if choice.method == "exact":  # the least-squares fit's kernel is bounded as well
            side = choice.options["kernel_size"]
            need = 8 * (3 * side * side + 2) ** 2
            if need > MAX_SOLVE_BYTES:
                raise ValueError(
                    f"--filter {spec!r}: arch auto would fit its {side}x{side} kernel "
                    f"exactly, whose normal equations need {need / 2**30:,.1f} GiB; the limit is "
                    f"{MAX_SOLVE_BYTES / 2**30:g} GiB (img2img_filters.limits.MAX_SOLVE_BYTES); "
                    "pass --arch linear with a smaller kernel_size to train it instead"
                )
            return
        arch, options = choice.arch, {**choice.options, **options}
    else:
        try:
            get_arch(arch_name)
        except ValueError as error:
            raise ValueError(f"--arch: {error}") from None
        arch = arch_name
    if arch != "study":
        options.setdefault("border", filter.border)
    try:
        validate_options(3, filter.out_channels, arch, options)
    except (TypeError, ValueError) as error:
        raise type(error)(f"--option: {error}") from None

"""The architecture registry: a name -> factory dict filled by a decorator."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from img2img_filters.limits import MAX_CHANNELS, MAX_PARAMETERS, check_bounded_int
from img2img_filters.models.options import OPTION_BOUNDS, check_int

__all__ = [
    "ArchEntry",
    "create_img2img_model",
    "list_archs",
    "model_config",
    "receptive_field",
    "register_arch",
    "validate_options",
]


@dataclass(frozen=True)
class ArchEntry:
    """A registered architecture.

    Attributes:
        name: Registry name (``"study"``, ``"linear"``, ...).
        factory: ``factory(in_channels, out_channels, **options) -> nn.Module`` (a network class).
        description: One line for ``img2img archs`` and the docs.
        defaults: The factory's options and their defaults.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str
    defaults: dict[str, Any]


_ARCHS: dict[str, ArchEntry] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_arch(name: str, description: str) -> Callable[[F], F]:
    """Decorator: register ``factory(in_channels, out_channels, **options)`` under ``name``.

    ``factory`` is a network class or a function. Its options are the parameters
    after the two channel counts that have a default, and their defaults are the
    architecture's.
    """

    def decorate(factory: F) -> F:
        if name in _ARCHS:
            raise RuntimeError(f"architecture {name!r} is already registered")
        parameters = list(inspect.signature(factory).parameters.values())[2:]
        defaults = {
            p.name: p.default
            for p in parameters
            if p.default is not inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        _ARCHS[name] = ArchEntry(name, factory, description, defaults)
        return factory

    return decorate


def list_archs() -> list[ArchEntry]:
    """All registered architectures, sorted by name."""
    return [_ARCHS[name] for name in sorted(_ARCHS)]


def get_arch(name: str) -> ArchEntry:
    """Look an architecture up; an unknown name raises ``ValueError`` listing the valid ones."""
    if not isinstance(name, str) or name not in _ARCHS:
        raise ValueError(f"arch must be one of {sorted(_ARCHS)}; got {name!r}")
    return _ARCHS[name]


def create_img2img_model(
    num_input_channels: int = 3,
    num_output_channels: int = 1,
    arch: str = "study",
    **options: Any,
) -> nn.Module:
    """Create a network that maps ``(B, in, H, W)`` images to ``(B, out, H, W)``.

    Args:
        num_input_channels: Input channels (3 for RGB).
        num_output_channels: Output channels (1 for a grayscale filter).
        arch: A registered architecture: ``"study"`` (the study's 48-parameter
            network), ``"linear"``, ``"can"``, ``"structured"``; see :func:`list_archs`.
        **options: Architecture options (e.g. ``kernel_size=5`` for ``"linear"``).
            Options set to ``None`` are ignored, so that unset command-line flags
            keep the architecture's defaults.

    Returns:
        The model, with ``model.config`` holding ``arch``, channels and resolved options.

    Raises:
        ValueError: For an unknown architecture, unknown option or bad channel count.
    """
    entry, resolved = validate_options(num_input_channels, num_output_channels, arch, options)
    model = entry.factory(num_input_channels, num_output_channels, **resolved)
    model.config = {
        "arch": arch,
        "in_channels": num_input_channels,
        "out_channels": num_output_channels,
        "options": resolved,
    }
    return model


def validate_options(
    num_input_channels: int, num_output_channels: int, arch: str, options: dict[str, Any]
) -> tuple[ArchEntry, dict[str, Any]]:
    """Check an architecture, its channels and options without allocating anything.

    Unknown options, integers out of :data:`~img2img_filters.models.options.OPTION_BOUNDS`,
    floats where integers belong (``2.5``, NaN) and networks of more than
    :data:`~img2img_filters.limits.MAX_PARAMETERS` weights (counted on PyTorch's ``meta``
    device, which holds no memory) are refused.

    Args:
        num_input_channels: Input channels.
        num_output_channels: Output channels.
        arch: A registered architecture.
        options: Its options; ``None`` values are dropped.

    Returns:
        ``(entry, resolved options)``: the defaults updated with the given options.

    Raises:
        TypeError: For an option of the wrong type.
        ValueError: For an unknown architecture or option, or a value out of bounds.
    """
    entry = get_arch(arch)
    for argument, value in (
        ("num_input_channels", num_input_channels),
        ("num_output_channels", num_output_channels),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{argument} must be a positive integer; got {value!r}")
        check_bounded_int(argument, value, 1, MAX_CHANNELS)
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(entry.defaults), key=str)
    if unknown:
        raise ValueError(
            f"arch {arch!r}: unknown option {unknown[0]!r}; it takes {sorted(entry.defaults)}"
        )
    resolved = {**entry.defaults, **given}
    for name, value in resolved.items():
        if name in OPTION_BOUNDS and value is not None:
            minimum, maximum, odd = OPTION_BOUNDS[name]
            try:
                check_int(name, value, minimum, odd=odd, maximum=maximum)
            except (TypeError, ValueError) as error:
                raise type(error)(f"arch {arch!r}: option {error}") from None
    if not _on_meta():
        with torch.device("meta"):
            count = sum(
                p.numel()
                for p in entry.factory(
                    num_input_channels, num_output_channels, **resolved
                ).parameters()
            )
        if count > MAX_PARAMETERS:
            raise ValueError(
                f"arch {arch!r}: options {given} make a network of {count:,} parameters "
                f"({4 * count / 2**20:,.0f} MiB of float32 weights); the limit is "
                f"{MAX_PARAMETERS:,} (img2img_filters.limits.MAX_PARAMETERS)"
            )
    return entry, resolved


def _on_meta() -> bool:
    """Whether tensors are being created on the ``meta`` device (a construction without memory)."""
    return torch.empty(0).device.type == "meta"


def model_config(model: nn.Module) -> dict[str, Any]:
    """The ``config`` dict of a model made by :func:`create_img2img_model`.

    Raises:
        ValueError: If the model was not made by :func:`create_img2img_model`.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "arch" not in config:
        raise ValueError(
            "model must be created by img2img_filters.create_img2img_model (it has no .config); "
            f"got {type(model).__name__}"
        )
    return config


def receptive_field(model: nn.Module) -> int:
    """The side of a model's receptive field in pixels (odd; 1 for pointwise models).

    An output pixel depends on the inputs within ``receptive_field(model) // 2``
    pixels of it. Every registered architecture implements ``receptive_field()``.

    Args:
        model: A model made by :func:`create_img2img_model`.

    Returns:
        The receptive field side.
    """
    method = getattr(model, "receptive_field", None)
    if not callable(method):
        raise ValueError(
            f"model of type {type(model).__name__} does not declare its receptive field"
        )
    return int(method())

"""Save and load models with their metadata, atomically, without unpickling anything.

``.safetensors`` is the native format: tensors plus one JSON metadata entry
(``"img2img"``) holding the architecture, its options, the filter spec, metrics
and the package version. ``.pt``/``.pth`` files are read with
``torch.load(weights_only=True)``, which refuses any pickled object that is not
a tensor or a plain container, so a crafted file cannot run code. A bare state
dict with the study's key names (``conv1.weight`` ...) loads as the study's network.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from img2img_filters import __version__, fileio
from img2img_filters.checkpoint.read import (
    _FLOAT_DTYPES,
    FORMAT,
    FORMAT_VERSION,
    SAFETENSORS_SUFFIXES,
    STUDY_KEYS,
    TORCH_SUFFIXES,
    CheckpointError,
    read_checkpoint,
    read_metadata,
    safe_torch_load,
)
from img2img_filters.limits import MAX_FILTER_STAGES
from img2img_filters.models import create_img2img_model, model_config
from img2img_filters.run.folder import MODEL_FILE

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SAFETENSORS_SUFFIXES",
    "STUDY_KEYS",
    "TORCH_SUFFIXES",
    "CheckpointError",
    "atomic_write",
    "load_model",
    "read_metadata",
    "resolve_checkpoint",
    "safe_torch_load",
    "save_model",
]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file atomically; see :func:`img2img_filters.fileio.atomic_write`."""
    return fileio.atomic_write(path, write)


def _package_version() -> str:
    return __version__


def _json_safe(value: Any) -> Any:
    """Metadata values as JSON: tensors and numpy scalars become numbers or lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def save_model(model: nn.Module, path: str | Path, **metadata: Any) -> Path:
    """Save a model's weights and everything needed to rebuild it, atomically.

    Args:
        model: A model made by :func:`img2img_filters.create_img2img_model`.
        path: ``.safetensors`` (native) or ``.pt``/``.pth``.
        **metadata: JSON-able extras stored with it (``filter=`` spec, ``metrics=``, ...).

    Returns:
        The path written.

    Raises:
        ValueError: For another suffix, a model without ``config``, or NaN or Inf weights.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise ValueError(f"path must end in .safetensors, .pt or .pth; got {str(path)!r}")
    config = model_config(model)
    existing = getattr(model, "metadata", None) or {}
    record = {
        **_json_safe(existing),
        **_json_safe(metadata),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "img2img_version": _package_version(),
        "arch": config["arch"],
        "in_channels": config["in_channels"],
        "out_channels": config["out_channels"],
        "options": _json_safe(config["options"]),
    }
    state = {
        key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()
    }
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(
                f"cannot save {str(path)!r}: {key!r} contains NaN or Inf (training diverged; "
                "a lower learning rate or the l1 loss may help); load_model would refuse the file"
            )
    text = json.dumps(record, sort_keys=True)
    if suffix in SAFETENSORS_SUFFIXES:
        return atomic_write(
            path, lambda tmp: safetensors.torch.save_file(state, str(tmp), metadata={FORMAT: text})
        )
    return atomic_write(path, lambda tmp: torch.save({"state_dict": state, FORMAT: text}, tmp))


class _TooManyParametersError(Exception):
    """Raised inside a model's construction that goes past its parameter budget."""


@contextmanager
def _parameter_budget(budget: int) -> Iterator[None]:
    """Stop a construction in this thread past ``budget`` parameters (:class:`_TooManyParametersError`)."""
    thread, count = threading.get_ident(), 0

    def hook(module: nn.Module, name: str, parameter: torch.Tensor) -> None:
        nonlocal count
        if threading.get_ident() == thread:
            count += 1
            if count > budget:
                raise _TooManyParametersError

    handle = register_module_parameter_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: itself, or a run folder's ``model.safetensors``.

    Raises:
        FileNotFoundError: For a folder without ``model.safetensors``.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    candidate = path / MODEL_FILE
    if not candidate.is_file():
        raise FileNotFoundError(
            f"run folder {str(path)!r} has no {MODEL_FILE} (not a run folder, or a run that "
            "has not finished its first epoch); pass a run folder or a checkpoint file"
        )
    return candidate


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved model, in eval mode, with its metadata in ``model.metadata``.

    Args:
        path: A checkpoint written by :func:`save_model` or by training, a bare
            state dict with the study's key names (``.pt``/``.pth``), or a run
            folder (its ``model.safetensors``), as on the command line.
        device: Where to put the model.

    Returns:
        The model.

    Raises:
        FileNotFoundError: If the file does not exist, or a run folder has no model.
        CheckpointError: (a ``ValueError``) for a file that is not a checkpoint, was
            tampered with (missing or unexpected keys, wrong shapes, metadata of
            another architecture), or holds pickled code.
    """
    path = resolve_checkpoint(path)
    try:
        return _load(path, device)
    except (CheckpointError, FileNotFoundError):
        raise
    except (RecursionError, ValueError, TypeError, NotImplementedError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be loaded ({reason})") from None


def _load(path: Path, device: str | torch.device) -> nn.Module:
    """:func:`load_model`; failures it does not foresee are wrapped by the caller."""
    state, metadata = read_checkpoint(path)
    for key in ("arch", "in_channels", "out_channels"):
        if key not in metadata:
            raise CheckpointError(f"checkpoint {str(path)!r}: metadata lacks {key!r}")
    for key in ("in_channels", "out_channels"):
        value = metadata[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: metadata {key!r} must be a positive integer; "
                f"got {value!r}"
            )
    options = metadata.get("options") or {}
    if not isinstance(options, Mapping):
        raise CheckpointError(f"checkpoint {str(path)!r}: metadata 'options' must be a mapping")
    spec = metadata.get("filter")
    if isinstance(spec, str) and spec.count("|") + 1 > MAX_FILTER_STAGES:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: metadata 'filter' chains {spec.count('|') + 1} stages; "
            f"the limit is {MAX_FILTER_STAGES} (img2img_filters.limits.MAX_FILTER_STAGES)"
        )

    def build() -> nn.Module:
        try:
            return create_img2img_model(
                metadata["in_channels"], metadata["out_channels"], metadata["arch"], **options
            )
        except (ValueError, TypeError, OverflowError) as error:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: metadata 'arch'/'options': {error}"
            ) from None

    # The shapes are checked on a model without memory first ("meta" tensors), whose
    # construction stops once it has more parameters than the file has tensors: metadata
    # that asks for a huge or very deep network is refused before it costs memory or time.
    budget = 2 * len(state) + 16
    try:
        with torch.device("meta"), _parameter_budget(budget):
            expected = build().state_dict()
    except _TooManyParametersError:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its metadata describes a network of more than {budget} "
            f"parameter tensors (architecture {metadata['arch']!r}, options {dict(options)}), "
            f"but the file holds {len(state)} tensors"
        ) from None
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match architecture {metadata['arch']!r}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint {str(path)!r}: {key!r} has shape {tuple(state[key].shape)}, "
                f"architecture {metadata['arch']!r} expects {tuple(tensor.shape)}"
            )
        if tensor.is_floating_point() and state[key].dtype not in _FLOAT_DTYPES:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: {key!r} has dtype {state[key].dtype}, "
                "expected a floating-point tensor (float16, bfloat16, float32 or float64)"
            )
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise CheckpointError(f"checkpoint {str(path)!r}: {key!r} contains NaN or Inf")
    model = build()
    model.load_state_dict(state)
    model.metadata = metadata
    return model.to(device).eval()

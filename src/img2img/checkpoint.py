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
import pickle
import re
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from img2img import fileio
from img2img.models import create_img2img_model, model_config

__all__ = [
    "CheckpointError",
    "atomic_write",
    "load_model",
    "read_metadata",
    "safe_torch_load",
    "save_model",
]

FORMAT = "img2img"
FORMAT_VERSION = 1
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
STUDY_KEYS = (
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "conv3.weight",
    "conv3.bias",
)


#: The dtypes a checkpoint may store floating-point weights in (converted on loading).
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class CheckpointError(ValueError):
    """A file that is not a usable img2img checkpoint; the message says why."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file atomically; see :func:`img2img.fileio.atomic_write`."""
    return fileio.atomic_write(path, write)


def _package_version() -> str:
    from img2img import __version__

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
        model: A model made by :func:`img2img.create_img2img_model`.
        path: ``.safetensors`` (native) or ``.pt``/``.pth``.
        **metadata: JSON-able extras stored with it (``filter=`` spec, ``metrics=``, ...).

    Returns:
        The path written.

    Raises:
        ValueError: For another suffix, or a model without ``config``.
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
    text = json.dumps(record, sort_keys=True)
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import save_file

        return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={FORMAT: text}))
    return atomic_write(path, lambda tmp: torch.save({"state_dict": state, FORMAT: text}, tmp))


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with clear errors.

    Raises:
        CheckpointError: When the file holds pickled objects other than tensors and
            plain containers (it is refused, nothing in it runs) or is not a torch file.
    """
    path = Path(path)
    _refuse_compressed_records(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused: it contains pickled objects other than "
            f"tensors, which img2img never loads ({_unpickling_reason(error)})"
        ) from None
    except Exception as error:  # any failure to parse an untrusted file means "not a checkpoint"
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a readable PyTorch file ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else 'empty'})"
        ) from None


def _refuse_compressed_records(path: Path) -> None:
    """Refuse a zip-format torch file with compressed records: they could inflate to any size.

    ``torch.save`` stores every record uncompressed, so a genuine file never holds more
    than its own size; PyTorch's reader would inflate a deflated one in memory.
    """
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy format, or not a torch file: torch.load says which
        with zipfile.ZipFile(path) as archive:
            packed = [
                i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED
            ]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # a damaged archive: torch.load reports it
    if packed:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused: its record {packed[0]!r} is compressed, which "
            "torch.save never does (compressed records can inflate to any size)"
        )


def _unpickling_reason(error: Exception) -> str:
    """What ``torch.load(weights_only=True)`` refused, on one line, without terminal escape codes.

    PyTorch's message starts with advice to load the file unsafely; the line that names
    the refused object (``Unsupported global: GLOBAL builtins.eval ...``) is the useful one.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1]
            return " ".join(reason.split(". Please use")[0].split())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a valid safetensors file ({error})"
        ) from None
    metadata = None
    if FORMAT in header:
        try:
            metadata = json.loads(header[FORMAT])
        except json.JSONDecodeError:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has unreadable img2img metadata"
            ) from None
    return tensors, metadata


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    content = safe_torch_load(path)
    if not isinstance(content, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(content).__name__}, not a state dict"
        )
    metadata = None
    if FORMAT in content and "state_dict" in content:
        try:
            metadata = json.loads(content[FORMAT])
        except (TypeError, json.JSONDecodeError):
            raise CheckpointError(
                f"checkpoint {str(path)!r} has unreadable img2img metadata"
            ) from None
        state = content["state_dict"]
    elif "model" in content and isinstance(content["model"], Mapping) and "model_config" in content:
        # A resumable training state written by img2img.train.
        state = content["model"]
        try:
            metadata = json.loads(content["model_config"])
        except (TypeError, json.JSONDecodeError):
            raise CheckpointError(
                f"checkpoint {str(path)!r} has unreadable img2img metadata"
            ) from None
    else:
        state = content
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"checkpoint {str(path)!r} does not hold a state dict of tensors")
    return dict(state), metadata


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint (architecture, options, filter, metrics), without building it."""
    return _read(Path(path))[1]


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state, metadata = _read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        state, metadata = _read_torch(path)
    else:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: expected a .safetensors, .pt or .pth file; "
            f"got {suffix or 'no suffix'!r}"
        )
    if metadata is None:
        metadata = _study_metadata(path, state)
    if not isinstance(metadata, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its img2img metadata must be a JSON object; "
            f"got {type(metadata).__name__}"
        )
    return state, metadata


def _study_metadata(path: Path, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Metadata for a bare state dict with the study's key names."""
    if sorted(state) != sorted(STUDY_KEYS):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no img2img metadata and is not the study's state dict "
            f"(expected keys {list(STUDY_KEYS)}; got {sorted(state)[:8]})"
        )
    weight = state["conv1.weight"]
    if weight.dim() != 4 or tuple(weight.shape[-2:]) != (3, 3):
        raise CheckpointError(
            f"checkpoint {str(path)!r}: conv1.weight must be (out, in, 3, 3); got {tuple(weight.shape)}"
        )
    return {
        "format": FORMAT,
        "arch": "study",
        "in_channels": int(weight.shape[1]),
        "out_channels": int(weight.shape[0]),
        "options": {},
        "source": "study state dict",
    }


class _TooManyParametersError(Exception):
    """Raised inside a model's construction that goes past its parameter budget."""


@contextmanager
def _parameter_budget(budget: int) -> Iterator[None]:
    """Stop a construction in this thread past ``budget`` parameters (:class:`_TooManyParametersError`)."""
    from torch.nn.modules.module import register_module_parameter_registration_hook

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


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved model, in eval mode, with its metadata in ``model.metadata``.

    Args:
        path: A checkpoint written by :func:`save_model` or by training, or a bare
            state dict with the study's key names (``.pt``/``.pth``).
        device: Where to put the model.

    Returns:
        The model.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: (a ``ValueError``) for a file that is not a checkpoint, was
            tampered with (missing or unexpected keys, wrong shapes, metadata of
            another architecture), or holds pickled code.
    """
    path = Path(path)
    state, metadata = _read(path)
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

    def build() -> nn.Module:
        try:
            return create_img2img_model(
                metadata["in_channels"], metadata["out_channels"], metadata["arch"], **options
            )
        except (ValueError, TypeError, OverflowError) as error:
            raise CheckpointError(f"checkpoint {str(path)!r}: {error}") from None

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

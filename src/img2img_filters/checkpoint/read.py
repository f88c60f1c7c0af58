"""Read checkpoint files without unpickling anything: the formats, by content, with bounds.

Every size is checked before it is read: the safetensors header and the pickled record of a
``.pt`` (:data:`img2img_filters.limits.MAX_PICKLE_BYTES`), the metadata JSON
(:data:`img2img_filters.limits.MAX_METADATA_BYTES`, nested at most
:data:`img2img_filters.limits.MAX_METADATA_DEPTH` deep). Every failure is a :class:`CheckpointError`
naming the file.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from img2img_filters.limits import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, MAX_PICKLE_BYTES

__all__ = [
    "FORMAT",
    "CheckpointError",
    "read_checkpoint",
    "read_metadata",
    "safe_torch_load",
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
            oversized = next(
                (
                    (i.filename, i.file_size)
                    for i in archive.infolist()
                    if i.filename.endswith(".pkl") and i.file_size > MAX_PICKLE_BYTES
                ),
                None,
            )
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # a damaged archive: torch.load reports it
    if packed:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused: its record {packed[0]!r} is compressed, which "
            "torch.save never does (compressed records can inflate to any size)"
        )
    if oversized:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused: its record {oversized[0]!r} is "
            f"{oversized[1]:,} bytes; the limit is {MAX_PICKLE_BYTES:,} "
            "(img2img_filters.limits.MAX_PICKLE_BYTES)"
        )


def _unpickling_reason(error: Exception) -> str:
    """What ``torch.load(weights_only=True)`` refused, on one line, without terminal escape codes.

    PyTorch's message starts with advice to load the file unsafely; the line that names
    the refused object (``Unsupported global: GLOBAL builtins.eval ...``, ``Trying to load
    unsupported GLOBAL posix.system ...``) is the useful one.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].split(". Please use")[0].strip()
            if reason.strip(" ()"):
                return reason
    for line in lines:
        if re.search(r"GLOBAL|[Uu]nsupported|not allowed|blocked", line) and not line.startswith(
            "Weights only load failed"
        ):
            return line
    useful = [
        line
        for line in lines
        if not line.startswith(("Weights only load failed", "Check the documentation"))
    ]
    return useful[0] if useful else f"{type(error).__name__}, with no reason given"


def parse_metadata(path: Path, text: Any) -> Any:
    """The metadata JSON of a checkpoint, bounded in size and depth.

    Raises:
        CheckpointError: For text longer than :data:`MAX_METADATA_BYTES`, unreadable JSON
            (a number of thousands of digits, nesting deep enough to exhaust the stack
            included) or nesting deeper than :data:`MAX_METADATA_DEPTH`.
    """
    if not isinstance(text, (str, bytes)):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has unreadable img2img metadata "
            f"(a {type(text).__name__}, not JSON text)"
        )
    if len(text) > MAX_METADATA_BYTES:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its img2img metadata is {len(text):,} bytes; the limit "
            f"is {MAX_METADATA_BYTES:,} (img2img_filters.limits.MAX_METADATA_BYTES)"
        )
    depth = _nesting(text if isinstance(text, str) else text.decode("utf-8", "replace"))
    if depth > MAX_METADATA_DEPTH:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its img2img metadata nests {depth} levels deep; the "
            f"limit is {MAX_METADATA_DEPTH} (img2img_filters.limits.MAX_METADATA_DEPTH)"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        reason = " ".join(str(error).split())[:120]
        raise CheckpointError(
            f"checkpoint {str(path)!r} has unreadable img2img metadata ({reason})"
        ) from None


def _nesting(text: str) -> int:
    """How deep the brackets of a JSON text nest (those inside strings are skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _sniff(path: Path) -> str:
    """``"safetensors"``, ``"torch"`` or ``""``: the format of a file, by its first bytes.

    A safetensors file starts with its header's length (8 bytes, little-endian) and the
    header's ``{``; a torch file is a zip archive (``PK``) or, in the legacy format, a
    pickle (``0x80``).
    """
    with open(path, "rb") as stream:
        head = stream.read(9)
    if head[:2] == b"PK":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        (length,) = struct.unpack("<Q", head[:8])
        if length <= path.stat().st_size - 8:
            return "safetensors"
    if head[:1] == b"\x80":
        return "torch"
    return ""


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    with open(path, "rb") as stream:
        prefix = stream.read(8)
    if len(prefix) == 8 and struct.unpack("<Q", prefix)[0] > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a valid safetensors file: its header is "
            f"{struct.unpack('<Q', prefix)[0]:,} bytes; the limit is {MAX_PICKLE_BYTES:,} "
            "(img2img_filters.limits.MAX_PICKLE_BYTES)"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a valid safetensors file ({error})"
        ) from None
    metadata = parse_metadata(path, header[FORMAT]) if FORMAT in header else None
    return tensors, metadata


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    content = safe_torch_load(path)
    if not isinstance(content, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(content).__name__}, not a state dict"
        )
    metadata = None
    if FORMAT in content and "state_dict" in content:
        metadata = parse_metadata(path, content[FORMAT])
        state = content["state_dict"]
    elif "model" in content and isinstance(content["model"], Mapping) and "model_config" in content:
        # A resumable training state written by img2img_filters.train.
        state = content["model"]
        metadata = parse_metadata(path, content["model_config"])
    else:
        state = content
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"checkpoint {str(path)!r} does not hold a state dict of tensors")
    for key, tensor in state.items():
        if tensor.layout != torch.strided:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: {key!r} is a {tensor.layout} tensor; img2img loads "
                "dense tensors only"
            )
    return dict(state), metadata


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint (architecture, options, filter, metrics), without building it."""
    return _read(Path(path))[1]


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state dict, metadata)`` of a checkpoint file (see :func:`_read`)."""
    return _read(path)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        kind = _sniff(path) or ("safetensors" if suffix in SAFETENSORS_SUFFIXES else "torch")
        read = _read_safetensors if kind == "safetensors" else _read_torch
        state, metadata = read(path)
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

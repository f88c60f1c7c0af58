"""What a run records about itself: its data and model configuration, checked when read back.

A run folder's ``config.json`` is untrusted when it is read back (``--resume``):
every field is checked against its type and range, and a problem is one
:class:`RunFolderError` line naming the file, the field and what was found.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from img2img_filters.limits import MAX_CROP_SIZE, MAX_SEED, MIN_CROP_SIZE
from img2img_filters.run.folder import RunFolderError
from img2img_filters.train.config import TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "RunFolderError",
    "check_data_config",
    "config_record",
    "parse_config",
    "resolved_train",
]


@dataclass
class DataConfig:
    """Which photos and which filter."""

    data: str = "samples"  # "samples", "tiny-imagenet", or a folder
    filter: str = "study-sobel"  # a filter spec (see `img2img filters`)
    val_fraction: float = 0.2  # share of photos held out (sources without a val split)
    seed: int = 0  # split and random-filter seed
    crop_size: int = 64  # side of the crops cut from photos
    limit: int | None = None  # at most this many training images
    download: bool = False  # fetch Tiny ImageNet when missing
    targets: str | None = None  # a folder of targets paired by name with the `data` folder
    teacher_timeout: float = 60.0  # seconds per photo for a `cmd:` filter's program


@dataclass
class ModelConfig:
    """Which network."""

    arch: str = "auto"  # "auto", or a registered architecture (`img2img archs`)
    options: dict[str, Any] = field(default_factory=dict)  # architecture options


def config_record(data: DataConfig, model: ModelConfig, train: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a run (without its ``resolved`` part)."""
    from img2img_filters import __version__  # the package imports this module: read it late

    return {
        "data": asdict(data),
        "model": asdict(model),
        "train": {k: v for k, v in train.items() if k != "metadata"},
        "img2img_version": __version__,
    }


#: :class:`TrainConfig` fields that name one run's files and extras rather than settings.
_NOT_SETTINGS = ("metadata", "state_path", "resume")


def resolved_train(train: dict[str, Any]) -> dict[str, Any]:
    """Every training setting of a run: the options given (``train``) over TrainConfig's defaults."""
    given = {k: v for k, v in train.items() if k not in _NOT_SETTINGS}
    defaults = {k: v for k, v in asdict(TrainConfig()).items() if k not in _NOT_SETTINGS}
    return {**defaults, **given}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _data_problem(name: str, value: Any) -> str | None:
    """What is wrong with one recorded data field, or ``None``."""
    if name in ("data", "filter"):
        return None if isinstance(value, str) and value else "a non-empty string"
    if name == "val_fraction":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) and 0 <= value < 1 else "a number in [0, 1)"
    if name == "seed":
        return (
            None if _is_int(value) and 0 <= value <= MAX_SEED else f"an integer in [0, {MAX_SEED}]"
        )
    if name == "crop_size":
        ok = _is_int(value) and MIN_CROP_SIZE <= value <= MAX_CROP_SIZE
        return None if ok else f"an integer in [{MIN_CROP_SIZE}, {MAX_CROP_SIZE}]"
    if name == "limit":
        return (
            None if value is None or (_is_int(value) and value >= 1) else "null or an integer ≥ 1"
        )
    if name == "download":
        return None if isinstance(value, bool) else "true or false"
    if name == "targets":
        return None if value is None or (isinstance(value, str) and value) else "null or a folder"
    if name == "teacher_timeout":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) and value > 0 else "a finite number > 0"
    return "no such field"


def _train_problem(name: str, value: Any) -> str | None:
    """What :class:`TrainConfig` does not check itself in one recorded training option."""
    if name == "seed":
        return (
            None if _is_int(value) and 0 <= value <= MAX_SEED else f"an integer in [0, {MAX_SEED}]"
        )
    if name in ("progress", "channels_last", "compile"):
        return None if isinstance(value, bool) else "true or false"
    if name in ("loss", "amp", "worker_start"):
        return None if value is None or isinstance(value, str) else "a string or null"
    if name == "device":
        return None if isinstance(value, str) and value else "a device name such as 'cpu'"
    if name in ("weight_decay", "min_learning_rate"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) and value >= 0 else "a finite number ≥ 0"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_data_config(record: Any, where: str) -> DataConfig:
    """A recorded data configuration, checked field by field.

    Args:
        record: The ``data`` object of a ``config.json`` or of a checkpoint's metadata.
        where: What to name in errors (``"'run/config.json': data"``).

    Raises:
        RunFolderError: Naming ``where``, the field, what it must be and what it is.
    """
    if not isinstance(record, dict):
        raise RunFolderError(f"{where} must be a JSON object; got {_short(record)}")
    for key in ("data", "filter"):
        if key not in record:
            raise RunFolderError(f"{where} has no {key!r} field")
    for key, value in record.items():
        problem = _data_problem(str(key), value)
        if problem:
            raise RunFolderError(f"{where}.{key} must be {problem}; got {_short(value)}")
    return DataConfig(**record)


def parse_config(record: Any, path: Path) -> tuple[DataConfig, ModelConfig, dict[str, Any]]:
    """The configuration a run folder's ``config.json`` records, every field checked.

    Args:
        record: The parsed JSON.
        path: The file, named in errors.

    Returns:
        ``(data, model, train)``: ``train`` holds :class:`~img2img_filters.train.TrainConfig` options.

    Raises:
        RunFolderError: One line naming the file and the problem.
    """
    name = str(path)
    if not isinstance(record, dict):
        raise RunFolderError(f"{name!r} must hold a JSON object; got {_short(record)}")
    for key in ("data", "model", "train"):
        if key not in record:
            raise RunFolderError(f"{name!r} has no {key!r} section")
    data = check_data_config(record["data"], f"{name!r}: data")
    model = record["model"]
    if not isinstance(model, dict) or not isinstance(model.get("arch"), str) or not model["arch"]:
        raise RunFolderError(
            f"{name!r}: model must be an object with a non-empty 'arch' string; got {_short(model)}"
        )
    options = model.get("options", {})
    unknown = set(model) - {"arch", "options"}
    if not isinstance(options, dict) or unknown:
        raise RunFolderError(
            f"{name!r}: model may hold only 'arch' and an 'options' object; got {_short(model)}"
        )
    train = record["train"]
    if not isinstance(train, dict):
        raise RunFolderError(f"{name!r}: train must be a JSON object; got {_short(train)}")
    allowed = {f.name for f in fields(TrainConfig)} - {"metadata", "resume", "state_path"}
    for key in train:
        if key not in allowed:
            raise RunFolderError(f"{name!r}: train has an unknown option {key!r}")
    for key, value in train.items():
        problem = _train_problem(key, value)
        if problem:
            raise RunFolderError(f"{name!r}: train.{key} must be {problem}; got {_short(value)}")
    try:
        TrainConfig(**train)
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"{name!r}: train: {' '.join(str(error).split())}") from None
    return data, ModelConfig(arch=model["arch"], options=dict(options)), dict(train)

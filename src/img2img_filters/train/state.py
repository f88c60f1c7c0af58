"""The resumable training state: written after every epoch, checked when a run resumes."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from img2img_filters.backends.engine import Engine
from img2img_filters.checkpoint import safe_torch_load
from img2img_filters.fileio import atomic_write
from img2img_filters.run.folder import STATE_FILE
from img2img_filters.train.config import Progress, TrainConfig

__all__ = ["describe_data", "load_state", "save_state", "state_file"]


def state_file(path: str | Path) -> Path:
    """The state file: ``path`` itself, or ``path/state.pt`` for a run folder."""
    path = Path(path)
    return path / STATE_FILE if path.is_dir() else path


def describe_data(dataset: Any) -> dict[str, Any]:
    """What identifies a training set across a resume: its filter, source and size."""
    record: dict[str, Any] = {"size": len(dataset)}
    spec = getattr(getattr(dataset, "filter", None), "canonical", None)
    if isinstance(spec, str):
        record["filter"] = spec
    source = getattr(dataset, "source", None)
    if isinstance(source, str) and source:
        record["data"] = source
    return record


def save_state(
    path: Path,
    engine: Engine,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
    config: TrainConfig,
    best_state: dict[str, torch.Tensor] | None,
    data: dict[str, Any],
    device: torch.device,
) -> None:
    """Write the resumable state atomically: weights, optimiser, schedule, progress, RNG, settings.

    The weights and the optimiser's state come from ``engine.state_dict()``.

    Everything is a tensor, a number or a string, so :func:`~img2img_filters.checkpoint.safe_torch_load`
    reads it back; ``data`` describes the training data so that a resume can check it.
    """
    meta = {
        key: value for key, value in asdict(config).items() if key not in ("resume", "metadata")
    }
    state = {
        **engine.state_dict(),  # "model" and "optimizer"
        "scheduler": scheduler.state_dict(),
        "progress": json.dumps(asdict(progress)),
        "train_config": json.dumps(meta),
        "data_record": json.dumps(data, default=str),
        "torch_rng": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    if best_state is not None:
        state["best_model"] = best_state
    config_record = getattr(engine.model, "config", None)
    if isinstance(config_record, dict):
        state["model_config"] = json.dumps(
            {**config_record, **(config.metadata or {})}, default=str
        )
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _canonical(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _differs(key: str, there: Any, now: Any) -> ValueError:
    return ValueError(
        f"resume: {key} differs from the interrupted run ({there!r} there, {now!r} now); "
        "resume with the same settings, or start a new run"
    )


def load_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    data: dict[str, Any],
    device: torch.device,
) -> tuple[Progress, dict[str, torch.Tensor] | None]:
    """Restore a run from its state into ``model``, ``optimizer`` and ``scheduler``.

    Returns:
        The progress so far and the best weights seen (or ``None``).

    Raises:
        ValueError: Naming what differs from the interrupted run (architecture, filter,
            data, data size or a training setting).
    """
    if not path.is_file():
        raise FileNotFoundError(f"resume: no training state at {str(path)!r}")
    try:
        state = safe_torch_load(path)
        saved = json.loads(state["train_config"])
    except Exception as error:  # a damaged file: say which and why
        raise ValueError(
            f"resume: {str(path)!r} is not a readable training state ({error})"
        ) from None
    for key in ("batch_size", "loss", "learning_rate", "seed"):
        if saved.get(key) != getattr(config, key):
            raise _differs(key, saved.get(key), getattr(config, key))
    if "model_config" in state and isinstance(getattr(model, "config", None), dict):
        recorded = json.loads(state["model_config"])
        current = {**model.config, **(config.metadata or {})}
        for key in ("arch", "in_channels", "out_channels", "options", "filter", "data"):
            if (
                key in recorded
                and key in current
                and _canonical(recorded[key]) != _canonical(current[key])
            ):
                raise _differs(key, recorded[key], current[key])
    if "data_record" in state:
        recorded = json.loads(state["data_record"])
        for key, label in (("filter", "filter"), ("data", "data"), ("size", "training data size")):
            if key in recorded and key in data and recorded[key] != data[key]:
                raise _differs(label, recorded[key], data[key])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"resume: the saved weights do not fit this model ({error})") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    progress = Progress(**json.loads(state["progress"]))
    return progress, state.get("best_model")

"""Resuming a run: what its folder must hold, and which settings the caller may change."""

from __future__ import annotations

from typing import Any

from img2img_filters.run.config import DataConfig, ModelConfig, parse_config
from img2img_filters.run.folder import (
    CONFIG_FILE,
    METRICS_FILE,
    STATE_FILE,
    RunFolder,
    RunFolderError,
)

__all__ = ["RESUME_OVERRIDES", "resume_config"]

#: Training options that a resume takes from the caller; every other one is the run's own.
RESUME_OVERRIDES = ("device", "progress", "num_workers", "time_budget", "max_epochs")


def resume_config(
    folder: RunFolder, overrides: dict[str, Any]
) -> tuple[DataConfig, ModelConfig, dict[str, Any]]:
    """The configuration of the run to resume, with :data:`RESUME_OVERRIDES` from ``overrides``.

    Raises:
        FileNotFoundError: If the folder, its ``config.json`` or its ``state.pt`` is missing.
        RunFolderError: If ``config.json`` or ``metrics.json`` is malformed (named).
        RuntimeError: If the run is finished and ``max_epochs`` does not ask for more.
    """
    where = str(folder.path)
    if not folder.path.is_dir():
        raise FileNotFoundError(f"cannot resume {where!r}: no such folder")
    if not folder.has(CONFIG_FILE):
        raise FileNotFoundError(
            f"cannot resume {where!r}: it has no {CONFIG_FILE}, so no run started there; "
            f"start one with `img2img train --out {where}` (add --overwrite to replace its files)"
        )
    data, model, train = parse_config(folder.read_json(CONFIG_FILE), folder.file(CONFIG_FILE))
    train.update({k: v for k, v in overrides.items() if k in RESUME_OVERRIDES and v is not None})
    if folder.has(METRICS_FILE):
        _check_more_epochs(folder, folder.read_json(METRICS_FILE), overrides.get("max_epochs"))
    if not folder.has(STATE_FILE):
        raise FileNotFoundError(
            f"cannot resume {where!r}: it has {CONFIG_FILE} but no {STATE_FILE} (the run "
            f"stopped before its first epoch ended); start it again with "
            f"`img2img train --out {where} --overwrite` and the same options"
        )
    return data, model, train


def _check_more_epochs(folder: RunFolder, metrics: dict[str, Any], asked: int | None) -> None:
    """A finished run resumes only when asked for more epochs than it did; else ``RuntimeError``."""
    where = str(folder.path)
    epochs = metrics.get("epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)):
        raise RunFolderError(
            f"{str(folder.file(METRICS_FILE))!r}: epochs must be an integer; got {epochs!r}"
        )
    stopped = metrics.get("stopped")
    more = (
        folder.has(STATE_FILE)
        and stopped == "max_epochs reached"
        and isinstance(epochs, int)
        and isinstance(asked, int)
        and asked > epochs
    )
    if more:
        return
    why = (
        f"it stopped early ({stopped}), so more epochs would not train"
        if isinstance(stopped, str) and stopped and stopped != "max_epochs reached"
        else f"pass --epochs above its {epochs} to train it longer"
    )
    if not folder.has(STATE_FILE):
        why = "it has no training state to continue (an exact fit or a copied folder)"
    raise RuntimeError(
        f"run {where!r} is finished ({METRICS_FILE} is written); nothing was changed: {why}; "
        f"to train it again use `img2img train --out {where} --overwrite`"
    )

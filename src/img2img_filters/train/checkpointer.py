"""The files a training run writes: the best model and the resumable state (rank 0 only)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from img2img_filters.backends.engine import Engine
from img2img_filters.checkpoint import save_model
from img2img_filters.train.config import Progress, TrainConfig
from img2img_filters.train.state import describe_data, load_state, save_state, state_file

__all__ = ["Checkpointer"]

#: Settings not written with the best model (extras go in as metadata; a resume path is local).
_NOT_RECORDED = ("metadata", "resume")


class Checkpointer:
    """Writes the best model and the resumable state of a run; reads the state back to resume.

    Only the writing process (rank 0 under ``torchrun``) writes; every process resumes.

    Args:
        config: The run's settings (``state_path``, ``resume``, ``metadata``).
        train_dataset: The training set, described in the state so a resume can check it.
        best_path: Where the best model goes whenever validation improves (``None``: nowhere).
        writer: Whether this process writes files.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_dataset: Dataset,
        best_path: str | Path | None,
        writer: bool,
    ) -> None:
        self.config, self.writer, self.best_path = config, writer, best_path
        self.state_path = Path(config.state_path) if config.state_path else None
        self.data = describe_data(train_dataset)

    def resume(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        device: torch.device,
    ) -> tuple[Progress, dict[str, torch.Tensor] | None]:
        """The progress and best weights so far: from ``config.resume``, else a fresh start."""
        if not self.config.resume:
            return Progress(train_losses=[], val_losses=[]), None
        return load_state(
            state_file(self.config.resume),
            model,
            optimizer,
            scheduler,
            self.config,
            self.data,
            device,
        )

    def save_best(self, model: nn.Module, epoch: int, val_loss: float) -> None:
        """Write the model with its metadata, epoch, validation loss and settings."""
        if self.best_path is None or not self.writer:
            return
        settings = {k: v for k, v in asdict(self.config).items() if k not in _NOT_RECORDED}
        metadata: dict[str, Any] = dict(self.config.metadata or {})
        save_model(
            model, self.best_path, **metadata, epoch=epoch, val_loss=val_loss, train_config=settings
        )

    def save_state(
        self,
        engine: Engine,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        progress: Progress,
        best_state: dict[str, torch.Tensor] | None,
    ) -> None:
        """Write the resumable state (after every epoch), when a state path is set."""
        if self.state_path is None or not self.writer:
            return
        save_state(
            self.state_path,
            engine,
            scheduler,
            progress,
            self.config,
            best_state,
            self.data,
            engine.device,
        )

    def interrupted(self, progress: Progress) -> str | None:
        """What to tell the user when training is interrupted (``None``: nothing)."""
        if not self.writer or self.state_path is None:
            return None
        return (
            f"interrupted: the state of epoch {progress.epoch} is saved in {self.state_path}; "
            "resume with resume=<that file> (`img2img train --resume RUN_DIR`)"
        )

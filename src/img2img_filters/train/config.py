"""How a model is trained (:class:`TrainConfig`), how far a run came, how it ended (:class:`TrainResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from img2img_filters.train.losses import LOSSES

__all__ = [
    "CUDA_CHECK_EVERY",
    "ENGINES",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
]


_WORKER_CONTEXTS = (None, "fork", "spawn", "forkserver")
CUDA_CHECK_EVERY = 16  # steps between reading the loss back from a GPU
#: How a step may run (see :mod:`img2img_filters.train.engines`); "auto" takes the fastest that works.
ENGINES = ("auto", "eager", "ddp", "opencv", "fused", "compile")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the message names the epoch and step."""


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained (written into each run and checkpoint)."""

    max_epochs: int = 100  # epochs at most; cosine annealing spans them
    early_stopping_patience: int = 5  # epochs without a better validation loss before stopping
    batch_size: int = 128  # images per optimisation step (the global batch across processes)
    learning_rate: float = 0.001  # Adam's initial learning rate
    loss: str = "l1"  # "l1" (the study's) or "mse"
    weight_decay: float = 0.0  # Adam's weight decay
    min_learning_rate: float = 0.0  # the cosine schedule's floor
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
    seed: int = 0  # initialisation (when reset), epoch order
    progress: bool = True  # a tqdm bar per epoch with the running loss
    num_workers: int = 0  # processes that make batches (useful for OpenCV filters)
    worker_start: str | None = (
        None  # how workers start: "fork", "spawn", "forkserver" (None: default)
    )
    time_budget: float | None = None  # seconds of training at most (checked every step)
    amp: str | None = None  # "bf16": mixed precision on CUDA (ignored on the CPU)
    channels_last: bool = (
        False  # NHWC memory format: faster for wide networks (can) on CUDA and CPU
    )
    compile: bool = False  # torch.compile the model (CPU: the fused loops where they apply)
    engine: str = "auto"  # how steps run: one of ENGINES ("auto": the fastest that works)
    state_path: str | None = None  # resumable state written after every epoch
    resume: str | None = None  # a state file (or a run folder holding state.pt) to resume from
    metadata: dict | None = None  # extras saved with the best model (filter spec, data, ...)

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("early_stopping_patience", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
        if (
            isinstance(self.learning_rate, bool)
            or not isinstance(self.learning_rate, (int, float))
            or not (self.learning_rate > 0 and math.isfinite(self.learning_rate))
        ):
            raise ValueError(
                f"learning_rate must be a positive, finite number; got {self.learning_rate!r}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {self.loss!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}; got {self.engine!r}")
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be None or 'bf16'; got {self.amp!r}")
        if self.worker_start not in _WORKER_CONTEXTS:
            raise ValueError(
                f"worker_start must be one of {list(_WORKER_CONTEXTS)}; got {self.worker_start!r}"
            )
        if self.time_budget is not None and not (
            isinstance(self.time_budget, (int, float)) and self.time_budget > 0
        ):
            raise ValueError(
                f"time_budget must be a positive number of seconds or None; got {self.time_budget!r}"
            )


@dataclass
class Progress:
    """What a resumable state holds besides the model and optimiser."""

    epoch: int = 0  # epochs completed
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    train_losses: list | None = None
    val_losses: list | None = None
    stopped: str = ""  # why training ended early, if it did


@dataclass
class TrainResult:
    """How a run of :func:`~img2img_filters.train.loop.fit` ended.

    Attributes:
        train_losses: Mean training loss of each epoch (weighted by batch size).
        val_losses: Mean validation loss of each epoch.
        epochs: Epochs completed (resumed ones included).
        best_epoch: The epoch whose weights the model ends with (0: none).
        best_val_loss: Its validation loss.
        stopped: Why training ended ("max_epochs reached", "early stopping: ...", ...).
        seconds: Wall time of this call.
        engine: The engine that ran the steps ("opencv", "fused", "eager", ...).
        engine_reason: Why that engine was chosen.
    """

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    epochs: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped: str = ""
    seconds: float = 0.0
    engine: str = ""
    engine_reason: str = ""

    def summary(self) -> dict[str, Any]:
        """Everything but the loss curves, as a JSON-ready dict."""
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "stopped": self.stopped,
            "seconds": self.seconds,
            "engine": self.engine,
            "engine_reason": self.engine_reason,
        }

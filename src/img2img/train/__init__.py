"""Gradient training: the study's recipe (L1, Adam, cosine annealing, early stopping), done right.

:func:`train_model` is the loop (:mod:`img2img.train.loop`); :class:`TrainConfig` holds
its settings (:mod:`img2img.train.config`); :mod:`img2img.train.batches` draws each
epoch's batches, :mod:`img2img.train.state` saves and resumes runs, and
:mod:`img2img.train.losses` holds the losses.
"""

from img2img.train.config import TrainConfig, TrainingDivergedError
from img2img.train.loop import train_model
from img2img.train.losses import LOSSES

__all__ = ["LOSSES", "TrainConfig", "TrainingDivergedError", "train_model"]

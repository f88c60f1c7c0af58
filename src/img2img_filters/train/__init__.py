"""Gradient training: the study's recipe (L1, Adam, cosine annealing, early stopping), done right.

:func:`train_model` (the study's function) and :func:`fit` are the loop
(:mod:`img2img_filters.train.loop`); :class:`TrainConfig` holds the settings and
:class:`TrainResult` how a run ended (:mod:`img2img_filters.train.config`);
:mod:`img2img_filters.train.engines` chooses how each step runs; :mod:`img2img_filters.train.batches`
draws each epoch's batches; :mod:`img2img_filters.train.checkpointer` writes the best model and
the resumable state (:mod:`img2img_filters.train.state`); :mod:`img2img_filters.train.monitor` reads the
running loss back; :mod:`img2img_filters.train.losses` holds the losses.
"""

from img2img_filters.train.config import TrainConfig, TrainingDivergedError, TrainResult
from img2img_filters.train.loop import fit, train_model
from img2img_filters.train.losses import LOSSES

__all__ = ["LOSSES", "TrainConfig", "TrainResult", "TrainingDivergedError", "fit", "train_model"]

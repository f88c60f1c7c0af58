"""Training and validation loss curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from img2img_filters.viz.style import figure_path, finish, new_figure, styled

__all__ = ["LOSS_LABELS", "LOSS_NAMES", "check_loss", "loss_axes", "loss_label", "plot_losses"]

#: The loss a run trained with, by its name in the training options: how its axis reads.
LOSS_LABELS = {
    "l1": "L1 loss (mean absolute error)",
    "mse": "MSE loss (mean squared error)",
}
#: Short names of the losses, for legends, table headings and titles.
LOSS_NAMES = {"l1": "L1", "mse": "MSE"}


def check_loss(loss: Any, argument: str = "loss") -> str | None:
    """A loss name checked: ``"l1"``, ``"mse"``, or ``None`` (not recorded).

    Raises:
        ValueError: If it is anything else (naming ``argument``).
    """
    if loss is None or (isinstance(loss, str) and loss in LOSS_LABELS):
        return loss
    raise ValueError(
        f"{argument} must be one of {sorted(LOSS_LABELS)} or None (not recorded); got {loss!r}"
    )


def loss_label(loss: str | None) -> str:
    """The axis label of a loss: ``"L1 loss (mean absolute error)"``; ``"Loss"`` when unknown."""
    return LOSS_LABELS.get(loss or "", "Loss (its kind is not recorded)")


def loss_axes(
    ax: Any, epochs: int, log_scale: bool, first: int = 1, loss: str | None = "l1"
) -> None:
    """Axes of a loss-per-epoch plot: integer epochs (one epoch centred), labels, log scale.

    Args:
        ax: The matplotlib axes.
        epochs: The most epochs any curve on it has.
        log_scale: Whether the loss axis is logarithmic.
        first: The number of the first epoch shown.
        loss: The loss the curves show (``"l1"``, ``"mse"``; ``None``: not recorded).
    """
    if log_scale:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs == 1:
        ax.set_xlim(first - 0.5, first + 0.5)
        ax.set_xticks([first])
    ax.set_xlabel("Epoch")
    ax.set_ylabel(loss_label(loss))


def _as_losses(values: Any, argument: str, *, allow_empty: bool) -> np.ndarray:
    if values is None:
        values = []
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{argument} must be a sequence of numbers; got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{argument} must be a sequence of numbers; got {values!r}") from None
    if array.ndim != 1:
        raise ValueError(
            f"{argument} must be a 1-D sequence (one loss per epoch); got shape {array.shape}"
        )
    if not allow_empty and array.size == 0:
        raise ValueError(f"{argument} must hold at least one loss; got an empty sequence")
    return array


# Over 80 lines only for its docstring.
def plot_losses(
    train_losses: Sequence[float],
    val_losses: Sequence[float] | None,
    save: bool | str | os.PathLike[str] = False,
    trunc: int = 0,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    loss: str | None = "l1",
) -> Figure:
    """Training and validation loss per epoch (the study's L1 unless ``loss`` says otherwise).

    Epochs are numbered from 1. The y axis is logarithmic when the positive
    finite losses span more than two decades (max / min > 100), linear
    otherwise. The best validation epoch is marked. Non-finite losses (a
    diverged run) are left out of the curves.

    The study's call ``plot_losses(train, val, save=True, trunc=5)`` works as
    written: ``save=True`` writes ``training_loss.png`` in the working directory.

    Args:
        train_losses: Mean training loss of each epoch, length ``E >= 1``.
        val_losses: Mean validation loss of each epoch (may be ``None`` or
            empty when there was no validation).
        save: The study's flag: ``True`` saves to ``training_loss.png``. A path
            here is taken as ``path``.
        trunc: Leave out the first ``trunc`` epochs (``0 <= trunc < E``), whose
            large losses can flatten the rest; the others keep their numbers.
        path: Where to save the figure as PNG (``None``: do not save); wins
            over ``save``, with a logged notice.
        title: The figure title (default: "Training and validation loss", with
            the loss's short name when it is not the study's L1).
        loss: The loss the run trained with, which labels the loss axis:
            ``"l1"`` (the study's), ``"mse"``, or ``None`` when not recorded.

    Returns:
        The figure (one axes).

    Raises:
        TypeError: If a loss sequence does not hold numbers, ``save`` is not
            a bool or path, or ``trunc`` is not an integer.
        ValueError: If ``train_losses`` is empty, a sequence is not 1-D,
            ``trunc`` is negative or leaves no training epoch, or ``loss`` is
            not a known loss.
    """
    loss = check_loss(loss)
    path = figure_path(save, "save", path, "training_loss.png")
    train = _as_losses(train_losses, "train_losses", allow_empty=False)
    val = _as_losses(val_losses, "val_losses", allow_empty=True)
    if isinstance(trunc, bool) or not isinstance(trunc, (int, np.integer)):
        raise TypeError(f"trunc must be an integer; got {trunc!r}")
    if not 0 <= trunc < len(train):
        raise ValueError(
            f"trunc must be from 0 to {len(train) - 1} (the epochs less one); got {trunc}"
        )
    first = int(trunc) + 1
    train, val = train[trunc:], val[trunc:]
    values = np.concatenate([train, val])
    positive = values[np.isfinite(values) & (values > 0)]
    log_scale = positive.size > 0 and positive.max() / positive.min() > 100.0
    with styled("whitegrid"):
        fig = new_figure(7.0, 4.2)
        ax = fig.add_subplot()
        epochs_shown = max(len(train), len(val))
        size = 3 if epochs_shown > 1 else 8  # one epoch (an exact fit): a single point
        ax.plot(
            np.arange(first, first + len(train)),
            train,
            marker="o",
            markersize=size,
            label="training",
        )
        if val.size:
            epochs = np.arange(first, first + len(val))
            ax.plot(epochs, val, marker="o", markersize=size, label="validation")
            if np.isfinite(val).any():
                best = int(np.nanargmin(np.where(np.isfinite(val), val, np.nan)))
                ax.scatter(
                    [epochs[best]],
                    [val[best]],
                    s=80,
                    facecolors="none",
                    edgecolors="black",
                    zorder=3,
                    label=f"best validation: {val[best]:.4g} (epoch {epochs[best]})",
                )
        loss_axes(ax, epochs_shown, log_scale, first, loss)
        kind = f"{LOSS_NAMES[loss]} " if loss not in (None, "l1") else ""
        ax.set_title(title or f"Training and validation {kind}loss")
        ax.legend(loc="best")
        return finish(fig, path)

"""How every figure looks and is saved: seaborn's theme in a context, titles, ticks, atomic PNGs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from img2img_filters.fileio import atomic_write

__all__ = [
    "DPI",
    "ERROR_CMAP",
    "MAX_ANNOTATED_KERNEL",
    "SIGNED_CMAP",
    "UNSIGNED_CMAP",
    "check_count",
    "compact_ticks",
    "figure_path",
    "finish",
    "new_figure",
    "save_figure",
    "styled",
    "title_width",
    "wrap_title",
]


#: Resolution of saved figures.
DPI = 120
#: Colour maps: signed filter responses, non-negative ones, errors.
SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "gray"
ERROR_CMAP = "magma"
#: Kernels up to this side get their values written in the cells.
MAX_ANNOTATED_KERNEL = 7

_log = logging.getLogger("img2img_filters.viz")


@contextmanager
def styled(style: str = "whitegrid") -> Iterator[None]:
    """Seaborn's theme for the duration of the block; matplotlib's settings restored after."""
    with matplotlib.rc_context():
        sns.set_theme(context="notebook", style=style, color_codes=False)
        yield


def new_figure(width: float, height: float, layout: str = "constrained") -> Figure:
    """A figure with constrained layout on an Agg canvas (no pyplot, no display)."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = DPI) -> Path:
    """Write a figure atomically and close it.

    The figure is drawn into a temporary file next to ``path`` which then
    replaces ``path`` in one step (:func:`os.replace`), so a reader never sees
    a half-written image. The format follows the suffix (``.png`` when there is
    none); missing parent folders are created. "Closing" releases the figure
    from pyplot when pyplot manages it; the :class:`~matplotlib.figure.Figure`
    object itself stays usable (it can be saved again or displayed).

    Args:
        fig: The figure.
        path: Destination file.
        dpi: Resolution in dots per inch.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: If ``fig`` is not a matplotlib figure.
        ValueError: For an unsupported suffix (from matplotlib).
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure; got {type(fig).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix or ".png"
    atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=dpi, format=suffix[1:].lower()))
    if getattr(fig.canvas, "manager", None) is not None:
        # matplotlib: loaded only when a figure is drawn
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    """Settle the layout, save when asked, return the figure."""
    # One layout pass before the first real draw: with fixed-aspect images the
    # layout needs it to converge (otherwise titles can touch the row above).
    fig.draw_without_rendering()
    if path is not None:
        save_figure(fig, path)
    return fig


def wrap_title(text: str, width: int) -> str:
    """Break a long title into lines of at most about ``width`` characters.

    Filter specs are broken after ``|`` between stages, then after ``,``
    between parameters, so a canonical spec stays readable inside the figure.

    Args:
        text: The title.
        width: The longest line wanted, in characters.

    Returns:
        The title with newlines inserted (unchanged when it is short enough).
    """
    lines = []
    for line in text.split("\n"):
        lines.extend(_wrap_line(line, max(8, width)))
    return "\n".join(lines)


def _wrap_line(line: str, width: int) -> list[str]:
    if len(line) <= width:
        return [line]
    pieces: list[str] = []
    for stage in _split_after(line, "|"):
        pieces.extend(_split_after(stage, ",") if len(stage) > width else [stage])
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return lines


def _split_after(text: str, separator: str) -> list[str]:
    """``"a|b|c"`` -> ``["a|", "b|", "c"]``."""
    parts = text.split(separator)
    return [part + separator for part in parts[:-1]] + [parts[-1]]


def title_width(fig: Figure) -> int:
    """About how many characters of a figure title fit on one line."""
    return int(fig.get_figwidth() * 8)


def compact_ticks(colorbar: Any, largest: float, label: str) -> None:
    """Few short tick labels on a narrow colour bar; a power of ten moves into its label.

    Matplotlib writes the common exponent of tiny values as a separate offset
    text at the end of the bar, where it collides with the bar's label; here
    ticks read ``0, 1, 2`` and the label ends with ``(×10⁻⁷)`` instead.

    Args:
        colorbar: The colour bar.
        largest: The top of its scale.
        label: Its label, without the power of ten.
    """
    exponent = 0
    if np.isfinite(largest) and largest > 0 and not 1e-2 <= largest < 1e4:
        exponent = int(np.floor(np.log10(largest)))
    factor = 10.0**exponent
    colorbar.locator = MaxNLocator(nbins=3)
    colorbar.formatter = FuncFormatter(lambda value, _: f"{value / factor:.3g}")
    colorbar.update_ticks()
    colorbar.set_label(f"{label} ($\\times 10^{{{exponent}}}$)" if exponent else label)


def check_count(value: Any, argument: str) -> int:
    """``value`` if it is a positive integer, else a ValueError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{argument} must be a positive integer; got {value!r}")
    return int(value)


def figure_path(
    save: object,
    save_argument: str,
    path: str | os.PathLike[str] | None,
    study_file: str | os.PathLike[str],
) -> str | os.PathLike[str] | None:
    """Where a figure goes, from the study's save flag or img2img's ``path=``.

    The study's functions take a flag (``save`` or ``save_plot``) where img2img's take
    ``path``; both are accepted. ``save=True`` writes ``study_file`` (relative to the
    working directory, as the study does); ``path=`` wins over the flag, with a logged
    notice. A path in the flag's place is img2img's positional ``path``.

    Args:
        save: The study's flag (``True``/``False``), or a path given positionally.
        save_argument: The flag's name, for messages.
        path: img2img's ``path=`` (``None``: not given).
        study_file: The file the study's flag writes.

    Returns:
        The file to write, or ``None`` to write nothing.

    Raises:
        TypeError: If the flag is neither a bool nor a path, or a path is given twice.
    """
    if isinstance(save, (str, os.PathLike)):
        if path is not None:
            raise TypeError(
                f"path given twice: as {save_argument} ({save!r}) and as path= ({path!r})"
            )
        return save
    if not isinstance(save, (bool, np.bool_)):
        raise TypeError(f"{save_argument} must be True, False or a path; got {save!r}")
    if path is None:
        return study_file if save else None
    if save:
        _log.warning("both %s=True and path= given; the figure is saved to %s", save_argument, path)
    return path

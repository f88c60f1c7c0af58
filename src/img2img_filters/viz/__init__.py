"""Figures of a run: loss curves, predictions next to their targets, learned kernels.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas,
without pyplot, so no display is ever needed and no figure is left registered
in pyplot's global list. Seaborn's theme is applied inside
:func:`matplotlib.rc_context` while a figure is built and saved, so importing
or calling this module leaves the caller's matplotlib settings unchanged.
Figures are written with :func:`save_figure` (PNG at 120 dpi, atomically) when
a ``path`` is given, and returned in every case.

Images are tensors ``(B, C, H, W)`` as everywhere in img2img; they are shown
as ``(H, W)`` maps or ``(H, W, 3)`` RGB images.
"""

from img2img_filters.viz.images import (
    preview_filter,
    preview_filtered_dataset,
    preview_predictions,
    preview_validation_photo,
)
from img2img_filters.viz.kernels import align_kernels, plot_kernel_comparison, plot_kernels
from img2img_filters.viz.losses import plot_losses
from img2img_filters.viz.style import (
    DPI,
    ERROR_CMAP,
    SIGNED_CMAP,
    UNSIGNED_CMAP,
    save_figure,
    wrap_title,
)

__all__ = [
    "DPI",
    "ERROR_CMAP",
    "SIGNED_CMAP",
    "UNSIGNED_CMAP",
    "align_kernels",
    "plot_kernel_comparison",
    "plot_kernels",
    "plot_losses",
    "preview_filter",
    "preview_filtered_dataset",
    "preview_predictions",
    "preview_validation_photo",
    "save_figure",
    "wrap_title",
]

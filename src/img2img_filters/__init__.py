"""img2img: teach small convolutional networks to imitate image filters.

The study's API, at the top level::

    from img2img_filters import (create_img2img_model, load_filtered_dataset, train_model,
                         plot_losses, preview_predictions, compute_metrics, apply_filter)

    train, val = load_filtered_dataset()                # the study's Sobel target
    model = create_img2img_model(3, 1)                  # the study's 48-parameter CNN
    train_losses, val_losses = train_model(model, train, val, max_epochs=20)
    print(compute_metrics(model, val))                  # PSNR, SSIM, L1

Names are imported on first use, so ``import img2img_filters`` stays fast.

The distribution is ``img2img-filters`` (``pip install img2img-filters``); its
version, set once in ``pyproject.toml``, is :data:`__version__`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from typing import Any

# The library's notices go through `logging` (one logger per module); shown only where the
# application (the `img2img` command, a script) configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

#: The name img2img is installed under (``pip install img2img-filters``).
DIST_NAME = "img2img-filters"


def _installed_version() -> str:
    """The installed distribution's version; ``0+unknown`` for a source tree not installed."""
    try:
        return importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()

_EXPORTS: dict[str, str] = {
    # the study's API
    "create_img2img_model": "img2img_filters.models",
    "train_model": "img2img_filters.train",
    "load_filtered_dataset": "img2img_filters.data",
    "apply_filter": "img2img_filters.infer",
    "preview_predictions": "img2img_filters.viz",
    "preview_filtered_dataset": "img2img_filters.viz",
    "plot_losses": "img2img_filters.viz",
    "compute_metrics": "img2img_filters.metrics",
    # beyond the study
    "save_model": "img2img_filters.checkpoint",
    "load_model": "img2img_filters.checkpoint",
    "create_filter": "img2img_filters.filters",
    "list_filters": "img2img_filters.filters",
    "Filter": "img2img_filters.filters",
    "list_archs": "img2img_filters.models",
    "receptive_field": "img2img_filters.models",
    "FilteredDataset": "img2img_filters.data",
    "fit_linear": "img2img_filters.solve",
    "fold_linear": "img2img_filters.solve",
    "kernel_error": "img2img_filters.solve",
    "plot_kernels": "img2img_filters.viz",
    "psnr": "img2img_filters.metrics",
    "ssim": "img2img_filters.metrics",
    "probe_operator": "img2img_filters.probe",
    "fidelity_certificate": "img2img_filters.certificate",
}

__all__ = ["DIST_NAME", "__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""Image quality metrics: PSNR, SSIM and L1, batched in PyTorch, equal to scikit-image.

:func:`psnr` and :func:`ssim` work on whole batches ``(B, C, H, W)`` on any
device and return one value per image. They are computed in float64 and equal
``skimage.metrics.peak_signal_noise_ratio`` and
``skimage.metrics.structural_similarity`` (with its defaults) applied image by
image to float64 arrays. :func:`compute_metrics` runs a model over a dataset
and returns the mean over images of each metric.

Example:
    >>> target = torch.zeros(2, 1, 16, 16)
    >>> psnr(target + 1.0, target, data_range=10.0)
    tensor([20., 20.], dtype=torch.float64)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from img2img_filters.devices import DeviceLike, resolve_device

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_WINDOW",
    "compute_metrics",
    "predict_batches",
    "psnr",
    "rms_psnr",
    "ssim",
]

#: Side of SSIM's uniform window (scikit-image's default ``win_size``).
SSIM_WINDOW = 7
#: SSIM's luminance constant: ``C1 = (K1 * data_range) ** 2``.
SSIM_K1 = 0.01
#: SSIM's contrast constant: ``C2 = (K2 * data_range) ** 2``.
SSIM_K2 = 0.03


# -- checks ------------------------------------------------------------------------------------
def _check_data_range(data_range: Any, argument: str = "data_range") -> float:
    """``data_range`` as a positive finite float, or a clear error."""
    if isinstance(data_range, torch.Tensor) and data_range.numel() == 1:
        data_range = data_range.item()
    if isinstance(data_range, bool) or not isinstance(data_range, numbers.Real):
        raise TypeError(
            f"{argument} must be a positive number (the span max - min of the signal); "
            f"got {type(data_range).__name__} {data_range!r}"
        )
    value = float(data_range)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{argument} must be a positive finite number (the span max - min of the signal); "
            f"got {data_range!r}"
        )
    return value


def _check_pair(prediction: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors ``(B, C, H, W)`` of one shape, as float64 on one device."""
    for argument, value in (("prediction", prediction), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{argument} must be a torch.Tensor of shape (B, C, H, W); "
                f"got {type(value).__name__}"
            )
        if value.dim() != 4:
            raise ValueError(
                f"{argument} must have shape (B, C, H, W); got shape {tuple(value.shape)}"
            )
    if prediction.shape != target.shape:
        raise ValueError(
            "prediction and target must have the same shape (B, C, H, W); got prediction "
            f"{tuple(prediction.shape)} and target {tuple(target.shape)}"
        )
    device = prediction.device
    if device.type == "mps":  # no float64 there
        device = torch.device("cpu")
    return (
        prediction.detach().to(device=device, dtype=torch.float64),
        target.detach().to(device=device, dtype=torch.float64),
    )


def rms_psnr(error: float, data_range: float = 1.0) -> float:
    """The PSNR in decibels of an RMS error: ``20 * log10(data_range / error)``, ``inf`` at 0."""
    return math.inf if error == 0 else 20.0 * math.log10(data_range / error)


# -- per-image metrics -------------------------------------------------------------------------
def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image, in decibels.

    ``PSNR = 10 * log10(data_range ** 2 / MSE)`` with the MSE over all channels
    and pixels of one image, computed in float64. Per image this equals
    ``skimage.metrics.peak_signal_noise_ratio(target, prediction, data_range=data_range)``
    on float64 ``(H, W, C)`` arrays. Identical images give ``inf``, as in scikit-image.

    Args:
        prediction: ``(B, C, H, W)``, any float or integer dtype, any device.
        target: ``(B, C, H, W)``, the reference, same shape.
        data_range: ``max - min`` of the signal the images can take (1.0 for
            images in [0, 1]; a filter's ``data_range`` for its outputs).

    Returns:
        ``(B,)`` float64 on the device of ``prediction`` (the CPU for MPS).

    Raises:
        TypeError: If an image is not a tensor, or ``data_range`` is not a number.
        ValueError: For shapes that are not ``(B, C, H, W)`` or differ, or a
            ``data_range`` that is not positive and finite.

    Example:
        >>> psnr(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), data_range=10.0)
        tensor([20.], dtype=torch.float64)
    """
    prediction, target = _check_pair(prediction, target)
    data_range = _check_data_range(data_range)
    mse = (target - prediction).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 -> inf


def ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean structural similarity of each image, exactly as scikit-image computes it.

    Per image this equals ``skimage.metrics.structural_similarity(target,
    prediction, data_range=data_range)`` (with ``channel_axis`` set when
    ``C > 1``) on float64 ``(H, W, C)`` arrays, with scikit-image's defaults:

    - local means, variances and covariance over a 7x7 uniform window
      (:data:`SSIM_WINDOW`), variances and covariance as *sample* statistics
      (scaled by ``49 / 48``);
    - ``C1 = (0.01 * data_range) ** 2``, ``C2 = (0.03 * data_range) ** 2``;
    - ``S = (2 ux uy + C1)(2 vxy + C2) / ((ux² + uy² + C1)(vx + vy + C2))``;
    - the mean of ``S`` over the windows that lie wholly inside the image (the
      map cropped by 3 pixels on each side), then the mean over channels.

    Everything is computed in float64 with one batched average pooling.

    Args:
        prediction: ``(B, C, H, W)``, any float or integer dtype, any device;
            ``H`` and ``W`` at least 7.
        target: ``(B, C, H, W)``, the reference, same shape.
        data_range: ``max - min`` of the signal the images can take.

    Returns:
        ``(B,)`` float64 in [-1, 1] on the device of ``prediction`` (the CPU for MPS).

    Raises:
        TypeError: If an image is not a tensor, or ``data_range`` is not a number.
        ValueError: For shapes that are not ``(B, C, H, W)`` or differ, images
            smaller than 7x7, or a ``data_range`` that is not positive and finite.

    Example:
        >>> image = torch.rand(2, 3, 16, 16)
        >>> ssim(image, image, 1.0)
        tensor([1., 1.], dtype=torch.float64)
    """
    prediction, target = _check_pair(prediction, target)
    data_range = _check_data_range(data_range)
    height, width = target.shape[-2:]
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (its window); "
            f"got images of {height}x{width} (shape {tuple(target.shape)})"
        )
    batch, channels = target.shape[:2]
    x, y = target, prediction
    # One pooling for the five local statistics; the unpadded pooling keeps
    # exactly the windows wholly inside the image (scikit-image's crop).
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    means = F.avg_pool2d(stats, SSIM_WINDOW, stride=1)
    ux, uy, uxx, uyy, uxy = means.split(channels, dim=1)
    samples = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = samples / (samples - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    numerator = (2 * ux * uy + c1) * (2 * vxy + c2)
    denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    ssim_map = numerator / denominator
    return ssim_map.reshape(batch, channels, -1).mean(dim=2).mean(dim=1)


# -- over a dataset ----------------------------------------------------------------------------
def _check_positive_int(value: Any, argument: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument} must be a positive integer; got {value!r}")
    return int(value)


def _batches(
    dataset: Any, count: int, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs, targets)`` on ``device`` for the first ``count`` items, in order."""
    if callable(getattr(dataset, "batch", None)):
        for start in range(0, count, batch_size):
            positions = list(range(start, min(start + batch_size, count)))
            inputs, targets = dataset.batch(positions, device)
            yield inputs.to(device), targets.to(device)
        return

    subset = dataset if count == len(dataset) else Subset(dataset, range(count))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False)
    for item in loader:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(
                "dataset items must be (input, target) pairs of tensors; got "
                f"{type(item).__name__} of length {len(item) if hasattr(item, '__len__') else '?'}"
            )
        yield item[0].to(device), item[1].to(device)


def _resolve_data_range(
    data_range: Any, dataset: Any, count: int, batch_size: int, device: torch.device
) -> tuple[float, str]:
    """The data range and where it came from: ``argument``, ``filter`` or ``targets``."""
    if data_range is not None:
        return _check_data_range(data_range), "argument"
    filter_range = getattr(getattr(dataset, "filter", None), "data_range", None)
    if isinstance(filter_range, numbers.Real) and math.isfinite(filter_range) and filter_range > 0:
        return float(filter_range), "filter"
    low, high = math.inf, -math.inf
    for _, targets in _batches(dataset, count, batch_size, device):
        low = min(low, float(targets.min()))
        high = max(high, float(targets.max()))
    span = high - low
    if not math.isfinite(span) or span <= 0:
        raise ValueError(
            "cannot infer data_range from the targets: their max - min is "
            f"{span!r} (min {low!r}, max {high!r}); pass data_range explicitly"
        )
    return span, "targets"


def _model_state(model: nn.Module) -> tuple[bool, torch.device | None, torch.dtype | None]:
    """The model's training flag and the device and dtype of its first parameter."""
    first = next(iter(model.parameters()), None)
    if first is None:
        return model.training, None, None
    return model.training, first.device, first.dtype


def predict_batches(
    model: nn.Module, dataset: Any, count: int, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(predictions, targets)`` of the first ``count`` items, in order, batch by batch.

    The model runs in eval mode under ``torch.no_grad()`` on ``device``; when the
    iteration ends (or the generator is closed) it is put back in its previous
    mode and on its previous device; wrap it in :func:`contextlib.closing` so that
    this happens at once when the caller stops early.

    Raises:
        ValueError: If the model's output shape differs from the targets'.
    """
    was_training, old_device, dtype = _model_state(model)
    try:
        model.eval()
        if old_device is not None:
            model.to(device)
        with torch.no_grad():
            for inputs, targets in _batches(dataset, count, batch_size, device):
                if dtype is not None and inputs.is_floating_point():
                    inputs = inputs.to(dtype)
                predictions = model(inputs)
                if predictions.shape != targets.shape:
                    raise ValueError(
                        "model output and targets must have the same shape; got output "
                        f"{tuple(predictions.shape)} and targets {tuple(targets.shape)}"
                    )
                yield predictions, targets
    finally:
        if old_device is not None:
            model.to(old_device)
        model.train(was_training)


# Over 80 lines only for its docstring.
def compute_metrics(
    model: nn.Module,
    dataset: Any,
    data_range: float | None = None,
    *,
    batch_size: int = 256,
    device: DeviceLike = "auto",
    max_images: int | None = None,
) -> dict[str, Any]:
    """Mean PSNR, SSIM, L1 and MSE of a model's outputs over a dataset.

    The model runs in eval mode under ``torch.no_grad()`` on ``device``;
    afterwards it is put back in its previous mode and on its previous device.
    Every metric is computed per image (see :func:`psnr`, :func:`ssim`) and
    averaged over images, so the result does not depend on ``batch_size``.

    PSNR is averaged in decibels, like scikit-image values averaged with
    ``numpy.mean``: when any prediction equals its target exactly, that image's
    PSNR is ``inf`` and so is the mean. ``"psnr_infinite_images"`` counts such
    images. Note that ``json.dumps`` writes ``inf`` as ``Infinity``.

    Args:
        model: Maps ``(B, 3, H, W)`` inputs to ``(B, C, H, W)`` predictions.
        dataset: A dataset with a ``batch(positions, device)`` method returning
            ``(inputs, targets)`` (a :class:`~img2img_filters.data.filtered.FilteredDataset`),
            or any map-style dataset of ``(input, target)`` pairs, read with a
            :class:`~torch.utils.data.DataLoader`. Items are taken in order.
        data_range: ``max - min`` of the targets' possible values for PSNR and
            SSIM. ``None``: the dataset filter's ``data_range`` when the dataset
            has a ``filter`` with a positive finite one, else the observed
            ``max - min`` over all the targets used.
        batch_size: Images per forward pass.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or a :class:`torch.device`.
        max_images: Use only the first ``max_images`` items (default: all).

    Returns:
        A dict with ``"psnr"`` (dB), ``"ssim"``, ``"l1"`` (mean absolute error),
        ``"mse"``: means over images, as floats; ``"images"``: the number of
        images; ``"psnr_infinite_images"``: how many had PSNR ``inf``;
        ``"data_range"``: the value used; ``"data_range_source"``:
        ``"argument"``, ``"filter"`` or ``"targets"``.

    Raises:
        ValueError: For an empty dataset, a bad ``data_range``, ``batch_size``,
            ``max_images`` or ``device``, or predictions whose shape differs
            from the targets'.

    Example:
        >>> import numpy as np
        >>> from img2img_filters.data.filtered import FilteredDataset
        >>> from img2img_filters.models import create_img2img_model
        >>> images = np.random.randint(0, 256, (4, 3, 32, 32), dtype=np.uint8)
        >>> dataset = FilteredDataset(images, "study-sobel")
        >>> model = create_img2img_model(3, 1, "study")
        >>> result = compute_metrics(model, dataset, device="cpu")
        >>> result["images"], result["data_range_source"]
        (4, 'filter')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    batch_size = _check_positive_int(batch_size, "batch_size")
    max_images = _check_positive_int(max_images, "max_images", allow_none=True)
    target_device = resolve_device(device)
    total = len(dataset)
    if total == 0:
        raise ValueError("dataset is empty: there are no images to evaluate")
    count = total if max_images is None else min(total, max_images)
    data_range, source = _resolve_data_range(data_range, dataset, count, batch_size, target_device)

    sums = {"psnr": 0.0, "ssim": 0.0, "l1": 0.0, "mse": 0.0}
    infinite = 0
    images = 0
    batches = predict_batches(model, dataset, count, batch_size, target_device)
    with closing(batches):  # the model is restored even when a metric fails midway
        for predictions, targets in batches:
            batch_psnr = psnr(predictions, targets, data_range)
            batch_ssim = ssim(predictions, targets, data_range)
            error = (predictions.double() - targets.double()).flatten(1)
            sums["psnr"] += float(batch_psnr.sum())
            sums["ssim"] += float(batch_ssim.sum())
            sums["l1"] += float(error.abs().mean(dim=1).sum())
            sums["mse"] += float(error.square().mean(dim=1).sum())
            infinite += int(torch.isinf(batch_psnr).sum())
            images += len(targets)
    result: dict[str, Any] = {key: value / images for key, value in sums.items()}
    result.update(
        images=images,
        psnr_infinite_images=infinite,
        data_range=data_range,
        data_range_source=source,
    )
    return result

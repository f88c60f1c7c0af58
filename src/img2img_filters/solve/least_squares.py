"""The exact least-squares kernel of a linear filter, from normal equations accumulated in float64."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from img2img_filters.border import check_border
from img2img_filters.devices import DeviceLike, resolve_device
from img2img_filters.models import LinearNet, create_img2img_model
from img2img_filters.solve.batches import (
    accumulation_device,
    check_dataset,
    check_int,
    check_seconds,
    dataset_filter,
    iter_batches,
)
from img2img_filters.solve.normal_equations import Sums, solve

__all__ = ["fit_linear"]

_log = logging.getLogger(__name__)


def _fitted_model(
    w: torch.Tensor, b: torch.Tensor, sums: Sums, border: str, bias: bool
) -> LinearNet:
    """The ``"linear"`` (or ``"clipped_linear"``) model holding the solution ``w``, ``b``."""
    in_channels, out_channels = sums.channels
    k, clip = sums.k, sums.clip
    limits: dict[str, Any] = {} if clip is None else {"low": clip[0], "high": clip[1]}
    if sums.image_mean:
        limits["image_mean"] = True
    model = create_img2img_model(
        in_channels,
        out_channels,
        "linear" if clip is None else "clipped_linear",
        kernel_size=k,
        depth=1,
        border=border,
        bias=bias,
        **limits,
    )
    conv = model.layers[0]
    patch_rows = in_channels * k * k
    with torch.no_grad():
        conv.weight.copy_(w[:patch_rows].T.reshape(out_channels, in_channels, k, k).float().cpu())
        if sums.image_mean:
            model.mean_weight.copy_(w[patch_rows:].T.float().cpu())
        if bias:
            conv.bias.copy_(b.float().cpu())
    return model


def _check_ridge_bias(ridge: object, bias: object) -> None:
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)):
        raise TypeError(f"ridge must be a non-negative number; got {ridge!r}")
    if not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be a non-negative finite number; got {ridge!r}")
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be a bool; got {bias!r}")


def _check_clip(clip: object) -> tuple[float, float] | None:
    """``None`` or a ``(low, high)`` pair of finite numbers with ``low < high``."""
    if clip is None:
        return None
    try:
        low, high = (float(v) for v in clip)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(
            f"clip must be None or a (low, high) pair of numbers; got {clip!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"clip must be a (low, high) pair of finite numbers, low < high; got {clip!r}"
        )
    return low, high


# Over 80 lines for its docstring and signature (every option documented); the work is in
# solve/normal_equations.py.
def fit_linear(
    dataset: Any,
    kernel_size: int,
    *,
    border: str | None = None,
    bias: bool = True,
    batch_size: int = 256,
    device: DeviceLike = "cpu",
    ridge: float = 0.0,
    max_images: int | None = None,
    progress: bool = False,
    seconds: float | None = None,
    clip: tuple[float, float] | None = None,
    image_mean: bool = False,
) -> LinearNet:
    """Fit the best ``k x k`` linear filter to a dataset by exact least squares.

    Only pixels whose ``k x k`` support lies inside the photo are fitted (and, for
    a linear target filter with a larger kernel, only those whose target does not
    touch the border either), so border handling cannot bias the kernel. The
    normal equations are accumulated in float64 over batches (memory independent
    of the number of photos) and solved in float64: Cholesky when the system is
    well posed; otherwise a logged warning and the minimum-norm solution, so
    the weights are never NaN. With ``ridge > 0`` the fit minimises
    ``mean((patch . w + b - target)**2) + ridge * |w|**2`` (the bias is not penalised).

    Args:
        dataset: A ``FilteredDataset`` (anything with ``batch(positions, device)``
            and ``len``), or a ``Dataset`` of ``(input (C_in, H, W), target (C, H, W))``
            pairs.
        kernel_size: Odd side ``k`` of the kernel.
        border: Border of the returned model (default: the dataset's filter's
            border, else ``"reflect101"``). It does not affect the fit.
        bias: Whether to fit a bias per output channel.
        batch_size: Photos per batch.
        device: Where batches are made and the sums accumulated (``"auto"``, ``"cpu"``,
            ``"cuda:N"``, a ``torch.device``).
        ridge: Non-negative ridge penalty on the weights (0: plain least squares).
        max_images: Use only the first ``max_images`` photos.
        progress: Show a progress bar.
        seconds: Accumulate no further batch once this long has passed since the call
            (at least one batch is; ``None``: no limit): the fit then uses the photos
            it reached, and ``fit_report["out_of_time"]`` says so.
        clip: ``(low, high)``: the target was clipped to this range (a sharpening, an
            edge filter or a colour boost saved to a file). Pixels whose target lies
            within half an 8-bit step of either end, in any channel, are left out of
            the fit (the clipping moved them), and the model returned clips its output
            the same way. ``None``: a plain linear fit.
        image_mean: Fit a linear map of each photo's mean colour (over the whole photo)
            too, added to every output: a contrast or brightness change about the mean.
            Needs ``clip``; the model is then a ``"clipped_linear"`` with ``image_mean``.

    Returns:
        A ``"linear"`` model ``(B, C_in, H, W) -> (B, C, H, W)`` of depth 1 (a
        :class:`~img2img_filters.models.LinearNet`; with ``clip``, a ``"clipped_linear"``
        :class:`~img2img_filters.models.ClippedLinearNet`), on the CPU, with ``model.fit_report``:
        ``kernel_size``, ``pixels``, ``images``, ``skipped_images`` (too small for the
        kernel), ``margin`` ((rows, columns) left out at each side), ``unknowns``,
        ``rank``, ``condition_number`` (of the centred normal matrix, ridge included),
        ``residual_rms`` on the fitted pixels (from the normal equations, so accurate
        to about 1e-7 of ``target_rms``), ``residual_rms_per_channel``, ``target_rms``,
        ``solver`` (``"cholesky"`` or ``"pinv"``), ``ridge``, ``border``, ``seconds``,
        ``out_of_time`` (whether ``seconds`` cut the photos short), ``clip``
        (the range, or ``None``) and ``clipped_pixels`` (left out for ``clip``).

    Raises:
        TypeError: If an argument has the wrong type or the dataset gives no pairs.
        ValueError: For a bad ``kernel_size``, ``batch_size``, ``ridge`` or
            ``max_images``, an empty dataset, photos too small for the kernel, or
            non-finite values.

    Example:
        >>> from img2img_filters.data.filtered import FilteredDataset  # doctest: +SKIP
        >>> model = fit_linear(FilteredDataset(photos, "study-sobel"), 5)  # doctest: +SKIP
        >>> model.fit_report["residual_rms"] < 1e-6  # doctest: +SKIP
        True
    """
    started = time.perf_counter()
    k = check_int("kernel_size", kernel_size, 1, odd=True)
    batch_size = check_int("batch_size", batch_size, 1)
    if max_images is not None:
        max_images = check_int("max_images", max_images, 1)
    _check_ridge_bias(ridge, bias)
    check_seconds(seconds)
    clip = _check_clip(clip)
    if not isinstance(image_mean, bool):
        raise TypeError(f"image_mean must be a bool; got {image_mean!r}")
    if image_mean and clip is None:
        raise ValueError("image_mean=True needs clip: only a clipped_linear model has the term")
    check_dataset(dataset, "fit_linear")
    device = resolve_device(device)
    filt = dataset_filter(dataset)
    border = check_border(border or (filt.border if filt is not None else "reflect101"))

    # Rows/columns left out at each side: the kernel's radius, or the target filter's.
    radius = k // 2
    margin_h = margin_w = radius
    if filt is not None and filt.linear:
        fh, fw = filt.kernel_size
        margin_h, margin_w = max(radius, fh // 2), max(radius, fw // 2)

    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    batches = iter_batches(dataset, batch_size, device, max_images)
    if progress:
        batches = tqdm(
            batches,
            total=math.ceil(count / batch_size),
            desc="fit_linear",
            unit="batch",
            disable=None,  # only on a terminal
        )
    sums = Sums(k, (margin_h, margin_w), accumulation_device(device), clip, image_mean)
    try:
        for inputs, targets in batches:
            late = seconds is not None and time.perf_counter() - started > seconds
            if late and sums.equations is not None:  # at least one batch is accumulated
                sums.out_of_time = True
                break
            sums.add(inputs, targets)
    finally:
        if isinstance(batches, tqdm):
            batches.close()  # a loop cut short by `seconds` leaves its bar open
    equations = sums.solvable()
    w, b, report = solve(equations, bias=bias, ridge=float(ridge))
    model = _fitted_model(w, b, sums, border, bias)
    out_of_time = sums.out_of_time
    model.fit_report = {
        "kernel_size": k,
        "pixels": equations.pixels,
        "images": sums.images,
        "skipped_images": sums.skipped,
        "margin": (margin_h, margin_w),
        **report,
        "ridge": float(ridge),
        "border": border,
        "seconds": time.perf_counter() - started,
        "out_of_time": out_of_time,
        "clip": None if clip is None else list(clip),
        "clipped_pixels": sums.clipped,
    }
    if out_of_time:
        _log.info(
            "fit_linear: time limit of %.3g s reached; fitted on the first %d of %d photos",
            seconds,
            sums.images,
            count,
        )
    return model

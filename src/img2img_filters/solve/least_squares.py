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

__all__ = ["fit_linear"]

_log = logging.getLogger(__name__)

#: Float64 elements of one block of patches (16 MiB): big enough for fast matrix
#: products, small enough to stay in cache-friendly memory whatever ``batch_size``.
_PATCH_BLOCK = 2**21

#: Eigenvalues of the normal matrix below this fraction of its scale count as zero.
_RANK_RTOL = 1e-12


def _design(
    x: torch.Tensor,
    y: torch.Tensor,
    kh: int,
    kw: int,
    workspace: torch.Tensor,
    means: torch.Tensor | None = None,
) -> torch.Tensor:
    """The columns ``[patch; mean; target; 1]`` of every output pixel, float64.

    Args:
        x: Inputs ``(B, C_in, H, W)``.
        y: Targets ``(B, C, H - kh + 1, W - kw + 1)``, aligned with the patches.
        kh: Kernel height.
        kw: Kernel width.
        workspace: A flat float64 buffer, reused between calls so that no block of
            patches is allocated (and page-faulted) anew; at least as large as the result.
        means: Each photo's mean colour ``(B, E)``, the same for all its pixels; ``None``:
            no such rows.

    Returns:
        ``(C_in*kh*kw + C + 1, B*(H-kh+1)*(W-kw+1))``, a view of ``workspace``: patch
        rows ordered ``(c, i, j)`` like a convolution weight, then the target channels,
        then a row of ones, so that one matrix product gives every sum the normal
        equations need.
    """
    b, c, h, w = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    extra = 0 if means is None else means.shape[1]
    patch_rows, outputs = c * kh * kw, y.shape[1]
    unknowns = patch_rows + extra
    rows, columns = unknowns + outputs + 1, b * oh * ow
    out = workspace[: rows * columns].view(rows, columns)
    patches = out[:patch_rows].view(c, kh, kw, b, oh, ow)
    channels_first = x.transpose(0, 1)
    for i in range(kh):
        for j in range(kw):
            patches[:, i, j] = channels_first[:, :, i : i + oh, j : j + ow]
    if means is not None:
        out[patch_rows:unknowns].view(extra, b, oh * ow).copy_(means.T[:, :, None])
    out[unknowns : unknowns + outputs].view(outputs, b, oh, ow).copy_(y.transpose(0, 1))
    out[-1] = 1.0
    return out


class _NormalEquations:
    """Running float64 sums of a least-squares problem ``targets ~ patches @ w + bias``.

    One symmetric matrix holds them all: for columns ``z = [a; y; 1]`` (patch,
    target, one), ``moments = sum z z^T`` contains ``sum a a^T``, ``sum a y^T``,
    ``sum a``, ``sum y``, ``sum y y^T`` and the pixel count.
    """

    def __init__(self, unknowns: int, outputs: int, device: torch.device) -> None:
        self.unknowns, self.outputs = unknowns, outputs
        size = unknowns + outputs + 1
        self.moments = torch.zeros(size, size, dtype=torch.float64, device=device)
        self._workspace = torch.empty(0, dtype=torch.float64, device=device)

    def workspace(self, elements: int) -> torch.Tensor:
        """A reusable flat float64 buffer of at least ``elements`` elements."""
        if self._workspace.numel() < elements:
            self._workspace = torch.empty(elements, dtype=torch.float64, device=self.moments.device)
        return self._workspace

    def add(self, columns: torch.Tensor) -> None:
        """Add ``columns`` ``(unknowns + outputs + 1, N)`` from :func:`_design`."""
        self.moments.addmm_(columns, columns.T)

    @property
    def pixels(self) -> int:
        """The number of pixels added."""
        return round(float(self.moments[-1, -1]))

    @property
    def gram(self) -> torch.Tensor:
        """``sum a a^T`` ``(P, P)``."""
        return self.moments[: self.unknowns, : self.unknowns]

    @property
    def cross(self) -> torch.Tensor:
        """``sum a y^T`` ``(P, C)``."""
        return self.moments[: self.unknowns, self.unknowns : -1]

    @property
    def sum_a(self) -> torch.Tensor:
        """``sum a`` ``(P,)``."""
        return self.moments[: self.unknowns, -1]

    @property
    def sum_y(self) -> torch.Tensor:
        """``sum y`` ``(C,)``."""
        return self.moments[self.unknowns : -1, -1]

    @property
    def sum_yy(self) -> torch.Tensor:
        """``sum y**2`` per channel ``(C,)``."""
        return self.moments[self.unknowns : -1, self.unknowns : -1].diagonal()


def _solve(
    equations: _NormalEquations, *, bias: bool, ridge: float
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Solve the accumulated normal equations.

    Returns:
        ``w`` ``(P, C)``, ``b`` ``(C,)`` and a report (rank, condition number,
        residual, solver).
    """
    n = equations.pixels
    unknowns = equations.gram.shape[0]
    mean_a = equations.sum_a / n
    mean_y = equations.sum_y / n
    second_moment = equations.gram / n
    if bias:  # centre: the bias is then mean_y - w . mean_a, and the system is better conditioned
        matrix = second_moment - torch.outer(mean_a, mean_a)
        rhs = equations.cross / n - torch.outer(mean_a, mean_y)
        target_energy = equations.sum_yy / n - mean_y * mean_y
    else:
        matrix = second_moment
        rhs = equations.cross / n
        target_energy = equations.sum_yy / n
    matrix = (matrix + matrix.T) / 2
    if ridge:
        matrix = matrix + ridge * torch.eye(unknowns, dtype=matrix.dtype, device=matrix.device)
    scale = float(second_moment.diagonal().max()) if unknowns else 0.0
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    tolerance = _RANK_RTOL * max(scale, float(eigenvalues[-1]), 1e-300) * max(unknowns, 1)
    rank = int((eigenvalues > tolerance).sum())
    smallest, largest = float(eigenvalues[0]), float(eigenvalues[-1])
    condition = largest / smallest if smallest > tolerance else math.inf
    solver = "cholesky"
    w = None
    if rank == unknowns:
        factor, info = torch.linalg.cholesky_ex(matrix)
        if int(info) == 0:
            w = torch.cholesky_solve(rhs, factor)
    if w is None:
        total = unknowns + int(bias)
        reason = (
            f"only {n} pixels for {total} unknowns"
            if n < total
            else "the photos do not vary enough (e.g. uniform images)"
        )
        _log.warning(
            "fit_linear: the normal equations are rank-deficient (rank %d of %d): %s; "
            "returning the minimum-norm least-squares solution. "
            "Use more or more varied photos, a smaller kernel_size, or ridge > 0.",
            rank + int(bias),
            total,
            reason,
        )
        solver = "pinv"
        keep = eigenvalues > tolerance
        inverse = torch.where(keep, 1.0 / eigenvalues.clamp_min(tolerance), 0.0)
        w = eigenvectors @ (inverse[:, None] * (eigenvectors.T @ rhs))
    b = mean_y - w.T @ mean_a if bias else torch.zeros_like(mean_y)
    # Mean squared residual from the same sums: E[(y - w.a - b)^2] = energy - 2 w.rhs + w^T M w.
    # (Without ridge at the optimum this is energy - w.rhs; cancellation limits it to ~1e-7 of
    # the target's RMS.)
    plain = matrix - ridge * torch.eye(unknowns, dtype=matrix.dtype, device=matrix.device)
    residual = target_energy - 2 * (w * rhs).sum(0) + (w * (plain @ w)).sum(0)
    residual = residual.clamp_min(0.0)
    report = {
        "rank": rank + int(bias),
        "unknowns": unknowns + int(bias),
        "condition_number": condition,
        "solver": solver,
        "residual_rms": math.sqrt(float(residual.mean())),
        "residual_rms_per_channel": [math.sqrt(float(v)) for v in residual],
        "target_rms": math.sqrt(float((equations.sum_yy / n).mean())),
    }
    return w, b, report


#: Targets within this of a clip limit count as clipped (half an 8-bit step).
_CLIP_MARGIN = 0.5 / 255


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


def _unclipped(targets: torch.Tensor, clip: tuple[float, float]) -> torch.Tensor:
    """Per pixel of ``targets`` ``(B, C, H, W)``: 1.0 where no channel is at a clip limit.

    Returns:
        ``(B*H*W,)`` float64, in the order of :func:`_design`'s columns.
    """
    low, high = clip
    inside = (targets > low + _CLIP_MARGIN) & (targets < high - _CLIP_MARGIN)
    return inside.all(dim=1).reshape(-1).to(torch.float64)


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
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)):
        raise TypeError(f"ridge must be a non-negative number; got {ridge!r}")
    if not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be a non-negative finite number; got {ridge!r}")
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be a bool; got {bias!r}")
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

    accumulate_on = accumulation_device(device)
    equations: _NormalEquations | None = None
    channels: tuple[int, int] | None = None
    images = skipped = 0
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
    out_of_time = False
    clipped = 0
    for inputs, targets in batches:
        late = seconds is not None and time.perf_counter() - started > seconds
        if late and equations is not None:  # at least one batch is accumulated
            out_of_time = True
            break
        if channels is None:
            channels = (inputs.shape[1], targets.shape[1])
            extra = channels[0] if image_mean else 0
            equations = _NormalEquations(channels[0] * k * k + extra, channels[1], accumulate_on)
        elif (inputs.shape[1], targets.shape[1]) != channels:
            raise ValueError(
                f"dataset: every pair must have {channels[0]} input and {channels[1]} target "
                f"channels; got {inputs.shape[1]} and {targets.shape[1]}"
            )
        height, width = inputs.shape[-2:]
        images += inputs.shape[0]
        if height - 2 * margin_h < 1 or width - 2 * margin_w < 1:
            skipped += inputs.shape[0]
            continue
        x = inputs[
            ...,
            margin_h - radius : height - margin_h + radius,
            margin_w - radius : width - margin_w + radius,
        ].to(accumulate_on)
        y = targets[..., margin_h : height - margin_h, margin_w : width - margin_w].to(
            accumulate_on
        )
        means = inputs.double().mean(dim=(2, 3)).to(accumulate_on) if image_mean else None
        per_photo = (equations.unknowns + channels[1] + 1) * y.shape[-2] * y.shape[-1]
        step = max(1, _PATCH_BLOCK // per_photo)
        workspace = equations.workspace(min(step, x.shape[0]) * per_photo)
        for first in range(0, x.shape[0], step):
            chunk = y[first : first + step]
            part = None if means is None else means[first : first + step]
            columns = _design(x[first : first + step], chunk, k, k, workspace, part)
            if clip is not None:
                kept = _unclipped(chunk, clip)
                clipped += int(kept.numel() - kept.sum())
                columns.mul_(kept)
            equations.add(columns)
    if isinstance(batches, tqdm):
        batches.close()  # a loop cut short by `seconds` leaves its bar open
    if equations is not None and equations.pixels == 0 and clipped:
        raise ValueError(
            f"fit_linear: every target pixel is at a limit of clip={clip}: nothing is left to "
            "fit; pass clip=None, or photos whose targets are not all clipped"
        )
    if equations is None or equations.pixels == 0:
        raise ValueError(
            f"fit_linear: no pixel to fit: photos must be larger than {2 * margin_h + 1}x"
            f"{2 * margin_w + 1} for kernel_size={k}; got {images} photos, all too small"
        )
    if not torch.isfinite(equations.moments).all():
        raise ValueError("fit_linear: the inputs or targets contain NaN or infinite values")

    w, b, report = _solve(equations, bias=bias, ridge=float(ridge))
    in_channels, out_channels = channels
    limits = {} if clip is None else {"low": clip[0], "high": clip[1]}
    if image_mean:
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
        if image_mean:
            model.mean_weight.copy_(w[patch_rows:].T.float().cpu())
        if bias:
            conv.bias.copy_(b.float().cpu())
    model.fit_report = {
        "kernel_size": k,
        "pixels": equations.pixels,
        "images": images,
        "skipped_images": skipped,
        "margin": (margin_h, margin_w),
        **report,
        "ridge": float(ridge),
        "border": border,
        "seconds": time.perf_counter() - started,
        "out_of_time": out_of_time,
        "clip": None if clip is None else list(clip),
        "clipped_pixels": clipped,
    }
    if out_of_time:
        _log.info(
            "fit_linear: time limit of %.3g s reached; fitted on the first %d of %d photos",
            seconds,
            images,
            count,
        )
    return model

"""Exact answers for linear filters: least-squares fits and folded kernels.

A linear filter needs no gradient descent: its kernel is the solution of a
linear least-squares problem whose normal equations fit in memory whatever the
number of photos. :func:`fit_linear` accumulates them over a dataset and solves
them in float64; :func:`fold_linear` turns any stack of linear convolutions
into the one kernel it computes; :func:`kernel_error` compares that kernel with
a filter's exact kernel; :func:`lbfgs_refine` polishes a gradient-trained model
with L-BFGS.

>>> import numpy as np
>>> from img2img.data.filtered import FilteredDataset
>>> photos = np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
>>> model = fit_linear(FilteredDataset(photos, "sobel:dx=1,dy=0"), kernel_size=3)
>>> kernel_error(model, "sobel:dx=1,dy=0")["max_abs"] < 1e-5
True
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from img2img.border import check_border
from img2img.devices import DeviceLike, resolve_device
from img2img.filters import Filter, create_filter
from img2img.models import LinearNet, create_img2img_model

__all__ = ["fit_linear", "fold_linear", "kernel_error", "lbfgs_refine"]

#: Float64 elements of one block of patches (16 MiB): big enough for fast matrix
#: products, small enough to stay in cache-friendly memory whatever ``batch_size``.
_PATCH_BLOCK = 2**21

#: Eigenvalues of the normal matrix below this fraction of its scale count as zero.
_RANK_RTOL = 1e-12


# -- input checks --------------------------------------------------------------------------------


def _check_int(argument: str, value: Any, minimum: int, *, odd: bool = False) -> int:
    kind = "a positive odd integer" if odd else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be {kind}; got {value!r}")
    if value < minimum or (odd and value % 2 == 0):
        raise ValueError(f"{argument} must be {kind}; got {value!r}")
    return int(value)


def _accumulation_device(device: torch.device) -> torch.device:
    """Where the float64 sums live: the batch's device, except MPS (no float64)."""
    return torch.device("cpu") if device.type == "mps" else device


def _dataset_filter(dataset: Any) -> Filter | None:
    filt = getattr(dataset, "filter", None)
    return filt if isinstance(filt, Filter) else None


def _iter_batches(
    dataset: Any,
    batch_size: int,
    device: torch.device,
    max_images: int | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(inputs (B, C_in, H, W), targets (B, C, H, W))`` float batches on ``device``.

    Datasets with a ``batch(positions, device)`` method (``FilteredDataset``)
    make whole batches at once; any other ``Dataset`` of ``(input, target)``
    pairs ``(C_in, H, W)``, ``(C, H, W)`` is read item by item and stacked,
    consecutive items of equal size together.
    """
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    batch = getattr(dataset, "batch", None)
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        if callable(batch):
            yield batch(np.arange(start, stop), device)
            continue
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        for position in range(start, stop):
            item = dataset[position]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"dataset items must be (input, target) pairs; item {position} is "
                    f"{type(item).__name__}"
                )
            pair = (torch.as_tensor(item[0]), torch.as_tensor(item[1]))
            for name, tensor in zip(("input", "target"), pair, strict=True):
                if tensor.dim() != 3:
                    raise ValueError(
                        f"dataset item {position}: {name} must be (C, H, W); got shape "
                        f"{tuple(tensor.shape)}"
                    )
            if pair[0].shape[-2:] != pair[1].shape[-2:]:
                raise ValueError(
                    f"dataset item {position}: input {tuple(pair[0].shape)} and target "
                    f"{tuple(pair[1].shape)} differ in size"
                )
            if group and (group[0][0].shape != pair[0].shape or group[0][1].shape != pair[1].shape):
                yield _stack(group, device)
                group = []
            group.append(pair)
        if group:
            yield _stack(group, device)


def _stack(
    group: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.stack([x for x, _ in group]).to(device=device, dtype=torch.float32)
    targets = torch.stack([y for _, y in group]).to(device=device, dtype=torch.float32)
    return inputs, targets


def _design(
    x: torch.Tensor, y: torch.Tensor, kh: int, kw: int, workspace: torch.Tensor
) -> torch.Tensor:
    """The columns ``[patch; target; 1]`` of every output pixel, float64.

    Args:
        x: Inputs ``(B, C_in, H, W)``.
        y: Targets ``(B, C, H - kh + 1, W - kw + 1)``, aligned with the patches.
        kh: Kernel height.
        kw: Kernel width.
        workspace: A flat float64 buffer, reused between calls so that no block of
            patches is allocated (and page-faulted) anew; at least as large as the result.

    Returns:
        ``(C_in*kh*kw + C + 1, B*(H-kh+1)*(W-kw+1))``, a view of ``workspace``: patch
        rows ordered ``(c, i, j)`` like a convolution weight, then the target channels,
        then a row of ones, so that one matrix product gives every sum the normal
        equations need.
    """
    b, c, h, w = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    unknowns, outputs = c * kh * kw, y.shape[1]
    rows, columns = unknowns + outputs + 1, b * oh * ow
    out = workspace[: rows * columns].view(rows, columns)
    patches = out[:unknowns].view(c, kh, kw, b, oh, ow)
    channels_first = x.transpose(0, 1)
    for i in range(kh):
        for j in range(kw):
            patches[:, i, j] = channels_first[:, :, i : i + oh, j : j + ow]
    out[unknowns : unknowns + outputs].view(outputs, b, oh, ow).copy_(y.transpose(0, 1))
    out[-1] = 1.0
    return out


# -- fit_linear ----------------------------------------------------------------------------------


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
        warnings.warn(
            f"fit_linear: the normal equations are rank-deficient (rank {rank + int(bias)} of "
            f"{total}): {reason}; returning the minimum-norm least-squares solution. "
            "Use more or more varied photos, a smaller kernel_size, or ridge > 0.",
            RuntimeWarning,
            stacklevel=3,
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
) -> LinearNet:
    """Fit the best ``k x k`` linear filter to a dataset by exact least squares.

    Only pixels whose ``k x k`` support lies inside the photo are fitted (and, for
    a linear target filter with a larger kernel, only those whose target does not
    touch the border either), so border handling cannot bias the kernel. The
    normal equations are accumulated in float64 over batches (memory independent
    of the number of photos) and solved in float64: Cholesky when the system is
    well posed; otherwise a ``RuntimeWarning`` and the minimum-norm solution, so
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

    Returns:
        A ``"linear"`` model ``(B, C_in, H, W) -> (B, C, H, W)`` of depth 1 (a
        :class:`~img2img.models.LinearNet`), on the CPU, with ``model.fit_report``:
        ``kernel_size``, ``pixels``, ``images``, ``skipped_images`` (too small for the
        kernel), ``margin`` ((rows, columns) left out at each side), ``unknowns``,
        ``rank``, ``condition_number`` (of the centred normal matrix, ridge included),
        ``residual_rms`` on the fitted pixels (from the normal equations, so accurate
        to about 1e-7 of ``target_rms``), ``residual_rms_per_channel``, ``target_rms``,
        ``solver`` (``"cholesky"`` or ``"pinv"``), ``ridge``, ``border``, ``seconds``.

    Raises:
        TypeError: If an argument has the wrong type or the dataset gives no pairs.
        ValueError: For a bad ``kernel_size``, ``batch_size``, ``ridge`` or
            ``max_images``, an empty dataset, photos too small for the kernel, or
            non-finite values.

    Example:
        >>> from img2img.data.filtered import FilteredDataset  # doctest: +SKIP
        >>> model = fit_linear(FilteredDataset(photos, "study-sobel"), 5)  # doctest: +SKIP
        >>> model.fit_report["residual_rms"] < 1e-6  # doctest: +SKIP
        True
    """
    started = time.perf_counter()
    k = _check_int("kernel_size", kernel_size, 1, odd=True)
    batch_size = _check_int("batch_size", batch_size, 1)
    if max_images is not None:
        max_images = _check_int("max_images", max_images, 1)
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)):
        raise TypeError(f"ridge must be a non-negative number; got {ridge!r}")
    if not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be a non-negative finite number; got {ridge!r}")
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be a bool; got {bias!r}")
    if not hasattr(dataset, "__len__") or not (
        callable(getattr(dataset, "batch", None)) or hasattr(dataset, "__getitem__")
    ):
        raise TypeError(
            "dataset must be a FilteredDataset or a Dataset of (input, target) pairs; got "
            f"{type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise ValueError("dataset is empty: fit_linear needs at least one photo")
    device = resolve_device(device)
    filt = _dataset_filter(dataset)
    border = check_border(border or (filt.border if filt is not None else "reflect101"))

    # Rows/columns left out at each side: the kernel's radius, or the target filter's.
    radius = k // 2
    margin_h = margin_w = radius
    if filt is not None and filt.linear:
        fh, fw = filt.kernel_size
        margin_h, margin_w = max(radius, fh // 2), max(radius, fw // 2)

    accumulate_on = _accumulation_device(device)
    equations: _NormalEquations | None = None
    channels: tuple[int, int] | None = None
    images = skipped = 0
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    batches = _iter_batches(dataset, batch_size, device, max_images)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(
            batches, total=math.ceil(count / batch_size), desc="fit_linear", unit="batch"
        )
    for inputs, targets in batches:
        if channels is None:
            channels = (inputs.shape[1], targets.shape[1])
            equations = _NormalEquations(channels[0] * k * k, channels[1], accumulate_on)
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
        per_photo = (channels[0] * k * k + channels[1] + 1) * y.shape[-2] * y.shape[-1]
        step = max(1, _PATCH_BLOCK // per_photo)
        workspace = equations.workspace(min(step, x.shape[0]) * per_photo)
        for first in range(0, x.shape[0], step):
            columns = _design(x[first : first + step], y[first : first + step], k, k, workspace)
            equations.add(columns)
    if equations is None or equations.pixels == 0:
        raise ValueError(
            f"fit_linear: no pixel to fit: photos must be larger than {2 * margin_h + 1}x"
            f"{2 * margin_w + 1} for kernel_size={k}; got {images} photos, all too small"
        )
    if not torch.isfinite(equations.moments).all():
        raise ValueError("fit_linear: the inputs or targets contain NaN or infinite values")

    w, b, report = _solve(equations, bias=bias, ridge=float(ridge))
    in_channels, out_channels = channels
    model = create_img2img_model(
        in_channels, out_channels, "linear", kernel_size=k, depth=1, border=border, bias=bias
    )
    conv = model.layers[0]
    with torch.no_grad():
        conv.weight.copy_(w.T.reshape(out_channels, in_channels, k, k).float().cpu())
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
    }
    return model


# -- fold_linear and kernel_error ----------------------------------------------------------------


def _linear_layers(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Conv2d]]:
    """The convolutions of ``module`` in order; raise on the first layer that is not linear."""
    for name, child in module.named_children():
        qualified = f"{prefix}{name}"
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            yield from _linear_layers(child, f"{qualified}.")
        elif isinstance(child, nn.Conv2d):
            yield qualified, child
        elif isinstance(child, nn.Identity):
            continue
        else:
            raise ValueError(
                f"fold_linear: layer {qualified!r} ({type(child).__name__}) is not linear; only "
                "Conv2d, BorderConv2d, Identity, Sequential and ModuleList can be folded"
            )


def _full_weight(name: str, conv: nn.Conv2d) -> torch.Tensor:
    """A convolution's weight as a dense, undilated kernel ``(O, I, kh, kw)`` float64."""
    if tuple(conv.stride) != (1, 1):
        raise ValueError(f"fold_linear: layer {name!r} has stride {tuple(conv.stride)}; expected 1")
    weight = conv.weight.detach().to(torch.float64)
    out_channels, per_group, kh, kw = weight.shape
    groups = conv.groups
    if groups > 1:
        dense = weight.new_zeros(out_channels, per_group * groups, kh, kw)
        per_out = out_channels // groups
        for g in range(groups):
            rows = slice(g * per_out, (g + 1) * per_out)
            dense[rows, g * per_group : (g + 1) * per_group] = weight[rows]
        weight = dense
    dh, dw = conv.dilation
    if (dh, dw) != (1, 1):
        dilated = weight.new_zeros(*weight.shape[:2], (kh - 1) * dh + 1, (kw - 1) * dw + 1)
        dilated[..., ::dh, ::dw] = weight
        weight = dilated
    return weight


def _compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The correlation kernel of ``second`` applied after ``first``.

    Args:
        first: ``(M, C, ah, aw)``.
        second: ``(O, M, bh, bw)``.

    Returns:
        ``(O, C, ah + bh - 1, aw + bw - 1)``.
    """
    bh, bw = second.shape[-2:]
    images = first.transpose(0, 1)  # C images of M channels
    padded = F.pad(images, (bw - 1, bw - 1, bh - 1, bh - 1))
    return F.conv2d(padded, second.flip(-1, -2)).transpose(0, 1).contiguous()


def fold_linear(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a stack of linear convolutions into the single kernel and bias it computes.

    The model's children are walked in order (recursing into ``nn.Sequential``
    and ``nn.ModuleList``), which is the order a plain stack applies them.
    ``nn.Conv2d`` and ``BorderConv2d`` of any dilation and groups (stride 1) and
    ``nn.Identity`` are accepted; biases propagate through later layers
    (``b2 + sum(W2) @ b1``). On pixels far enough from the border for every
    layer's padding to be irrelevant, ``conv2d(x, weight, bias)`` (correlation,
    kernel centred) equals the model's output.

    Args:
        model: A linear model (e.g. a ``"linear"`` model of any depth), or a single
            convolution.

    Returns:
        ``weight`` ``(C_out, C_in, kh, kw)`` and ``bias`` ``(C_out,)``, float64, on the CPU.

    Raises:
        ValueError: Naming the first layer that is not linear (e.g. ``'relu1' (ReLU)``),
            a layer with stride, mismatched channels, or a model without convolutions.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    layers = [("", model)] if isinstance(model, nn.Conv2d) else list(_linear_layers(model))
    if not layers:
        raise ValueError(f"fold_linear: {type(model).__name__} has no convolution to fold")
    kernel: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    for name, conv in layers:
        weight = _full_weight(name or type(conv).__name__, conv).cpu()
        layer_bias = (
            conv.bias.detach().to(torch.float64).cpu()
            if conv.bias is not None
            else torch.zeros(weight.shape[0], dtype=torch.float64)
        )
        if kernel is None:
            kernel, bias = weight, layer_bias
            continue
        if weight.shape[1] != kernel.shape[0]:
            raise ValueError(
                f"fold_linear: layer {name!r} expects {weight.shape[1]} input channels; the "
                f"layers before it give {kernel.shape[0]}"
            )
        bias = layer_bias + weight.sum(dim=(2, 3)) @ bias
        kernel = _compose(kernel, weight)
    return kernel, bias


def _centre_pad(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    kh, kw = kernel.shape[-2:]
    top, left = (height - kh) // 2, (width - kw) // 2
    return F.pad(kernel, (left, width - kw - left, top, height - kh - top))


def kernel_error(model: nn.Module, filter: str | Filter) -> dict[str, Any]:
    """Compare a linear model's folded kernel with a linear filter's exact kernel.

    The smaller kernel is zero-padded, centred, to the size of the larger one.

    Args:
        model: A linear model (see :func:`fold_linear`), ``3 -> C`` channels.
        filter: A linear filter or its spec (e.g. ``"study-sobel"``).

    Returns:
        ``max_abs`` (largest absolute difference of kernel entries), ``relative``
        (Frobenius norm of the difference over that of the true kernel), ``bias_max_abs``
        (largest absolute bias; linear filters have none), ``model_kernel_size``,
        ``filter_kernel_size`` and ``compared_size``, each ``(kh, kw)``.

    Raises:
        ValueError: If the filter is not linear, the model is not linear, the channel
            counts differ, or the sizes cannot be centred on each other.
    """
    filt = create_filter(filter)
    if not filt.linear:
        raise ValueError(f"kernel_error: filter {filt.spec!r} is not linear: it has no kernel")
    weight, bias = fold_linear(model)
    true = filt.kernel.to(torch.float64).cpu()
    if weight.shape[:2] != true.shape[:2]:
        raise ValueError(
            f"kernel_error: the model maps {weight.shape[1]} -> {weight.shape[0]} channels but "
            f"filter {filt.spec!r} maps {true.shape[1]} -> {true.shape[0]}"
        )
    (mh, mw), (fh, fw) = weight.shape[-2:], true.shape[-2:]
    if (mh - fh) % 2 or (mw - fw) % 2:
        raise ValueError(
            f"kernel_error: kernels of sizes {(mh, mw)} and {(fh, fw)} cannot be centred on "
            "each other (their sides differ by an odd number)"
        )
    height, width = max(mh, fh), max(mw, fw)
    difference = _centre_pad(weight, height, width) - _centre_pad(true, height, width)
    norm = float(torch.linalg.vector_norm(true))
    frobenius = float(torch.linalg.vector_norm(difference))
    return {
        "max_abs": float(difference.abs().max()),
        "relative": frobenius / norm if norm > 0 else (0.0 if frobenius == 0 else math.inf),
        "bias_max_abs": float(bias.abs().max()),
        "model_kernel_size": (mh, mw),
        "filter_kernel_size": (fh, fw),
        "compared_size": (height, width),
    }


# -- lbfgs_refine --------------------------------------------------------------------------------


def lbfgs_refine(
    model: nn.Module,
    dataset: Any,
    *,
    steps: int = 50,
    batch_size: int = 256,
    max_images: int | None = 1024,
    device: DeviceLike = "cpu",
    history_size: int = 20,
) -> nn.Module:
    """Polish a model with full-batch L-BFGS on the mean squared error.

    Meant for linear models trained by gradient descent, whose loss is a convex
    quadratic that L-BFGS (with a strong-Wolfe line search) drives to its
    minimum in a few dozen steps. The objective is the MSE over every pixel of
    the first ``max_images`` photos, held on ``device`` and evaluated in chunks
    of ``batch_size``. The model is evaluated in eval mode (a deterministic
    objective) and its mode is restored afterwards.

    Args:
        model: The model; it is moved to ``device`` and updated in place.
        dataset: As for :func:`fit_linear`.
        steps: Maximum L-BFGS iterations.
        batch_size: Photos per chunk of the full-batch objective.
        max_images: Photos in the objective (``None``: all; they are held in memory).
        device: Where the model and photos live.
        history_size: L-BFGS memory.

    Returns:
        The same model, with ``model.refine_report``: ``loss_before``, ``loss_after``,
        ``iterations``, ``images``, ``seconds``.

    Raises:
        ValueError: For bad ``steps``, ``batch_size``, ``max_images`` or ``history_size``,
            or an empty dataset.
    """
    started = time.perf_counter()
    steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    history_size = _check_int("history_size", history_size, 1)
    if max_images is not None:
        max_images = _check_int("max_images", max_images, 1)
    if len(dataset) == 0:
        raise ValueError("dataset is empty: lbfgs_refine needs at least one photo")
    device = resolve_device(device)
    chunks = list(_iter_batches(dataset, batch_size, device, max_images))
    images = sum(x.shape[0] for x, _ in chunks)
    elements = sum(y.numel() for _, y in chunks)
    model.to(device)
    was_training = model.training
    model.eval()
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        model.train(was_training)
        raise ValueError(f"lbfgs_refine: {type(model).__name__} has no trainable parameter")
    optimizer = torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=steps,
        history_size=history_size,
        tolerance_grad=1e-12,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = 0.0
        for x, y in chunks:
            loss = F.mse_loss(model(x), y, reduction="sum") / elements
            loss.backward()
            total += float(loss.detach())
        return torch.tensor(total)

    try:
        with torch.no_grad():
            before = sum(float(F.mse_loss(model(x), y, reduction="sum")) for x, y in chunks)
        optimizer.step(closure)
        with torch.no_grad():
            after = sum(float(F.mse_loss(model(x), y, reduction="sum")) for x, y in chunks)
    finally:
        model.train(was_training)
    state = optimizer.state[parameters[0]]
    model.refine_report = {
        "loss_before": before / elements,
        "loss_after": after / elements,
        "iterations": int(state.get("n_iter", 0)),
        "images": images,
        "seconds": time.perf_counter() - started,
    }
    return model

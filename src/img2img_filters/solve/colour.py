"""The least-squares fit of a colour lookup table (``lut3d``) to pairs of photos.

A :class:`~img2img_filters.models.ColourLUT`'s output is linear in its parameters: each
pixel reads two points of each input channel's curve and the eight corners of
its cell of the 3D table, with interpolation weights fixed by its colour. The
best table is then the solution of a sparse linear least-squares problem, whose
normal equations (one row and column per parameter) are accumulated in float64
over the photos and solved once: every output channel in one solve.

A small penalty on the second differences of consecutive points (curves and
table axes) fills the points no pixel reaches by extending their neighbours
linearly (colours absent from the photos get a smooth continuation), and a
tiny ridge picks one of the equivalent splits between the curves and the
table (a constant, for instance, can sit in either).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from img2img_filters.devices import DeviceLike, resolve_device
from img2img_filters.models import ColourLUT, create_img2img_model
from img2img_filters.models.pointwise import MAX_LUT_SIZE, lut_weights
from img2img_filters.solve.batches import (
    accumulation_device,
    check_dataset,
    check_int,
    iter_batches,
)

__all__ = ["fit_lut"]

#: Pixels whose pairs of weights are scattered into the normal matrix at once.
_PIXEL_BLOCK = 2**15
#: Ridge on every parameter, relative to the mean diagonal of the normal matrix.
_RIDGE = 1e-9
#: The largest number of parameters per output channel (a dense float64 normal matrix).
_MAX_UNKNOWNS = 12_000


def _second_differences(curve_size: int, channels: int, size: int) -> torch.Tensor:
    """Triples of consecutive parameters ``(3, M)``: along each curve and each table axis."""
    triples = []
    for c in range(channels):
        first = torch.arange(curve_size - 2) + c * curve_size
        triples.append(torch.stack([first, first + 1, first + 2]))
    if size > 2:
        grid = torch.arange(size**3).reshape(size, size, size) + channels * curve_size
        for axis in range(3):
            triples.append(
                torch.stack([grid.narrow(axis, k, size - 2).flatten() for k in range(3)])
            )
    return torch.cat(triples, dim=1) if triples else torch.zeros(3, 0, dtype=torch.int64)


def _add_smoothness(matrix: torch.Tensor, curve_size: int, size: int, weight: float) -> None:
    """Add ``weight * mean((a - 2 b + c)**2)`` over the triples to the normal matrix, in place."""
    triples = _second_differences(curve_size, 3, size).to(matrix.device)
    if triples.shape[1] == 0:
        return
    scale = weight / triples.shape[1]
    stencil = (1.0, -2.0, 1.0)
    for i in range(3):
        for j in range(3):
            values = torch.full(
                (triples.shape[1],),
                scale * stencil[i] * stencil[j],
                dtype=matrix.dtype,
                device=matrix.device,
            )
            matrix.index_put_((triples[i], triples[j]), values, accumulate=True)


def _merge_8bit_colours(
    pixels: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pixels of one 8-bit colour merged into one weighted row (the same least squares).

    Args:
        pixels: ``(3, N)`` float64.
        targets: ``(C, N)`` float64.

    Returns:
        ``(colours (3, U), target sums (C, U), counts (U,))`` when every value is a
        multiple of 1/255 in [0, 1]; else the pixels and targets as given and ``None``.
    """
    codes = pixels * 255.0
    rounded = codes.round()
    if (
        pixels.numel() == 0
        or float((codes - rounded).abs().max()) > 1e-4  # float32 holds u / 255 to ~2e-5
        or float(rounded.min()) < 0
        or float(rounded.max()) > 255
    ):
        return pixels, targets, None
    key = ((rounded[0] * 256 + rounded[1]) * 256 + rounded[2]).long()
    unique, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    sums = torch.zeros(targets.shape[0], len(unique), dtype=targets.dtype, device=targets.device)
    sums.index_add_(1, inverse, targets)
    colours = torch.stack([unique // 65536, unique // 256 % 256, unique % 256]).double() / 255.0
    return colours, sums, counts.double()


def _accumulate(
    gram: torch.Tensor,
    cross: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    curve_size: int,
    size: int,
) -> None:
    """Add the pixels of one batch to ``gram`` ``(P, P)`` and ``cross`` ``(P, C_out)``."""
    unknowns = gram.shape[0]
    pixels = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    targets = y.transpose(0, 1).reshape(y.shape[1], -1).double()
    pixels, targets, counts = _merge_8bit_colours(pixels, targets)
    flat_gram = gram.view(-1)
    for first in range(0, pixels.shape[1], _PIXEL_BLOCK):
        block = pixels[:, first : first + _PIXEL_BLOCK]
        index, weights = lut_weights(block, curve_size, size)  # (J, n)
        pair_index = (index[:, None, :] * unknowns + index[None, :, :]).flatten()
        pair_weight = weights[:, None, :] * weights[None, :, :]
        if counts is not None:  # a merged colour stands for count pixels
            pair_weight = pair_weight * counts[first : first + _PIXEL_BLOCK]
        flat_gram.index_add_(0, pair_index, pair_weight.flatten())
        target = targets[:, first : first + _PIXEL_BLOCK]  # (C_out, n): sums when merged
        contribution = weights[:, :, None] * target.T[None]  # (J, n, C_out)
        cross.index_add_(0, index.flatten(), contribution.reshape(-1, target.shape[0]))


def _solve_table(
    gram: torch.Tensor,
    cross: torch.Tensor,
    sum_yy: torch.Tensor,
    pixels: int,
    smoothness: float,
    curve_size: int,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the table's normal equations (smoothed, with a tiny ridge).

    Returns:
        The unknowns ``theta`` ``(unknowns, C)`` and the mean squared residual per
        output channel ``(C,)`` on the fitted pixels.
    """
    data_gram = gram / pixels
    rhs = cross / pixels
    matrix = data_gram.clone()
    if smoothness:
        _add_smoothness(matrix, curve_size, size, float(smoothness))
    scale = float(matrix.diagonal().mean())
    matrix.diagonal().add_(_RIDGE * max(scale, 1e-300))
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        theta = torch.cholesky_solve(rhs, factor)
    else:  # not positive definite in floating point: the least-squares solution all the same
        theta = torch.linalg.lstsq(matrix.cpu(), rhs.cpu(), driver="gelsd").solution
        theta = theta.to(matrix.device)
    energy = sum_yy / pixels
    residual = energy - 2 * (theta * rhs).sum(0) + (theta * (data_gram @ theta)).sum(0)
    return theta, residual.clamp_min(0.0)


# Over 80 lines for its docstring and its argument checks; the solve is _solve_table.
def fit_lut(
    dataset: Any,
    *,
    size: int = 17,
    curve_size: int = 256,
    smoothness: float = 1e-4,
    batch_size: int = 64,
    max_images: int | None = None,
    device: DeviceLike = "cpu",
) -> ColourLUT:
    """Fit a ``lut3d`` model to a dataset by linear least squares.

    Minimises ``mean((model(x) - y)**2) + smoothness * mean_d(d**2) + ridge``,
    ``d`` running over the second differences ``a - 2 b + c`` of three consecutive
    points of a curve or along an axis of the table (each channel of the target independently), in float64.

    Args:
        dataset: A ``FilteredDataset`` (anything with ``batch(positions, device)``
            and ``len``), or a ``Dataset`` of ``(input (3, H, W), target (C, H, W))`` pairs.
        size: Points per axis of the 3D table (0: curves only; 2 to 65, and
            ``3 * curve_size + size**3`` at most 12,000).
        curve_size: Points of each per-channel curve (256: exact at every 8-bit input).
        smoothness: Non-negative weight of the penalty on second differences,
            relative to the data term.
        batch_size: Photos per batch.
        max_images: Use only the first ``max_images`` photos.
        device: Where batches are made and the sums accumulated.

    Returns:
        A ``"lut3d"`` model (:class:`~img2img_filters.models.ColourLUT`) on the CPU, with
        ``model.fit_report``: ``pixels``, ``images``, ``unknowns`` (per output
        channel), ``residual_rms`` and ``residual_rms_per_channel`` (on the fitted
        pixels, smoothing included), ``target_rms``, ``size``, ``curve_size``,
        ``smoothness``, ``seconds``.

    Raises:
        TypeError: If an argument has the wrong type or the dataset gives no pairs.
        ValueError: For a bad size, smoothness, batch size or ``max_images``, an
            empty dataset, inputs that are not 3 channels, or non-finite values.
    """
    started = time.perf_counter()
    size = check_int("size", size, 0)
    curve_size = check_int("curve_size", curve_size, 2)
    batch_size = check_int("batch_size", batch_size, 1)
    if max_images is not None:
        max_images = check_int("max_images", max_images, 1)
    if size == 1 or size > MAX_LUT_SIZE:
        raise ValueError(f"size must be 0 (no table) or 2 to {MAX_LUT_SIZE}; got {size!r}")
    unknowns = 3 * curve_size + size**3
    if unknowns > _MAX_UNKNOWNS:
        raise ValueError(
            f"fit_lut: 3 * curve_size + size**3 must be at most {_MAX_UNKNOWNS} (a dense normal "
            f"matrix); got {unknowns} for size={size}, curve_size={curve_size}"
        )
    if isinstance(smoothness, bool) or not isinstance(smoothness, (int, float)):
        raise TypeError(f"smoothness must be a non-negative number; got {smoothness!r}")
    if not math.isfinite(smoothness) or smoothness < 0:
        raise ValueError(f"smoothness must be a non-negative finite number; got {smoothness!r}")
    check_dataset(dataset, "fit_lut")
    device = resolve_device(device)
    accumulate_on = accumulation_device(device)
    gram = torch.zeros(unknowns, unknowns, dtype=torch.float64, device=accumulate_on)
    cross: torch.Tensor | None = None
    sum_yy: torch.Tensor | None = None
    pixels = images = 0
    for inputs, targets in iter_batches(dataset, batch_size, device, max_images):
        if inputs.shape[1] != 3:
            raise ValueError(f"fit_lut: inputs must have 3 channels; got {inputs.shape[1]}")
        if cross is None:
            cross = torch.zeros(unknowns, targets.shape[1], dtype=torch.float64, device=gram.device)
            sum_yy = torch.zeros(targets.shape[1], dtype=torch.float64, device=gram.device)
        elif targets.shape[1] != cross.shape[1]:
            raise ValueError(
                f"dataset: every target must have {cross.shape[1]} channels; got {targets.shape[1]}"
            )
        x, y = inputs.to(accumulate_on), targets.to(accumulate_on)
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            raise ValueError("fit_lut: the inputs or targets contain NaN or infinite values")
        _accumulate(gram, cross, x, y, curve_size, size)
        sum_yy += y.double().square().sum(dim=(0, 2, 3))
        pixels += y.shape[0] * y.shape[2] * y.shape[3]
        images += y.shape[0]
    if cross is None or sum_yy is None or pixels == 0:
        raise ValueError("fit_lut: the dataset gave no pixel to fit")
    theta, residual = _solve_table(gram, cross, sum_yy, pixels, smoothness, curve_size, size)
    energy = sum_yy / pixels
    model = create_img2img_model(3, cross.shape[1], "lut3d", size=size, curve_size=curve_size)
    model.set_parameter_vector(theta.T.float().cpu())
    model.fit_report = {
        "pixels": pixels,
        "images": images,
        "unknowns": unknowns,
        "residual_rms": math.sqrt(float(residual.mean())),
        "residual_rms_per_channel": [math.sqrt(float(v)) for v in residual],
        "target_rms": math.sqrt(float(energy.mean())),
        "size": size,
        "curve_size": curve_size,
        "smoothness": float(smoothness),
        "seconds": time.perf_counter() - started,
    }
    return model
